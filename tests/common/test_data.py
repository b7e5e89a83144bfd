import hashlib

import pytest

from winnow.common import data
from winnow.common.exceptions import ChecksumError, DataNotFoundError


def make_dataset(root, name="toy", content=b"a,b\n1,2\n"):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "table.csv").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    (folder / "SHA256SUMS").write_text(f"{digest}  table.csv\n")
    return folder


def test_env_var_root_is_used(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.data_roots() == [tmp_path]
    assert data.dataset_path("toy") == folder


def test_missing_dataset_names_paths_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        data.dataset_path("absent")
    message = str(info.value)
    assert str(tmp_path / "absent") in message
    assert data.ENV_VAR in message
    assert isinstance(info.value, FileNotFoundError)


def test_corrupted_file_fails_checksum(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.verify_checksums(folder).ok
    (folder / "table.csv").write_bytes(b"a,b\n1,3\n")
    with pytest.raises(ChecksumError, match=r"changed: table\.csv"):
        data.dataset_path("toy")
    assert data.dataset_path("toy", verify=False) == folder


def test_missing_listed_file_fails_checksum(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path)
    (folder / "table.csv").unlink()
    report = data.verify_checksums(folder)
    assert report.missing == ("table.csv",) and not report.ok
    assert "FAILED" in report.status and report.verdict == "failed"


def test_folder_without_sums_is_accepted(tmp_path, monkeypatch):
    (tmp_path / "plain").mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.dataset_path("plain").name == "plain"
    report = data.verify_checksums(tmp_path / "plain")
    assert report.ok and report.verdict == "unverified"
    assert report.status == "unverified (no SHA256SUMS)"


def test_default_root_is_shared_data_beside_repo(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    roots = data.data_roots()
    assert roots[0].parts[-2:] == ("shared", "data")


def test_shipped_datasets_are_intact(monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    reports = {report.folder.name: report for report in data.list_datasets()}
    if not reports:
        pytest.skip("../shared/data is not beside this checkout")
    for name in ("routing", "search", "ridesourcing"):
        assert reports[name].ok, reports[name].status
        assert reports[name].listed > 0


def test_data_file_resolves_dataset_relative_and_plain_paths(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.data_file("toy/table.csv") == folder / "table.csv"
    assert data.data_file(folder / "table.csv") == folder / "table.csv"
    with pytest.raises(DataNotFoundError, match="not a file of data set 'toy'"):
        data.data_file("toy/other.csv")
    for missing in ("nothing-here.csv", tmp_path / "x.csv", "./x.csv", "elsewhere/x.csv"):
        with pytest.raises(DataNotFoundError, match=r"no such file .* fix: give the path"):
            data.data_file(missing)
    # a shipped data set that is missing here says where it was looked for
    with pytest.raises(DataNotFoundError, match="data set 'routing' not found; searched"):
        data.data_file("routing/routerbench_subset/part-0.csv")


def test_find_dataset_takes_the_first_root_that_has_it(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    assert data.find_dataset("toy") == folder
    assert data.find_dataset("absent") is None
    assert data.verify_checksums(folder).verdict == "ok"
