"""Start-up failures of the search server: each corrupt, missing or mismatched file stops it with
one line naming the file and the fix (SavedArtifactError, or ProvenanceError for a student beside
teachers of another run), and the command exits 2 without a traceback."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from tests.search.server_helpers import DOCS, build_tiny_index, save_untrained_teacher
from winnow.cli import app as cli_app
from winnow.common.provenance import Provenance, save_model_folder
from winnow.search.cross_encoder import TEACHER_FILE
from winnow.search.exceptions import SavedArtifactError, SearchInputError
from winnow.search.ranker import STUDENT_FILE
from winnow.search.reranking import load_ranker
from winnow.search.server_loading import cached_summaries, read_manifest
from winnow.search.server_service import SearchService

REBUILD = "rebuild the index with `winnow search index"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny index and its BEIR folder, never changed: tests damage copies."""
    return build_tiny_index(tmp_path_factory.mktemp("search-loading"))


@pytest.fixture
def index_dir(built, tmp_path):
    """A copy of the index whose manifest points at a copy of the BEIR folder."""
    shutil.copytree(built.parent / "beir", tmp_path / "beir")
    folder = shutil.copytree(built, tmp_path / "index")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["dataset"] = str(tmp_path / "beir")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_untrained_teacher(tmp_path_factory.mktemp("search-loading-models") / "teacher")


def edit_manifest(folder, change):
    path = folder / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def one_line_error(call) -> str:
    with pytest.raises(SavedArtifactError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, SearchInputError)
    return message


# -- the index folder --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (
            lambda f: (f / "manifest.json").write_text("{not json"),
            "manifest.json is not valid JSON (Expecting property name",
        ),
        (
            lambda f: (f / "manifest.json").write_bytes(b"\xff\xfe"),
            "manifest.json is not valid JSON",
        ),
        (lambda f: (f / "manifest.json").write_text("[1, 2]"), "holds a JSON list, not an object"),
        (
            lambda f: edit_manifest(f, lambda m: {k: v for k, v in m.items() if k != "encoder"}),
            "manifest.json lacks ['encoder']",
        ),
        (lambda f: edit_manifest(f, lambda m: {**m, "index": "ivf"}), "index 'ivf' is not one of"),
    ],
)
def test_a_bad_manifest_is_named(index_dir, damage, words):
    damage(index_dir)
    message = one_line_error(lambda: read_manifest(index_dir))
    assert words in message and REBUILD in message


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (
            lambda f: (f / "index.faiss").write_bytes((f / "index.faiss").read_bytes()[:1000]),
            "index.faiss is not a readable FAISS index, truncated or corrupt (",
        ),
        (
            lambda f: (f / "index.faiss").write_bytes(b"hello world"),
            "index.faiss is not a readable FAISS index",
        ),
        (lambda f: (f / "index.faiss").write_bytes(b""), "index.faiss is not a readable FAISS"),
        (
            lambda f: (f / "doc_ids.json").write_text('["d1", "d2"'),
            "doc_ids.json is not valid JSON",
        ),
        (
            lambda f: (f / "doc_ids.json").write_text('{"d1": 1}'),
            "doc_ids.json must hold a JSON list of id strings",
        ),
        (
            lambda f: (f / "doc_ids.json").write_text(json.dumps(list(DOCS)[:4])),
            "index.faiss holds 5 vectors, doc_ids.json 4 ids",
        ),
        (
            lambda f: edit_manifest(f, lambda m: {**m, "encoder": "x@max_seq_length=abc"}),
            "encoder 'x@max_seq_length=abc' does not load (encoder id",
        ),
    ],
)
def test_a_corrupt_or_mismatched_index_file_is_named(index_dir, damage, words):
    damage(index_dir)
    message = one_line_error(lambda: SearchService.from_index(index_dir))
    assert words in message and REBUILD in message


def test_passages_missing_from_the_collection_are_named(index_dir):
    corpus = index_dir.parent / "beir" / "corpus.jsonl"
    kept = [line for line in corpus.read_text().splitlines() if '"d5"' not in line]
    corpus.write_text("\n".join(kept) + "\n")
    message = one_line_error(lambda: SearchService.from_index(index_dir))
    assert "indexes ids missing from" in message and "['d5']" in message and REBUILD in message


