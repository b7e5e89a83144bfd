"""What the search-server tests share: a five-passage BEIR folder indexed with the real MiniLM,
deterministic fake rerankers and a saved (untrained) cross-encoder."""

import json
import threading
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from winnow.search.config import SearchConfig
from winnow.search.jobs import build_index
from winnow.search.server import create_app
from winnow.search.server_requests import ServerLimits
from winnow.search.server_service import SearchService

DOCS = {
    "d1": "Cats the cat sat on the mat",
    "d2": "dogs chase cats in the park",
    "d3": "stock markets fell sharply today",
    "d4": "a kitten is a young cat",
    "d5": "the volcano erupted and lava reached the sea",
}


def build_tiny_index(root: Path) -> Path:
    """Index DOCS (a BEIR folder under ``root``) with MiniLM; the index folder."""
    (root / "beir" / "qrels").mkdir(parents=True)
    corpus = "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in DOCS.items())
    (root / "beir" / "corpus.jsonl").write_text(corpus)
    (root / "beir" / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "cat"}) + "\n")
    (root / "beir" / "qrels" / "test.tsv").write_text("q1\td1\t3\n")
    config = SearchConfig.model_validate(
        {
            "data": {"name": str(root / "beir")},
            "encoder": {"cache_dir": str(root / "cache")},
            "index_dir": str(root / "index"),
        }
    )
    return build_index(config, quiet=True)


def save_untrained_teacher(path: Path) -> Path:
    """A MiniLM cross-encoder with a fresh head, saved as a teacher folder at ``path``."""
    from winnow.search.cross_encoder import CrossEncoderTeacher, load_cross_encoder

    teacher = CrossEncoderTeacher(max_length=32, quiet=True)
    teacher.model_ = load_cross_encoder(teacher.model_location(), 32, "cpu")
    teacher.history_ = []
    return teacher.save(path)


def with_reranker(service: SearchService, reranker, **kwargs) -> SearchService:
    return SearchService(service.retriever, service.passages, reranker, **kwargs)


def client_of(service: SearchService, api_key: str | None = None, **limits) -> TestClient:
    app = create_app(service, ServerLimits(**limits), api_key=api_key)
    return TestClient(app, raise_server_exceptions=False)


class WordOverlap:
    """Scores a doc by how many distinct query words it contains; records what it read."""

    def __init__(self):
        self.seen: list[list[str]] = []

    def score(self, query, docs):
        self.seen.append(list(docs))
        words = set(query.lower().split())
        return np.array([len(words & set(doc.lower().split())) for doc in docs], dtype=float)


class Gated:
    """Scores like WordOverlap once ``release`` is set; ``started`` tells that it is waiting."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()

    def score(self, query, docs):
        self.started.set()
        self.release.wait(timeout=30)
        return WordOverlap().score(query, docs)
