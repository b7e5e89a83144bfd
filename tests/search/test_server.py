"""The search API: a real MiniLM index of five passages, served through FastAPI's TestClient.

The index is built once per module; rerankers are small deterministic scorers, plus one real
cross-encoder saved and loaded from a folder. No server is started: ``serve`` is checked with
``uvicorn.run`` replaced.
"""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.search.server_helpers import (
    DOCS,
    WordOverlap,
    build_tiny_index,
    client_of,
    save_untrained_teacher,
    with_reranker,
)
from winnow.cli import app as cli_app
from winnow.common.embeddings import MINILM_ID
from winnow.search import server, server_loading, server_queue, server_requests, server_service
from winnow.search.exceptions import SearchInputError
from winnow.search.reranking import load_ranker
from winnow.search.server import create_app
from winnow.search.server_requests import ServerLimits
from winnow.search.server_service import SearchService

MAX_K, MAX_QUERY_CHARS = 20, 64


class Broken:
    def score(self, query, docs):
        raise RuntimeError("the model fell over")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("search-server"))


@pytest.fixture(scope="module")
def service(index_dir):
    return SearchService.from_index(index_dir)


def limited_client(service) -> TestClient:
    return client_of(service, max_query_chars=MAX_QUERY_CHARS, max_k=MAX_K)


@pytest.fixture(scope="module")
def client(service):
    return limited_client(service)


# -- the API ----------------------------------------------------------------------------------


def test_health_reports_what_is_loaded(client):
    reply = client.get("/health")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "ok",
        "passages": 5,
        "encoder": MINILM_ID,
        "reranker": None,
        "rerank_depth": None,
    }


def test_search_returns_k_ranked_hits_with_timings(client):
    reply = client.get("/search", params={"q": "where did the cat sit", "k": 3})
    assert reply.status_code == 200
    body = reply.json()
    assert body["query"] == "where did the cat sit"
    hits = body["hits"]
    assert [hit["rank"] for hit in hits] == [1, 2, 3]
    scores = [hit["retrieval_score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(hit["rerank_score"] is None and hit["text"] == DOCS[hit["doc_id"]] for hit in hits)
    timings = body["timings_ms"]
    assert set(timings) == {"embed", "retrieve", "rerank", "total"}
    assert min(timings.values()) >= 0
    assert timings["total"] + 0.01 >= timings["embed"] + timings["retrieve"] + timings["rerank"]


def test_retrieval_is_real_the_top_hit_is_about_cats(client):
    hits = client.get("/search", params={"q": "what is a kitten", "k": 5}).json()["hits"]
    assert hits[0]["doc_id"] == "d4"
    assert hits[-1]["doc_id"] in {"d3", "d5"}


def test_k_beyond_the_corpus_returns_every_passage_once(client):
    hits = client.get("/search", params={"q": "cat", "k": MAX_K}).json()["hits"]
    assert sorted(hit["doc_id"] for hit in hits) == sorted(DOCS)
    assert len(client.get("/search", params={"q": "cat"}).json()["hits"]) == 5  # default k 10


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({}, "q", "Field required"),
        ({"q": ""}, "q", "at least 1 character"),
        ({"q": "   "}, "q", "blank"),
        ({"q": "x" * (MAX_QUERY_CHARS + 1)}, "q", f"at most {MAX_QUERY_CHARS} characters"),
        ({"q": "cat", "k": 0}, "k", "greater than or equal to 1"),
        ({"q": "cat", "k": -1}, "k", "greater than or equal to 1"),
        ({"q": "cat", "k": MAX_K + 1}, "k", f"less than or equal to {MAX_K}"),
        ({"q": "cat", "k": "abc"}, "k", "valid integer"),
        ({"q": "cat", "k": 1.5}, "k", "valid integer"),
    ],
)
def test_bad_parameters_get_a_422_naming_them(client, params, field, words):
    reply = client.get("/search", params=params)
    assert reply.status_code == 422
    (error,) = reply.json()["detail"]
    assert error["loc"] == ["query", field]
    assert words in error["msg"]


def test_an_overlong_query_string_is_refused_before_parsing(client):
    reply = client.get("/search", params={"q": "é" * (4 * MAX_QUERY_CHARS)})
    assert reply.status_code == 414
    assert f"q holds at most {MAX_QUERY_CHARS} characters" in reply.json()["detail"]
    encoded = client.get("/search", params={"q": "é" * MAX_QUERY_CHARS})  # 6 bytes a char
    assert encoded.status_code == 200


def test_unknown_routes_and_methods_are_4xx(client):
    assert client.get("/nothing").status_code == 404
    assert client.post("/search", params={"q": "cat"}).status_code == 405


