"""Embedding cache (keying, atomic files, hits) and the MiniLM encoder on a few texts."""

import json

import numpy as np
import pytest

from winnow.search.embed import (
    MINILM_ID,
    EmbeddingCache,
    Encoder,
    TextEncoder,
    content_key,
    encode_cached,
)
from winnow.search.exceptions import SearchInputError


class CountingEncoder:
    """Deterministic fake: a text's vector is seeded by its length and first character."""

    cache_id = "fake-encoder"

    def __init__(self):
        self.calls = 0

    def encode(self, texts, quiet=False):
        self.calls += 1
        rows = [
            np.random.default_rng([len(t), ord(t[0]) if t else 0]).normal(size=8) for t in texts
        ]
        rows = np.asarray(rows, dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_fake_matches_protocol():
    assert isinstance(CountingEncoder(), TextEncoder)
    assert isinstance(Encoder(), TextEncoder)


def test_cache_hit_skips_encoding_and_returns_same_vectors(tmp_path):
    encoder = CountingEncoder()
    texts = ["alpha", "beta gamma", "delta"]
    first = encode_cached(encoder, texts, tmp_path)
    second = encode_cached(encoder, texts, tmp_path)
    assert encoder.calls == 1
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and first.shape == (3, 8)
    key = content_key(encoder.cache_id, texts)
    meta = json.loads((tmp_path / f"{key}.json").read_text())
    assert meta == {"key": key, "cache_id": "fake-encoder", "n": 3, "dim": 8}
    assert not list(tmp_path.glob(".*.tmp"))


def test_key_depends_on_model_texts_and_order():
    base = content_key("m", ["a", "b"])
    assert base == content_key("m", ["a", "b"])
    assert base != content_key("other", ["a", "b"])
    assert base != content_key("m", ["b", "a"])
    assert base != content_key("m", ["ab"])  # texts are hashed one by one, not concatenated


def test_corrupt_entry_is_a_miss_and_gets_rewritten(tmp_path):
    encoder = CountingEncoder()
    encode_cached(encoder, ["x"], tmp_path)
    key = content_key(encoder.cache_id, ["x"])
    (tmp_path / f"{key}.npy").write_bytes(b"garbage")
    assert EmbeddingCache(tmp_path).load(key) is None
    encode_cached(encoder, ["x"], tmp_path)
    assert encoder.calls == 2
    assert EmbeddingCache(tmp_path).load(key) is not None


def test_no_cache_dir_always_encodes(tmp_path):
    encoder = CountingEncoder()
    encode_cached(encoder, ["x"], None)
    encode_cached(encoder, ["x"], None)
    assert encoder.calls == 2


def test_bad_inputs():
    with pytest.raises(SearchInputError, match="not one string"):
        encode_cached(CountingEncoder(), "one string", None)
    with pytest.raises(SearchInputError, match="empty"):
        encode_cached(CountingEncoder(), [], None)
    with pytest.raises(SearchInputError, match="batch_size"):
        Encoder(batch_size=0)


def test_minilm_embeddings_are_normalised_and_semantic(tmp_path):
    encoder = Encoder(batch_size=2)
    assert encoder.cache_id == MINILM_ID
    texts = ["a kitten is a young cat", "a small cat", "stock markets fell sharply today"]
    vectors = encode_cached(encoder, texts, tmp_path, quiet=True)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    np.testing.assert_allclose(encoder.encode(texts[:1], quiet=True), vectors[:1], atol=1e-5)


def test_an_encoder_is_rebuilt_from_its_cache_id():
    for encoder in (Encoder(), Encoder("some/model", max_seq_length=64)):
        again = Encoder.from_cache_id(encoder.cache_id)
        assert (again.model, again.max_seq_length, again.cache_id) == (
            encoder.model,
            encoder.max_seq_length,
            encoder.cache_id,
        )
    with pytest.raises(SearchInputError, match="is malformed"):
        Encoder.from_cache_id("some/model@max_seq_length=abc")
