"""Extractive summaries: budget, order, centrality, determinism, edge cases, errors."""

import pytest

from winnow.search.exceptions import SearchInputError
from winnow.search.summaries import WINDOW_WORDS, split_sentences, summarize, word_count

VOLCANO = (
    "Volcanoes erupt when magma rises through the crust. "
    "I once cooked pasta with basil for my aunt. "
    "Magma that reaches the surface is called lava. "
    "Lava from volcanoes cools into basalt rock."
)
CORPUS = [
    VOLCANO,
    "Glaciers carve valleys. Ice sheets advance and retreat with the climate.",
    "Stock markets fell today. Investors sold shares of banks and airlines.",
    "Cats sleep most of the day. A kitten is a young cat!",
    "no punctuation at all " * 20,
]


def test_text_within_budget_is_returned_unchanged():
    text = "Short  text,   odd spacing kept."
    assert summarize([text], max_tokens=5) == [text]


@pytest.mark.parametrize("budget", [1, 3, 8, 12, 20])
def test_every_summary_fits_the_budget(budget):
    for summary in summarize(CORPUS, budget):
        assert word_count(summary) <= budget


def test_a_custom_token_count_is_respected():
    def characters(text: str) -> int:
        return len(text)

    for summary in summarize(CORPUS, 60, characters):
        assert len(summary) <= 60


def test_sentence_order_is_preserved_and_sentences_are_whole():
    summary = summarize(CORPUS, 20)[0]
    sentences = split_sentences(VOLCANO)
    kept = [sentence for sentence in sentences if sentence in summary]
    assert " ".join(kept) == summary
    positions = [VOLCANO.index(sentence) for sentence in kept]
    assert positions == sorted(positions) and len(kept) >= 2


def test_central_sentence_is_preferred_over_an_off_topic_one():
    summary = summarize(CORPUS, 20)[0]
    assert "pasta" not in summary
    assert "lava" in summary.lower()


def test_summaries_are_deterministic():
    assert summarize(CORPUS, 9) == summarize(list(CORPUS), 9)


def test_overlong_best_sentence_is_cut_at_a_word_boundary():
    (summary,) = summarize(["one two three four five six seven eight"], 3)
    assert summary == "one two three"


def test_text_without_punctuation_is_split_into_word_windows():
    text = " ".join(f"w{i}" for i in range(2 * WINDOW_WORDS + 5))
    pieces = split_sentences(text)
    assert [len(piece.split()) for piece in pieces] == [WINDOW_WORDS, WINDOW_WORDS, 5]
    summary = summarize([text], WINDOW_WORDS + 5)[0]
    assert word_count(summary) <= WINDOW_WORDS + 5 and summary.startswith("w")


def test_empty_and_stop_word_only_texts_are_handled():
    assert summarize([""], 4) == [""]
    assert summarize(["", "the and of a the"], 2) == ["", "the and"]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8", None])
def test_bad_max_tokens_is_named(bad):
    with pytest.raises(SearchInputError, match="max_tokens"):
        summarize(CORPUS, bad)


def test_one_string_instead_of_a_list_is_refused():
    with pytest.raises(SearchInputError, match="texts"):
        summarize("a single passage", 4)
    with pytest.raises(SearchInputError, match=r"texts\[1\]"):
        summarize(["ok", 3], 4)
