"""POST /v1/rerank (Cohere / Jina shape) and the API key of /search and /v1/rerank."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.search.server_helpers import (
    DOCS,
    WordOverlap,
    build_tiny_index,
    client_of,
    with_reranker,
)
from winnow.cli import app as cli_app
from winnow.search.exceptions import SearchInputError
from winnow.search.server import is_loopback, serve
from winnow.search.server_service import SearchService, cosine_relevance, logit_relevance

TEXTS = list(DOCS.values())
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return build_tiny_index(tmp_path_factory.mktemp("search-rerank"))


@pytest.fixture(scope="module")
def service(index_dir):
    return SearchService.from_index(index_dir)


@pytest.fixture(scope="module")
def reranked(service):
    return with_reranker(service, WordOverlap())


def rerank(service, body, **limits):
    return client_of(service, **limits).post("/v1/rerank", json=body)


# -- scores ------------------------------------------------------------------------------------


def test_logit_relevance_is_the_sigmoid_without_overflow():
    scores = np.array([-1000.0, -2.0, 0.0, 3.0, 1000.0])
    np.testing.assert_allclose(
        logit_relevance(scores), [0, 1 / (1 + np.e**2), 0.5, 1 / (1 + np.e**-3), 1]
    )


def test_cosine_relevance_maps_minus_one_to_one_onto_zero_to_one():
    query = np.array([1.0, 0.0])
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0 + 1e-7, 0.0]])
    np.testing.assert_allclose(cosine_relevance(query, docs), [1.0, 0.5, 0.0, 1.0])


# -- the endpoint ------------------------------------------------------------------------------


def test_rerank_sorts_by_the_rerankers_sigmoid_and_indices_map_back(reranked):
    query = "dogs chase cats in the park"
    reply = rerank(reranked, {"query": query, "documents": TEXTS})
    assert reply.status_code == 200
    body = reply.json()
    raw = WordOverlap().score(query, TEXTS)
    order = np.argsort(-raw, kind="stable")
    assert [r["index"] for r in body["results"]] == order.tolist()
    np.testing.assert_allclose(
        [r["relevance_score"] for r in body["results"]], 1 / (1 + np.exp(-raw[order]))
    )
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    assert body["model"] == "WordOverlap"
    assert body["usage"] == {
        "documents": 5,
        "characters": len(query) + sum(len(text) for text in TEXTS),
    }


def test_without_a_reranker_the_score_is_the_mapped_dense_cosine(service):
    query = "what is a kitten"
    body = rerank(service, {"query": query, "documents": TEXTS, "model": "my-model"}).json()
    vectors = service.retriever.encoder.encode([query, *TEXTS])
    expected = (vectors[1:] @ vectors[0] + 1) / 2
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([scores[i] for i in range(5)], expected, atol=1e-6)
    ranked = [r["relevance_score"] for r in body["results"]]
    assert ranked == sorted(ranked, reverse=True)
    assert all(0 <= score <= 1 for score in ranked)
    assert TEXTS[body["results"][0]["index"]] == DOCS["d4"]
    assert body["model"] == "my-model"


def test_strings_and_text_objects_both_work_and_extra_fields_are_ignored(reranked):
    documents = [TEXTS[0], {"text": TEXTS[1], "title": "ignored"}, {"text": TEXTS[2]}]
    as_strings = rerank(reranked, {"query": "cats park", "documents": TEXTS[:3]}).json()
    mixed = rerank(reranked, {"query": "cats park", "documents": documents}).json()
    assert mixed["results"] == as_strings["results"]


def test_top_n_cuts_and_is_clipped_to_the_documents(reranked):
    def results(top_n):
        body = {"query": "the cat", "documents": TEXTS, "top_n": top_n}
        return rerank(reranked, body).json()["results"]

    everything = results(None)
    assert results(2) == everything[:2]
    assert results(100) == everything


def test_return_documents_adds_each_text(reranked):
    documents = [TEXTS[0], {"text": TEXTS[1]}]
    body = {"query": "cats", "documents": documents, "return_documents": True}
    results = rerank(reranked, body).json()["results"]
    assert {r["index"]: r["document"] for r in results} == {
        0: {"text": TEXTS[0]},
        1: {"text": TEXTS[1]},
    }


@pytest.mark.parametrize(
    ("body", "limits", "field", "words"),
    [
        ({"query": "cat", "documents": []}, {}, "documents", "documents: empty"),
        (
            {"query": "cat", "documents": ["x"] * 1200},
            {"max_documents": 1000},
            "documents",
            "documents: 1,200 documents; at most 1,000 per request",
        ),
        (
            {"query": "cat", "documents": ["abcd", {"text": "efgh"}]},
            {"max_document_chars": 7},
            "documents",
            "documents: 8 characters in all; at most 7 per request",
        ),
        (
            {"query": "x" * 30, "documents": ["a"]},
            {"max_query_chars": 20},
            "query",
            "query: 30 characters; at most 20",
        ),
        ({"query": "  ", "documents": ["a"]}, {}, "query", "query: blank"),
        ({"documents": ["a"]}, {}, "query", "Field required"),
        ({"query": "cat"}, {}, "documents", "Field required"),
        ({"query": "cat", "documents": "a"}, {}, "documents", "valid list"),
        ({"query": "cat", "documents": ["a"], "top_n": 0}, {}, "top_n", "greater than or equal"),
        ({"query": "cat", "documents": ["a"], "top_n": -3}, {}, "top_n", "greater than or equal"),
        ({"query": 7, "documents": ["a"]}, {}, "query", "valid string"),
    ],
)
def test_each_violation_gets_a_422_naming_its_field(service, body, limits, field, words):
    reply = rerank(service, body, **limits)
    assert reply.status_code == 422
    errors = reply.json()["detail"]
    assert any(e["loc"] == ["body", field] and words in e["msg"] for e in errors), errors


def test_a_document_that_is_neither_text_nor_object_is_named(service):
    reply = rerank(service, {"query": "cat", "documents": ["a", 5]})
    assert reply.status_code == 422
    assert all(e["loc"][:3] == ["body", "documents", 1] for e in reply.json()["detail"])


def test_an_oversized_or_unsized_body_is_refused_before_parsing(service):
    client = client_of(service, max_documents=2, max_document_chars=10, max_query_chars=10)
    huge = client.post("/v1/rerank", json={"query": "cat", "documents": ["x" * 100_000]})
    assert huge.status_code == 413
    assert "at most 2, 10 characters in all" in huge.json()["detail"]
    chunked = client.post(
        "/v1/rerank", content=iter([b'{"query": "cat", ', b'"documents": ["a"]}'])
    )
    assert chunked.status_code == 411


def test_rerank_from_python_matches_the_endpoint(reranked):
    results = reranked.rerank("the cat sat", TEXTS, top_n=3)
    body = rerank(reranked, {"query": "the cat sat", "documents": TEXTS, "top_n": 3}).json()
    assert results == body["results"]


# -- the API key -------------------------------------------------------------------------------


def test_without_a_key_configured_everything_is_open(service):
    client = client_of(service)
    assert client.get("/search", params={"q": "cat"}).status_code == 200
    assert client.post("/v1/rerank", json={"query": "cat", "documents": ["a"]}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({}, "Bearer"),
        ({"Authorization": "Bearer wrong"}, 'Bearer error="invalid_token"'),
        ({"Authorization": f"Basic {KEY}"}, "Bearer"),
        ({"Authorization": KEY}, "Bearer"),
    ],
)
def test_a_missing_or_wrong_key_is_a_401_with_a_bearer_challenge(service, headers, challenge):
    client = client_of(service, api_key=KEY)
    replies = [
        client.get("/search", params={"q": "cat"}, headers=headers),
        client.post("/v1/rerank", json={"query": "cat", "documents": ["a"]}, headers=headers),
        client.post("/v1/rerank", json={"query": "cat"}, headers=headers),  # invalid too
    ]
    for reply in replies:
        assert reply.status_code == 401
        assert reply.headers["WWW-Authenticate"] == challenge
        assert "key" in reply.json()["detail"]


def test_the_right_key_opens_search_and_rerank_and_health_needs_none(service):
    client = client_of(service, api_key=KEY)
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/search", params={"q": "cat"}, headers=auth).status_code == 200
    body = {"query": "cat", "documents": ["a"]}
    assert client.post("/v1/rerank", json=body, headers=auth).status_code == 200
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_serve_refuses_a_public_host_without_a_key(service, monkeypatch):
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append(kw))
    with pytest.raises(SearchInputError, match=r"'0\.0\.0\.0' accepts connections from other"):
        serve(service, host="0.0.0.0")
    serve(service, host="0.0.0.0", api_key=KEY, num_threads=None)
    assert runs[0]["host"] == "0.0.0.0"


def test_the_command_refuses_a_public_host_without_a_key_before_loading(tmp_path, monkeypatch):
    monkeypatch.delenv("WINNOW_API_KEY", raising=False)
    args = ["search", "serve", "--index-dir", str(tmp_path / "absent"), "--host", "0.0.0.0"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 2
    output = " ".join(result.output.split())
    assert "$WINNOW_API_KEY is unset or empty; export WINNOW_API_KEY=" in output
    assert "--host 127.0.0.1" in output and "search index" not in output
    assert "Traceback" not in result.output


def test_the_command_reads_the_key_from_the_named_variable(index_dir, monkeypatch):
    import faiss
    import torch
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append((app, kw)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda n: None)
    args = ["search", "serve", "--index-dir", str(index_dir), "--host", "0.0.0.0"]
    result = CliRunner().invoke(
        cli_app, [*args, "--api-key-env", "MY_SEARCH_KEY"], env={"MY_SEARCH_KEY": KEY}
    )
    assert result.exit_code == 0, result.output
    ((app, settings),) = runs
    assert settings["host"] == "0.0.0.0"
    assert app.state.limits.max_documents == 1000
    client = TestClient(app)
    assert client.get("/search", params={"q": "cat"}).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/search", params={"q": "cat"}, headers=auth).status_code == 200
