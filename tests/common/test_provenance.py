"""Tests of winnow.common.provenance: the manifest, --overwrite, permissions, parent checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import winnow
from winnow.common.exceptions import ModelFolderExistsError, ProvenanceError
from winnow.common.provenance import (
    MANIFEST_FILE,
    Provenance,
    check_parents,
    content_sha256,
    manifest_sha256,
    read_manifest,
    save_model_folder,
)
from winnow.common.runs import RunDir


def write_weights(text: str):
    def write(folder: Path) -> None:
        (folder / "weights.txt").write_text(text)

    return write


def save(folder: Path, text: str = "w", parents=(), overwrite: bool = False, run=None) -> Path:
    provenance = Provenance(config={"lr": 0.1}, run=run, data=[text], parents=parents)
    return save_model_folder(folder, write_weights(text), provenance, overwrite)


def test_content_hash_ignores_key_order_and_sees_values():
    assert content_sha256({"a": 1, "b": [1, 2]}) == content_sha256({"b": [1, 2], "a": 1})
    assert content_sha256({"a": 1}) != content_sha256({"a": 2})


def test_the_manifest_names_the_run_hashes_and_parents(tmp_path):
    run = RunDir("make", root=tmp_path / "runs", seed=0)
    teacher = save(tmp_path / "models" / "teacher", "t", parents=["org/base-model"], run=run)
    student = save(tmp_path / "models" / "student", "s", parents=[teacher], run=run)
    manifest = read_manifest(student)
    assert (student / "weights.txt").read_text() == "s"
    assert manifest["winnow_version"] == winnow.__version__ and manifest["created"]
    assert manifest["run"] == {"name": "make", "folder": str(run.path.resolve())}
    assert manifest["config_sha256"] == content_sha256({"lr": 0.1})
    assert manifest["data_sha256"] == content_sha256(["s"])
    (parent,) = manifest["parents"]
    assert parent == {
        "path": str(teacher.resolve()),
        "relative_path": os.path.join("..", "teacher"),
        "manifest_sha256": manifest_sha256(teacher),
    }
    hub = read_manifest(teacher)["parents"]
    assert hub == [{"path": "org/base-model", "relative_path": None, "manifest_sha256": None}]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["student", "teacher"]


def test_saving_over_a_folder_needs_overwrite(tmp_path):
    folder = save(tmp_path / "model", "first")
    with pytest.raises(ModelFolderExistsError, match=r"model already exists; pass --overwrite"):
        save(folder, "second")
    assert (folder / "weights.txt").read_text() == "first"
    save(folder, "second", overwrite=True)
    assert (folder / "weights.txt").read_text() == "second"
    before = manifest_sha256(folder)
    save(folder, "second", overwrite=True)  # the same model again, within the same second
    assert manifest_sha256(folder) != before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing left aside


def test_a_failed_write_keeps_the_previous_model_and_leaves_no_trace(tmp_path):
    folder = save(tmp_path / "model", "first")

    def fail(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_model_folder(folder, fail, Provenance(config={}), overwrite=True)
    assert (folder / "weights.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o027, 0o750)])
def test_model_folders_follow_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        folder = save(tmp_path / "models" / "m")
    finally:
        os.umask(before)
    assert stat.S_IMODE(folder.stat().st_mode) == mode
    assert stat.S_IMODE(folder.parent.stat().st_mode) == mode


def test_a_parent_replaced_since_is_refused_and_one_gone_passes(tmp_path):
    teacher = save(tmp_path / "teacher", "t1")
    student = save(tmp_path / "student", "s", parents=[teacher])
    check_parents(student, fix="retrain")
    save(teacher, "t2", overwrite=True)
    with pytest.raises(ProvenanceError) as caught:
        check_parents(student, fix="train the pair again")
    message = str(caught.value)
    assert str(student) in message and str(teacher.resolve()) in message
    assert message.endswith("train the pair again")
    check_parents(student, fix="", only=[tmp_path / "elsewhere"])  # not the teacher in use
    (teacher / MANIFEST_FILE).unlink()
    with pytest.raises(ProvenanceError, match=r"manifest none"):
        check_parents(student, fix="")
    for child in teacher.iterdir():
        child.unlink()
    teacher.rmdir()
    check_parents(student, fix="")


def test_a_damaged_manifest_is_named(tmp_path):
    folder = save(tmp_path / "m")
    (folder / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ProvenanceError, match=rf"{MANIFEST_FILE} is not valid JSON"):
        read_manifest(folder)
    (folder / MANIFEST_FILE).write_text(json.dumps([1]))
    with pytest.raises(ProvenanceError, match="holds a JSON list, not an object"):
        check_parents(folder, fix="")
    assert read_manifest(tmp_path) is None and manifest_sha256(tmp_path) is None
