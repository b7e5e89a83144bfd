"""Generated queries: extractive and LLM generators (tiny random Llama), cleaning, the on-disk
cache, round-trip and near-duplicate filters, hard negatives, JSONL, and the CLI on a slice."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.search.conftest import char_tokenizer, tiny_causal_lm
from winnow.cli import app
from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.search.config import SearchConfig
from winnow.search.exceptions import DatasetFormatError, SearchInputError
from winnow.search.query_filters import (
    GeneratedQuery,
    exclude_sources,
    hard_negatives,
    near_duplicates,
    read_generated,
    round_trip_keep,
    token_jaccard,
    write_generated,
)
from winnow.search.querygen import (
    ExtractiveQueryGenerator,
    GenerationCache,
    LLMQueryGenerator,
    clean_query,
    normalise_query,
)

CORPUS = [
    "The Eiffel Tower is 330 metres tall and stands in Paris, France.",
    "Symptoms of influenza include fever, cough and a sore throat.",
    "Stock markets fell sharply today as investors sold technology shares.",
    "A kitten is a young cat; kittens sleep most of the day.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:\n{% endif %}"
)


def test_extractive_queries_are_deterministic_passage_words_in_order():
    generator = ExtractiveQueryGenerator(min_words=3, max_words=5, random_state=0).fit(CORPUS)
    first = generator.generate(CORPUS, per_passage=3)
    assert first == generator.generate(CORPUS, per_passage=3)
    assert generator.generate(CORPUS[::-1], per_passage=3) == first[::-1]
    for passage, queries in zip(CORPUS, first, strict=True):
        assert 1 <= len(queries) <= 3 and len(set(queries)) == len(queries)
        words = normalise_query(passage).split()
        for query in queries:
            terms = query.split()
            assert 3 <= len(terms) <= 5 and set(terms) <= set(words)
            positions = [words.index(term) for term in terms]
            assert positions == sorted(positions)
            assert not {"the", "and", "is", "a"} & set(terms)
    other = ExtractiveQueryGenerator(3, 5, random_state=1).fit(CORPUS).generate(CORPUS, 3)
    assert other != first


def test_extractive_skips_short_passages_and_checks_its_arguments():
    generator = ExtractiveQueryGenerator(min_words=3).fit(CORPUS)
    assert generator.generate(["the cat", ""]) == [[], []]
    with pytest.raises(SearchInputError, match="max_words"):
        ExtractiveQueryGenerator(min_words=4, max_words=3)
    with pytest.raises(SearchInputError, match="not fitted"):
        ExtractiveQueryGenerator().generate(CORPUS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('Query: "How tall is the Eiffel tower?"\nmore text', "How tall is the Eiffel tower"),
        ("  search query - flu symptoms.<|im_end|>", "flu symptoms"),
        ("'kitten sleep hours'!!", "kitten sleep hours"),
        ("", None),
        ("\nthe tower", None),
        ("tower", None),
        (" ".join(f"w{i}" for i in range(13)), None),
        ("The Eiffel Tower is 330 metres", None),
        ("why eiffel tower is 330 metres tall and stands", None),
        ("paris paris paris paris paris tower", None),
    ],
)
def test_clean_query(raw, expected):
    assert clean_query(raw, CORPUS[0]) == expected


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def tiny_llama(tokenizer):
    return tiny_causal_lm("llama", len(tokenizer), seed=1)


def counting(model):
    """Wrap ``model.generate`` so that tests see how many batches it ran."""
    calls = []
    original = model.generate

    def generate(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    model.generate = generate
    return calls


def test_llm_generation_is_cleaned_cached_and_left_padded(tmp_path, tokenizer, tiny_llama):
    passages = ["the cat sat on the mat.", "dogs chase cats in the park, every day.", "sun"]
    settings = {"model_id": "tiny", "max_new_tokens": 10, "min_words": 1, "batch_size": 2}
    generator = LLMQueryGenerator(
        tiny_llama, tokenizer, cache_path=tmp_path / "gen.jsonl", **settings
    )
    calls = counting(tiny_llama)
    try:
        raw = generator.generate_raw(passages, quiet=True)
        assert calls == [2, 1]
        cleaned = generator.generate(passages, quiet=True)
        assert calls == [2, 1], "the second call must come from the cache"
        assert generator.generate([*passages, passages[0]], quiet=True)[-1] == cleaned[0]
        assert calls == [2, 1]
        alone = LLMQueryGenerator(tiny_llama, tokenizer, cache_path=None, **settings)
        assert [alone.generate_raw([p], quiet=True)[0] for p in passages] == raw
        assert calls == [2, 1, 1, 1, 1]
    finally:
        del tiny_llama.generate
    assert all(len(outputs) == 1 and isinstance(outputs[0], str) for outputs in raw)
    for passage, outputs, kept in zip(passages, raw, cleaned, strict=True):
        expected = clean_query(outputs[0], passage, min_words=1)
        assert kept == ([] if expected is None else [expected])
        assert all("\n" not in query and query == query.strip() for query in kept)
    assert len(GenerationCache(tmp_path / "gen.jsonl").load()) == 3
    other = LLMQueryGenerator(
        tiny_llama,
        tokenizer,
        cache_path=tmp_path / "gen.jsonl",
        **{**settings, "max_new_tokens": 6},
    )
    assert other.cache_key(passages[0], 1) != generator.cache_key(passages[0], 1)


def test_llm_sampling_per_passage_and_seed(tokenizer, tiny_llama):
    settings = {"cache_path": None, "max_new_tokens": 8, "do_sample": True, "seed": 3}
    generator = LLMQueryGenerator(tiny_llama, tokenizer, **settings)
    first = generator.generate_raw(["the cat sat", "a dog ran far"], per_passage=3, quiet=True)
    assert [len(outputs) for outputs in first] == [3, 3]
    again = LLMQueryGenerator(tiny_llama, tokenizer, **settings)
    assert again.generate_raw(["the cat sat", "a dog ran far"], 3, quiet=True) == first
    with pytest.raises(SearchInputError, match="do_sample"):
        LLMQueryGenerator(tiny_llama, tokenizer, cache_path=None).generate_raw(["x"], 2)


def test_llm_prompt_uses_the_chat_template_with_examples(tmp_path, tiny_llama):
    chat = char_tokenizer()
    chat.chat_template = CHAT_TEMPLATE
    tiny_llama.save_pretrained(tmp_path / "model")
    chat.save_pretrained(tmp_path / "model")
    generator = LLMQueryGenerator.from_pretrained(
        tmp_path / "model", cache_path=None, examples=[("cats purr.", "why do cats purr")]
    )
    prompt = generator.prompt("the sun is a star.")
    assert prompt.startswith("user:\n") and prompt.endswith("assistant:\n")
    assert prompt.index("why do cats purr") < prompt.index("the sun is a star.")
    assert generator.model_id == str(tmp_path / "model")
    assert len(generator.generate(["the sun is a star."], quiet=True)) == 1
    plain = LLMQueryGenerator(tiny_llama, char_tokenizer(), cache_path=None, examples=())
    assert plain.prompt("x y") == plain.template.format(passage="x y") + "\n"


class FakeRetriever:
    """Ranks a fixed list of ids for each query text."""

    def __init__(self, rankings):
        self.rankings = rankings

    def search(self, queries, k):
        ids = np.array([(self.rankings[q] + [""] * k)[:k] for q in queries])
        return ids, np.zeros(ids.shape, dtype=np.float32)


def test_round_trip_keeps_exactly_queries_whose_source_is_in_the_top_k():
    retriever = FakeRetriever({"a": ["d1", "d2", "d3"], "b": ["d3", "d1", "d2"], "c": ["d2"]})
    keep = round_trip_keep(retriever, ["a", "b", "c"], ["d2", "d2", "d1"], k=2)
    assert keep.tolist() == [True, False, False]
    assert round_trip_keep(retriever, ["a", "b", "c"], ["d2", "d2", "d1"], k=3).tolist() == [
        True,
        True,
        False,
    ]


def test_near_duplicates_catch_copies_and_keep_unrelated_queries():
    judged = ["what is the daily life of thai people", "how long is the life cycle of a flea"]
    queries = [
        "what is the daily life of thai people",
        "How long is the LIFE-CYCLE of a flea?",
        "how long is the life cycle of flea",
        "photosynthesis in desert plants",
        "flea lifespan",
    ]
    judged_vectors = np.eye(4)[:2]
    query_vectors = np.array(
        [np.eye(4)[0], np.eye(4)[1], np.eye(4)[2], np.eye(4)[3], [0, 0.95, 0.3122, 0]]
    )
    check = near_duplicates(queries, judged, query_vectors, judged_vectors, 0.9, 0.8)
    assert check.reason == ["exact", "exact", "jaccard", "", "cosine"]
    assert check.duplicate.tolist() == [True, True, True, False, True]
    assert check.closest.tolist() == [0, 1, 1, 0, 1]
    assert check.counts() == {"exact": 2, "cosine": 1, "jaccard": 1}
    pairs = check.closest_pairs(queries, judged, top=2)
    assert [p["generated"] for p in pairs] == queries[:2] and pairs[0]["judged"] == judged[0]
    assert token_jaccard("A b", "b, a!") == 1.0 and token_jaccard("", "") == 0.0


def test_hard_negatives_never_hold_the_source_and_take_n_per_ranking():
    bm25 = np.array([["s1", "x", "y", "z"], ["a", "b", "", ""]])
    dense = np.array([["x", "s1", "w", "v"], ["s2", "a", "c", "b"]])
    negatives = hard_negatives(["s1", "s2"], [bm25, dense], n=2)
    assert negatives == [("x", "y", "w", "v"), ("a", "b", "c")]
    assert all(s not in n for s, n in zip(["s1", "s2"], negatives, strict=True))


def test_exclude_sources_and_jsonl_round_trip(tmp_path):
    queries = [
        GeneratedQuery("g1", "flu symptoms", "d1", "llm", ("d2", "d3")),
        GeneratedQuery("g2", "eiffel tower height", "d2", "extractive"),
    ]
    assert exclude_sources(queries, {"d1"}) == queries[1:]
    assert exclude_sources(queries, []) == queries
    path = write_generated(tmp_path / "q.jsonl", queries)
    assert read_generated(path) == queries
    path.write_text(path.read_text() + '{"query_id": "g3", "text": 1}\n')
    with pytest.raises(DatasetFormatError, match=r"q\.jsonl:3"):
        read_generated(path)


def test_config_block_is_validated_before_anything_loads():
    config = load_config(SearchConfig)
    assert config.train.generated.method == "extractive"
    assert config.train.generated.round_trip_k == 20
    with pytest.raises(ConfigError, match=r"generated\.extractive_words"):
        load_config(SearchConfig, overrides=["train.generated.extractive_words=[4, 3]"])
    with pytest.raises(ConfigError, match="do_sample"):
        load_config(
            SearchConfig,
            overrides=[
                "train.generated.method=llm",
                "train.generated.per_passage=2",
            ],
        )


def test_gen_queries_command_on_a_slice(tmp_path):
    out = tmp_path / "generated.jsonl"
    flags = [
        "--set",
        "data.max_passages=60",
        "--set",
        f"encoder.cache_dir={tmp_path / 'cache'}",
        "--set",
        "train.generated.max_passages=30",
        "--set",
        "train.generated.negatives=2",
    ]
    result = CliRunner().invoke(app, ["search", "gen-queries", "--out", str(out), "-q", *flags])
    assert result.exit_code == 0, result.output
    assert "30 passages" in result.output
    queries = read_generated(out)
    summary = json.loads((tmp_path / "generated.summary.json").read_text())
    assert summary["passages"] == 30 and summary["kept"] == len(queries) > 0
    assert summary["kept"] == summary["kept_round_trip"] - summary["dropped_near_duplicate"]
    assert summary["closest_pairs"] and summary["config"]["train"]["generated"]["seed"] == 0
    for query in queries:
        assert query.method == "extractive" and query.source_doc_id not in query.negatives
        assert 0 < len(query.negatives) <= 4


def test_generation_cache_reads_a_broken_file_as_empty(tmp_path):
    cache = GenerationCache(tmp_path / "gen.jsonl")
    assert cache.load() == {}
    entries = {}
    cache.update(entries, {"k1": ["a query"]})
    assert GenerationCache(tmp_path / "gen.jsonl").load() == {"k1": ["a query"]}
    (tmp_path / "gen.jsonl").write_text('{"key": "k1", "generations": ["a"]}\nnot json\n')
    assert cache.load() == {}


def test_gen_queries_command_with_a_tiny_llm(tmp_path, tiny_llama):
    chat = char_tokenizer()
    chat.chat_template = CHAT_TEMPLATE
    tiny_llama.save_pretrained(tmp_path / "model")
    chat.save_pretrained(tmp_path / "model")
    out = tmp_path / "llm.jsonl"
    settings = {
        "data.max_passages": 40,
        "encoder.cache_dir": tmp_path / "cache",
        "train.generated.method": "llm",
        "train.generated.model": tmp_path / "model",
        "train.generated.max_passages": 4,
        "train.generated.max_new_tokens": 8,
        "train.generated.query_words": "[1, 12]",
        "train.generated.cache": tmp_path / "gen.jsonl",
    }
    flags = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(app, ["search", "gen-queries", "--out", str(out), "-q", *flags])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "llm.summary.json").read_text())
    assert summary["method"] == "llm" and summary["asked"] == 4
    assert summary["kept"] == len(read_generated(out)) <= summary["generated"] <= 4
    assert len(GenerationCache(tmp_path / "gen.jsonl").load()) == 4
