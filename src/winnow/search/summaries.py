"""Compressed item text: a query-independent extractive summary of each passage, made offline.

A cross-encoder's cost grows with the tokens of every ``(query, passage)`` pair, and the
passage is most of them. Because the summary does not depend on the query it is computed once
per corpus, stored beside the passage, and served in its place, so a request pays only for the
shorter text.

Method, per passage longer than ``max_tokens``:

1. split it into sentences (after ``.``, ``!`` or ``?`` followed by white space, and at line
   breaks); a run of more than :data:`WINDOW_WORDS` words without such a break (a list of
   keywords, a run-on sentence) is cut into windows of that many words;
2. score each sentence by its centrality: the cosine between its TF-IDF vector and the mean of
   the passage's sentence vectors, with the IDF fit on the sentences of all ``texts`` (so words
   common across the corpus count little);
3. take sentences from the most central down, keeping each one the summary still fits
   ``max_tokens`` with, and join the kept ones in their original order;
4. if not even the most central sentence fits, it is cut at the last word boundary that fits.

>>> summarize(["Volcanoes erupt lava. Lava is molten rock. I like pasta."], max_tokens=8)
['Volcanoes erupt lava. Lava is molten rock.']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from numbers import Integral

import numpy as np

from winnow.common.extras import require
from winnow.search.exceptions import SearchInputError

__all__ = ["WINDOW_WORDS", "split_sentences", "summarize", "word_count"]

WINDOW_WORDS = 30
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\s*\n\s*")


def word_count(text: str) -> int:
    """Number of white-space separated words: the default token count of :func:`summarize`."""
    return len(text.split())


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` in order, none longer than :data:`WINDOW_WORDS` words."""
    pieces = []
    for sentence in _SENTENCE_BREAK.split(text):
        words = sentence.split()
        pieces += [
            " ".join(words[start : start + WINDOW_WORDS])
            for start in range(0, len(words), WINDOW_WORDS)
        ]
    return pieces


def summarize(
    texts: Sequence[str], max_tokens: int, count_tokens: Callable[[str], int] | None = None
) -> list[str]:
    """The extractive summary of each text within ``max_tokens`` (see the module doc).

    Args:
        texts: ``n`` passages. They are also the corpus the IDF is fit on, so pass the whole
            collection at once rather than one passage at a time.
        max_tokens: the budget per summary, an int >= 1.
        count_tokens: ``text -> token count``; :func:`word_count` when ``None``. Pass the
            ranker's word-piece count to budget what the model will see.

    Returns ``n`` strings, each with ``count_tokens(summary) <= max_tokens``; a text already
    within the budget is returned unchanged. Deterministic.
    """
    texts = _check_texts(texts)
    if not isinstance(max_tokens, Integral) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise SearchInputError(
            f"max_tokens must be an int >= 1 (tokens per summary); got {max_tokens!r}"
        )
    count = word_count if count_tokens is None else count_tokens
    sentences = [split_sentences(text) for text in texts]
    centrality = _centrality(sentences)
    return [
        text if count(text) <= max_tokens else _extract(parts, scores, max_tokens, count)
        for text, parts, scores in zip(texts, sentences, centrality, strict=True)
    ]


def _centrality(sentences: list[list[str]]) -> list[np.ndarray]:
    """Per text, ``[s]`` float cosine of each sentence's TF-IDF vector to the text's centroid."""
    feature_extraction = require("sklearn.feature_extraction.text", "search")
    flat = [sentence for parts in sentences for sentence in parts]
    vectorizer = feature_extraction.TfidfVectorizer(stop_words="english", sublinear_tf=True)
    try:
        vectors = vectorizer.fit_transform(flat)
    except ValueError:  # no word in any sentence (empty or stop-word-only corpus): no signal
        return [np.zeros(len(parts)) for parts in sentences]
    scores, start = [], 0
    for parts in sentences:
        rows = vectors[start : start + len(parts)]
        start += len(parts)
        centroid = np.asarray(rows.mean(axis=0)).ravel() if len(parts) else np.zeros(0)
        norm = np.linalg.norm(centroid)
        scores.append(rows @ centroid / norm if norm > 0 else np.zeros(len(parts)))
    return scores


def _extract(
    sentences: list[str], scores: np.ndarray, max_tokens: int, count: Callable[[str], int]
) -> str:
    """Most central sentences that fit, in text order; else the best one cut to fit."""
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for index in ranked:
        trial = sorted([*kept, index])
        if count(" ".join(sentences[i] for i in trial)) <= max_tokens:
            kept = trial
    if kept:
        return " ".join(sentences[i] for i in kept)
    return _truncate(sentences[ranked[0]], max_tokens, count)


def _truncate(sentence: str, max_tokens: int, count: Callable[[str], int]) -> str:
    """The longest word prefix of ``sentence`` within ``max_tokens`` (binary search)."""
    words = sentence.split()
    low, high = 0, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if count(" ".join(words[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise SearchInputError(
            "texts must be a sequence of strings, not one string; wrap it: [text]"
        )
    texts = list(texts)
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise SearchInputError(
            f"texts[{bad}] must be a string; got {type(texts[bad]).__name__} (pass passage texts)"
        )
    return texts