def test_an_internal_failure_is_a_short_json_500(service):
    reply = limited_client(with_reranker(service, Broken())).get("/search", params={"q": "cat"})
    assert reply.status_code == 500
    assert reply.json() == {
        "detail": "internal error while answering; the server log has the cause"
    }
    assert "fell over" not in reply.text


# -- reranking --------------------------------------------------------------------------------


def test_the_reranker_reorders_the_dense_hits(service):
    query = "dogs chase cats in the park"
    dense = service.search(query, k=5)["hits"]
    reranker = WordOverlap()
    reranked = with_reranker(service, reranker, rerank_depth=5).search(query, k=5)["hits"]
    expected = reranker.score(query, [DOCS[hit["doc_id"]] for hit in dense])
    order = np.argsort(-expected, kind="stable")
    assert [hit["doc_id"] for hit in reranked] == [dense[i]["doc_id"] for i in order]
    assert [hit["rerank_score"] for hit in reranked] == expected[order].tolist()
    assert [hit["doc_id"] for hit in reranked] != [hit["doc_id"] for hit in dense]
    assert all(type(hit["doc_id"]) is str for hit in reranked)


def test_only_the_top_rerank_depth_hits_are_reranked(service):
    query = "the cat and the volcano"
    dense = [hit["doc_id"] for hit in service.search(query, k=5)["hits"]]
    reranker = WordOverlap()
    hits = with_reranker(service, reranker, rerank_depth=2).search(query, k=4)["hits"]
    assert len(reranker.seen[0]) == 2
    assert sorted(hit["doc_id"] for hit in hits[:2]) == sorted(dense[:2])
    assert [hit["doc_id"] for hit in hits[2:]] == dense[2:4]
    assert [hit["rerank_score"] is None for hit in hits] == [False, False, True, True]


def test_the_reranker_reads_rerank_texts_and_clients_get_passages(service):
    reranker = WordOverlap()
    summaries = {"d3": "cat cat cat summary"}
    ranked = with_reranker(service, reranker, rerank_depth=5, rerank_texts=summaries)
    hits = ranked.search("cat summary", k=5)["hits"]
    assert "cat cat cat summary" in reranker.seen[0]
    assert hits[0]["doc_id"] == "d3" and hits[0]["text"] == DOCS["d3"]


def test_health_names_the_reranker(service):
    body = (
        limited_client(with_reranker(service, WordOverlap(), rerank_depth=7)).get("/health").json()
    )
    assert body["reranker"] == "WordOverlap" and body["rerank_depth"] == 7


def test_a_saved_cross_encoder_loads_from_its_folder(index_dir, tmp_path):
    from winnow.search.cross_encoder import CrossEncoderTeacher

    teacher = CrossEncoderTeacher.load(save_untrained_teacher(tmp_path / "teacher"), quiet=True)
    loaded = SearchService.from_index(index_dir, tmp_path / "teacher", rerank_depth=3)
    hits = loaded.search("a young cat", k=3)["hits"]
    scores = [hit["rerank_score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(
        scores,
        np.sort(teacher.score("a young cat", [DOCS[h["doc_id"]] for h in hits]))[::-1],
        atol=1e-5,
    )
    assert loaded.describe()["reranker"] == "CrossEncoderTeacher"


def test_the_serving_stack_loads_int8_and_cached_summaries(index_dir, tmp_path):
    import shutil

    from winnow.search.cross_encoder import CrossEncoderTeacher
    from winnow.search.rerank_stack import quantize_int8, word_piece_counter

    teacher = CrossEncoderTeacher.load(save_untrained_teacher(tmp_path / "teacher"), quiet=True)
    folder = shutil.copytree(index_dir, tmp_path / "index")
    loaded = SearchService.from_index(
        folder, tmp_path / "teacher", rerank_depth=3, int8=True, summary_tokens=8
    )
    summaries = json.loads((folder / "summaries-8.json").read_text())
    count = word_piece_counter(teacher)
    assert summaries.keys() == DOCS.keys()
    assert all(count(text) <= 8 for text in summaries.values())
    assert loaded.rerank_texts == summaries
    hits = loaded.search("a young cat", k=3)["hits"]
    # dynamic int8 scales activations per batch: score the same three docs as one batch
    expected = quantize_int8(teacher).score("a young cat", [summaries[h["doc_id"]] for h in hits])
    np.testing.assert_allclose([h["rerank_score"] for h in hits], expected, atol=1e-5)
    written = (folder / "summaries-8.json").stat().st_mtime_ns
    SearchService.from_index(folder, tmp_path / "teacher", summary_tokens=8)
    assert (folder / "summaries-8.json").stat().st_mtime_ns == written  # reused, not remade
    with pytest.raises(SearchInputError, match="summary_tokens needs a reranker"):
        SearchService.from_index(folder, summary_tokens=8)


def test_a_folder_with_a_student_record_loads_a_student(tmp_path, monkeypatch):
    from winnow.search.ranker import STUDENT_FILE, StudentRanker

    (tmp_path / STUDENT_FILE).write_text("{}")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    calls = []
    monkeypatch.setattr(StudentRanker, "load", lambda path, **kw: calls.append(kw) or "student")
    loaded = load_ranker(tmp_path)
    assert (loaded.kind, loaded.scorer) == ("student", "student")
    assert calls == [{"num_threads": None, "device": "cpu", "quiet": True}]


# -- the service from Python ------------------------------------------------------------------


def test_long_texts_are_cut(service):
    cut = SearchService(service.retriever, service.passages, max_text_chars=10)
    texts = [hit["text"] for hit in cut.search("volcano lava", k=5)["hits"]]
    assert all(len(text) <= 10 for text in texts)
    assert DOCS["d5"][:9] + "…" in texts


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda s: s.search("   "), "query must be a non-blank string"),
        (lambda s: s.search("cat", k=0), "k must be an int >= 1"),
        (lambda s: SearchService(s.retriever, s.passages, rerank_depth=0), "rerank_depth"),
        (lambda s: SearchService(s.retriever, {}), "passages lack"),
        (lambda s: SearchService(s.retriever, s.passages, reranker=object()), ".score"),
        (lambda s: create_app(s, ServerLimits(max_k=0)), "max_k must be an int >= 1"),
        (lambda s: ServerLimits(request_timeout_s=0), "request_timeout_s must be"),
        (lambda s: create_app(s, api_key=""), "api_key must be a non-empty string"),
        (lambda s: s.rerank("cat", []), "documents must be a non-empty list"),
        (lambda s: s.rerank("cat", ["a"], top_n=0), "top_n must be an int >= 1"),
    ],
)
def test_bad_settings_fail_with_a_message(service, call, words):
    with pytest.raises(SearchInputError, match=words):
        call(service)