def test_a_collection_that_is_gone_is_named(index_dir):
    shutil.rmtree(index_dir.parent / "beir")
    message = one_line_error(lambda: SearchService.from_index(index_dir))
    assert "manifest.json names collection" in message and "which does not load" in message


def test_a_corrupt_summary_cache_is_made_again(tmp_path):
    (tmp_path / "summaries-8.json").write_text("{corrupt")
    passages = {"d1": "one sentence here. another one there.", "d2": "short"}
    made = cached_summaries(tmp_path, passages, 8, lambda text: len(text.split()))
    assert made.keys() == passages.keys()
    assert json.loads((tmp_path / "summaries-8.json").read_text()) == made


# -- the reranker folder -----------------------------------------------------------------------


def test_a_folder_of_several_models_lists_them(tmp_path):
    for name in ("student_both", "relevance_teacher", "engagement_teacher"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "plots").mkdir()
    message = one_line_error(lambda: load_ranker(tmp_path))
    assert (
        f"{tmp_path} holds several models: engagement_teacher, relevance_teacher, "
        "student_both; pass one of them" in message
    )


def test_a_folder_of_one_model_names_it(tmp_path):
    (tmp_path / "student_both").mkdir()
    (tmp_path / "student_both" / "winnow_student.json").write_text("{}")
    message = one_line_error(lambda: load_ranker(tmp_path))
    assert f"holds one model, student_both; pass {tmp_path / 'student_both'}" in message


def test_a_folder_without_a_model_says_so(tmp_path):
    message = one_line_error(lambda: load_ranker(tmp_path))
    assert "is not a model folder (no config.json)" in message


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda f: (f / "config.json").write_text("{broken"), "config.json is not valid JSON"),
        (lambda f: (f / "config.json").write_text("[]"), "config.json holds a JSON list"),
        (
            lambda f: (f / "winnow_teacher.json").write_text("[1,"),
            "winnow_teacher.json is not valid JSON",
        ),
        (
            lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 100),
            "does not load (SafetensorError",
        ),
        (lambda f: (f / "model.safetensors").unlink(), "does not load (OSError"),
        (lambda f: (f / "config.json").write_text("{}"), "does not load (ValueError"),
    ],
)
def test_a_damaged_model_folder_is_named(teacher_dir, tmp_path, damage, words):
    folder = shutil.copytree(teacher_dir, tmp_path / "teacher")
    damage(folder)
    message = one_line_error(lambda: load_ranker(folder))
    assert words in message and str(folder) in message


# -- the command -------------------------------------------------------------------------------


def serve_output(*args) -> str:
    result = CliRunner().invoke(cli_app, ["search", "serve", *map(str, args)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    return " ".join(result.output.split())  # rich wraps long lines


def test_the_command_exits_2_with_one_line_for_a_corrupt_index(index_dir):
    (index_dir / "index.faiss").write_bytes(b"hello world")
    output = serve_output("--index-dir", index_dir)
    assert output.startswith("error:") and "is not a readable FAISS index" in output


def test_the_command_exits_2_naming_the_models_of_a_parent_folder(index_dir, tmp_path):
    for name in ("relevance_teacher", "student_both"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text("{}")
    output = serve_output("--index-dir", index_dir, "--reranker", tmp_path / "models")
    assert "holds several models: relevance_teacher, student_both; pass one of them" in output


def test_serve_refuses_a_student_beside_teachers_of_another_run(index_dir, tmp_path):
    def fake(record: str):
        def write(folder):
            (folder / "config.json").write_text("{}")
            (folder / record).write_text("{}")

        return write

    models = tmp_path / "models"
    teacher = save_model_folder(
        models / "relevance_teacher", fake(TEACHER_FILE), Provenance(config={"run": 1})
    )
    student = save_model_folder(
        models / "student_both", fake(STUDENT_FILE), Provenance({"run": 1}, parents=[teacher])
    )
    save_model_folder(teacher, fake(TEACHER_FILE), Provenance({"run": 2}), overwrite=True)
    output = serve_output("--index-dir", index_dir, "--reranker", student)
    assert "error:" in output and "now holds another model" in output
    assert "winnow search train --overwrite" in output