def test_a_missing_index_names_the_files_and_the_command(tmp_path, index_dir):
    with pytest.raises(SearchInputError, match=r"missing manifest.json, index.faiss.*search index"):
        SearchService.from_index(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text((index_dir / "manifest.json").read_text())
    with pytest.raises(SearchInputError, match=r"missing index.faiss, doc_ids.json"):
        SearchService.from_index(tmp_path)


def test_a_missing_reranker_folder_is_named(index_dir, tmp_path):
    with pytest.raises(SearchInputError, match=r"reranker folder .*absent not found"):
        SearchService.from_index(index_dir, tmp_path / "absent")


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (server, {"create_app", "is_loopback", "serve"}),
        (server_service, {"Reranker", "SearchService", "cosine_relevance", "logit_relevance"}),
        (
            server_requests,
            {
                "RerankDocument",
                "RerankRequest",
                "ServerLimits",
                "rerank_limit_errors",
                "rerank_response",
            },
        ),
        (server_queue, {"RequestQueue"}),
        (
            server_loading,
            {
                "INDEX_COMMAND",
                "INDEX_FILES",
                "MANIFEST_KEYS",
                "cached_summaries",
                "load_passages",
                "load_retriever",
                "read_manifest",
            },
        ),
    ],
)
def test_exported_names(module, names):
    assert set(module.__all__) == names
    assert all(hasattr(module, name) for name in names)


# -- the command ------------------------------------------------------------------------------


def test_serve_help_lists_its_options():
    result = CliRunner().invoke(cli_app, ["search", "serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--index-dir", "--reranker", "--rerank-depth", "--port", "--max-k", "--threads"):
        assert flag in result.output


def test_serve_builds_the_app_and_hands_it_to_uvicorn(index_dir, monkeypatch):
    import faiss
    import torch
    import uvicorn

    runs, threads = [], []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    monkeypatch.setattr(faiss, "omp_set_num_threads", threads.append)
    args = ["search", "serve", "--index-dir", str(index_dir), "--port", "8123", "--max-k", "3"]
    result = CliRunner().invoke(cli_app, [*args, "--threads", "2"])
    assert result.exit_code == 0, result.output
    ((app, settings),) = runs
    assert settings == {"host": "127.0.0.1", "port": 8123, "workers": 1, "log_level": "info"}
    assert threads == [2, 2]
    client = TestClient(app)
    assert client.get("/health").json()["passages"] == 5
    assert client.get("/search", params={"q": "cat", "k": 4}).status_code == 422  # --max-k 3


def test_serve_with_a_missing_index_exits_2_with_the_message(tmp_path):
    result = CliRunner().invoke(cli_app, ["search", "serve", "--index-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "holds no search index" in " ".join(result.output.split())  # rich wraps lines
