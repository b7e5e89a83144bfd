"""Pseudo-queries made from passages: more training pairs than the judged queries give.

Two generators answer ``generate(passages, per_passage) -> list[list[str]]`` (cleaned queries
per passage, possibly fewer than asked for):

- :class:`ExtractiveQueryGenerator`: the cheap baseline. A query is the passage's top TF-IDF
  terms (IDF over the corpus it was fitted on, English stop words left out), lower-cased and
  kept in passage order; its length is drawn between ``min_words`` and ``max_words`` by a
  generator seeded from ``random_state`` and the passage text, so a passage gets the same
  queries in any slice or order. Further queries of one passage sample terms in proportion to
  their TF-IDF.
- :class:`LLMQueryGenerator`: a causal LM (any hub id or folder, safetensors or GGUF) reads
  ``template`` through the tokenizer's chat template and writes one query, greedy or sampled,
  in left-padded batches. Raw generations are cached on disk by :class:`GenerationCache` and
  cleaned by :func:`clean_query`.

:mod:`winnow.search.query_filters` keeps the generated queries whose passage retrieval finds
again and that copy no evaluation query, adds hard negatives, and writes the query set.

With SmolLM2-135M-Instruct the few-shot turns of :data:`QUERY_EXAMPLES` matter: without them it
mostly restates the passage.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from winnow.common.causal_lm import bundled_smollm2, load_causal_lm
from winnow.common.extras import require
from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.search.datasets import jsonl_records
from winnow.search.exceptions import DatasetFormatError, SearchInputError
from winnow.search.fitting import check_int, torch_threads

__all__ = [
    "DEFAULT_GENERATION_CACHE",
    "QUERY_EXAMPLES",
    "QUERY_TEMPLATE",
    "ExtractiveQueryGenerator",
    "GenerationCache",
    "LLMQueryGenerator",
    "QueryGenerator",
    "clean_query",
    "normalise_query",
]

DEFAULT_GENERATION_CACHE = Path(".cache") / "winnow" / "search" / "querygen" / "generations.jsonl"
QUERY_TEMPLATE = "Write one short web search query that this passage answers.\n\nPassage: {passage}"
QUERY_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        "The Eiffel Tower is 330 metres tall and was the tallest man-made structure in the world "
        "until 1930, when the Chrysler Building was finished.",
        "how tall is the eiffel tower",
    ),
    (
        "Symptoms of the flu include fever, cough, sore throat, body aches and fatigue. Most "
        "people recover within two weeks.",
        "flu symptoms",
    ),
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_LABEL = re.compile(r"^\s*(?:search\s+query|web\s+search\s+query|query|q)\s*[:\-]\s*", re.I)
_STOPS = ("\n", "<|im_end|>", "<|endoftext|>", "</s>")
_QUOTES = "\"'`*“”‘’«» "
_TRAILING = ".,;:!?-–— "


@runtime_checkable
class QueryGenerator(Protocol):
    """Anything that writes queries for passages: ``method`` names it in query ids."""

    method: str

    def generate(
        self, passages: Sequence[str], per_passage: int = 1, quiet: bool = True
    ) -> list[list[str]]: ...


def normalise_query(text: str) -> str:
    """Lower-cased NFKC words of letters and digits, single-spaced: ``"What's BM25?"`` ->
    ``"what s bm25"``. Two queries equal after this differ only in case, punctuation, spacing."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w]+|_", " ", folded).split())


def clean_query(
    raw: str, passage: str, min_words: int = 2, max_words: int = 12, copy_words: int = 6
) -> str | None:
    """A generation made into a query, or ``None`` when it is not one.

    Keeps the text before the first newline or end-of-turn marker, drops a ``Query:`` style
    label, surrounding quotes and trailing punctuation, and collapses white space. Rejects (on
    normalised words, see :func:`normalise_query`): fewer than ``min_words`` or more than
    ``max_words`` words; a loop (under 60% distinct words); a copy of the passage, that is a
    query whose first ``copy_words`` words (all, when shorter) are the passage's first words,
    or that holds a run of ``copy_words`` consecutive passage words.

    >>> clean_query('Query: "How tall is the Eiffel tower?"', "The Eiffel Tower is 330 m tall.")
    'How tall is the Eiffel tower'
    """
    text = raw
    for stop in _STOPS:
        text = text.split(stop, 1)[0]
    text = _LABEL.sub("", text.strip())
    text = " ".join(text.strip(_QUOTES).rstrip(_TRAILING).strip(_QUOTES).split())
    words = normalise_query(text).split()
    if not min_words <= len(words) <= max_words or len(set(words)) < 0.6 * len(words):
        return None
    source = normalise_query(passage).split()
    head = words[:copy_words]
    if source[: len(head)] == head:
        return None
    runs = {tuple(source[i : i + copy_words]) for i in range(len(source) - copy_words + 1)}
    if any(tuple(words[i : i + copy_words]) in runs for i in range(len(words) - copy_words + 1)):
        return None
    return text


def _passage_seed(random_state: int, text: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{random_state}\0{text}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class ExtractiveQueryGenerator:
    """Queries of a passage's most distinctive words (see the module doc).

    Args:
        min_words, max_words: query length range, in words.
        random_state: seed of the length draw and of the sampled terms.

    Fitted attributes: ``idf_`` (``{word: idf}``, smoothed ``log((1 + n) / (1 + df)) + 1``),
    ``n_docs_``, ``stop_words_``.
    """

    method = "extractive"

    def __init__(self, min_words: int = 3, max_words: int = 8, random_state: int = 0):
        check_int("min_words", min_words, 1)
        check_int("max_words", max_words, min_words)
        self.min_words = min_words
        self.max_words = max_words
        self.random_state = random_state

    def fit(self, corpus: Sequence[str]) -> ExtractiveQueryGenerator:
        """Document frequencies over ``corpus`` (texts)."""
        text_module = require("sklearn.feature_extraction.text", "search")
        self.stop_words_ = frozenset(text_module.ENGLISH_STOP_WORDS)
        counts: dict[str, int] = {}
        for text in corpus:
            for word in set(_WORD.findall(text.lower())):
                counts[word] = counts.get(word, 0) + 1
        if not counts:
            raise SearchInputError("corpus has no words; pass the passages' texts")
        self.n_docs_ = len(corpus)
        self.idf_ = {
            w: float(np.log((1 + self.n_docs_) / (1 + df)) + 1) for w, df in counts.items()
        }
        return self

    def generate(
        self, passages: Sequence[str], per_passage: int = 1, quiet: bool = True
    ) -> list[list[str]]:
        """Up to ``per_passage`` distinct queries per passage; none for a passage with fewer
        than ``min_words`` distinct content words."""
        if not hasattr(self, "idf_"):
            raise SearchInputError("ExtractiveQueryGenerator is not fitted; call .fit(corpus)")
        check_int("per_passage", per_passage, 1)
        return [self._queries(text, per_passage) for text in passages]

    def _queries(self, text: str, per_passage: int) -> list[str]:
        words = [w for w in _WORD.findall(text.lower()) if w not in self.stop_words_]
        terms = list(dict.fromkeys(w for w in words if len(w) > (2 if w.isdigit() else 1)))
        if len(terms) < self.min_words:
            return []
        counts = {term: 0 for term in terms}
        for word in words:
            if word in counts:
                counts[word] += 1
        fallback = max(self.idf_.values())
        weights = np.array([counts[t] * self.idf_.get(t, fallback) for t in terms])
        rng = _passage_seed(self.random_state, text)
        queries: list[str] = []
        for attempt in range(4 * per_passage):
            length = int(rng.integers(self.min_words, min(self.max_words, len(terms)) + 1))
            if attempt == 0:
                chosen = np.argsort(-weights, kind="stable")[:length]
            else:
                chosen = rng.choice(len(terms), length, replace=False, p=weights / weights.sum())
            query = " ".join(terms[i] for i in sorted(chosen))
            if query not in queries:
                queries.append(query)
            if len(queries) == per_passage:
                break
        return queries


class GenerationCache:
    """Raw generations in one JSONL file: ``{"key": sha256, "generations": [str, ...]}`` a line.

    :meth:`update` rewrites the whole file through a temporary one, so a crash leaves the
    previous version; an unreadable or malformed file reads as empty.
    """

    def __init__(self, path: str | Path = DEFAULT_GENERATION_CACHE):
        self.path = Path(path)

    def load(self) -> dict[str, list[str]]:
        """``{key: generations}`` of every stored passage."""
        try:
            return {
                record["key"]: list(record["generations"]) for _, record in jsonl_records(self.path)
            }
        except (OSError, KeyError, TypeError, DatasetFormatError):
            return {}

    def update(self, entries: dict[str, list[str]], new: dict[str, list[str]]) -> None:
        """Add ``new`` to ``entries`` (in place) and write them all."""
        entries.update(new)
        lines = [json.dumps({"key": k, "generations": v}) + "\n" for k, v in entries.items()]
        atomic_write_text(self.path, "".join(lines))


class LLMQueryGenerator:
    """Queries written by a causal LM for each passage (see the module doc).

    Args:
        model, tokenizer: a transformers causal LM and its tokenizer (:meth:`from_pretrained`
            loads both). Prompts go through ``tokenizer.apply_chat_template`` when the
            tokenizer has a chat template, else ``template`` is the whole prompt.
        model_id: names the model in the cache key (default: ``model.name_or_path``).
        template: the user message, with ``{passage}``.
        examples: ``(passage, query)`` pairs shown first as earlier chat turns (few-shot); for
            a tokenizer without a chat template, as ``template`` lines each followed by its query.
        batch_size: passages per ``generate`` call; rows are padded on the left.
        max_new_tokens: generation length cap; generation also stops at a newline and at the
            tokenizer's end-of-sequence or ``<|im_end|>``.
        do_sample, temperature, top_p, repetition_penalty: ``do_sample=False`` = greedy.
            Sampling is seeded with ``seed`` plus the batch number, so it repeats for the same
            passages in the same batches.
        max_passage_tokens: the passage is cut to this many tokens before it enters the prompt.
        min_words, max_words, copy_words: see :func:`clean_query`.
        cache_path: JSONL of raw generations (:class:`GenerationCache`), or ``None``. The key
            is SHA-256 of model id, template, generation settings and passage text, so a rerun
            only generates for passages not done yet.
        num_threads: torch CPU threads while generating; ``None`` leaves torch's setting.
    """

    method = "llm"

    def __init__(
        self,
        model,
        tokenizer,
        model_id: str | None = None,
        template: str = QUERY_TEMPLATE,
        examples: Sequence[tuple[str, str]] = QUERY_EXAMPLES,
        batch_size: int = 16,
        max_new_tokens: int = 24,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        max_passage_tokens: int = 256,
        min_words: int = 2,
        max_words: int = 12,
        copy_words: int = 6,
        cache_path: str | Path | None = DEFAULT_GENERATION_CACHE,
        num_threads: int | None = None,
    ):
        if "{passage}" not in template:
            raise SearchInputError(f"template must contain '{{passage}}'; got {template!r}")
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("max_new_tokens", max_new_tokens, 1),
            ("max_passage_tokens", max_passage_tokens, 8),
            ("min_words", min_words, 1),
            ("max_words", max_words, min_words),
            ("copy_words", copy_words, 1),
        ):
            check_int(name, value, low)
        if do_sample and not (temperature > 0 and 0 < top_p <= 1):
            raise SearchInputError(
                f"sampling needs temperature > 0 and 0 < top_p <= 1; got {temperature}, {top_p}"
            )
        if not repetition_penalty > 0:
            raise SearchInputError(f"repetition_penalty must be > 0; got {repetition_penalty!r}")
        examples = tuple((str(passage), str(query)) for passage, query in examples)
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id or str(getattr(model, "name_or_path", "") or type(model).__name__)
        self.template = template
        self.examples = examples
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.top_p = top_p
        self.repetition_penalty = repetition_penalty
        self.seed = seed
        self.max_passage_tokens = max_passage_tokens
        self.min_words = min_words
        self.max_words = max_words
        self.copy_words = copy_words
        self.cache_path = cache_path
        self.num_threads = num_threads

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        gguf_file: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        **kwargs,
    ) -> LLMQueryGenerator:
        """Load a causal LM and its tokenizer (:func:`~winnow.common.causal_lm.load_causal_lm`)
        by hub id or folder, with ``gguf_file`` inside it or as a path to a ``.gguf`` file;
        ``None`` = the bundled SmolLM2-135M-Instruct GGUF. ``kwargs`` go to :meth:`__init__`.

        ``model_id`` defaults to the id or folder given, or ``<folder name>/<file>`` for GGUF,
        so cache keys do not depend on where a package is installed.
        """
        if name_or_path is None:
            name_or_path, gguf_file = bundled_smollm2()
        location = str(name_or_path)
        if gguf_file is None and location.endswith(".gguf") and Path(location).is_file():
            location, gguf_file = str(Path(location).parent), Path(location).name
        model, tokenizer = load_causal_lm(location, gguf_file, dtype, device)
        model_id = location if gguf_file is None else f"{Path(location).name}/{gguf_file}"
        return cls(model, tokenizer, model_id=kwargs.pop("model_id", model_id), **kwargs)

    @property
    def settings(self) -> dict:
        """What changes a generation besides the passage: part of every cache key."""
        sampling = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        return {
            "model": self.model_id,
            "template": self.template,
            "examples": [list(pair) for pair in self.examples],
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_new_tokens,
            "max_passage_tokens": self.max_passage_tokens,
            "do_sample": self.do_sample,
            **(sampling if self.do_sample else {}),
        }

    def cache_key(self, passage: str, per_passage: int) -> str:
        """SHA-256 hex of :attr:`settings`, ``per_passage`` and the passage text."""
        payload = json.dumps([self.settings, per_passage, passage], sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def generate(
        self, passages: Sequence[str], per_passage: int = 1, quiet: bool = False
    ) -> list[list[str]]:
        """Cleaned, distinct queries per passage (at most ``per_passage``; rejected ones drop)."""
        raw = self.generate_raw(passages, per_passage, quiet)
        cleaned = []
        for passage, outputs in zip(passages, raw, strict=True):
            kept = (
                clean_query(o, passage, self.min_words, self.max_words, self.copy_words)
                for o in outputs
            )
            cleaned.append(list(dict.fromkeys(q for q in kept if q is not None)))
        return cleaned

    def generate_raw(
        self, passages: Sequence[str], per_passage: int = 1, quiet: bool = False
    ) -> list[list[str]]:
        """``per_passage`` decoded continuations per passage, before cleaning (cached)."""
        check_int("per_passage", per_passage, 1)
        if per_passage > 1 and not self.do_sample:
            raise SearchInputError(
                f"per_passage={per_passage} needs do_sample=True (greedy decoding repeats "
                "itself); fix: per_passage=1 or do_sample=True"
            )
        cache = GenerationCache(self.cache_path) if self.cache_path is not None else None
        done = cache.load() if cache is not None else {}
        keys = [self.cache_key(p, per_passage) for p in passages]
        first: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in done:
                first.setdefault(key, i)
        todo = list(first.values())
        with track_progress(f"queries ({self.model_id})", len(todo), quiet=quiet) as bar:
            for number, start in enumerate(range(0, len(todo), self.batch_size)):
                batch = todo[start : start + self.batch_size]
                outputs = self._generate_batch([passages[i] for i in batch], per_passage, number)
                new = {keys[i]: outputs[j] for j, i in enumerate(batch)}
                if cache is not None:
                    cache.update(done, new)
                else:
                    done.update(new)
                bar.advance(len(batch))
        return [list(done[k]) for k in keys]

    def prompt(self, passage: str) -> str:
        """The text the model continues for ``passage`` (chat-formatted when it can be)."""
        ids = self.tokenizer(passage, add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_passage_tokens:
            passage = self.tokenizer.decode(ids[: self.max_passage_tokens]).strip()
        if not getattr(self.tokenizer, "chat_template", None):
            shots = "".join(f"{self.template.format(passage=p)}\n{q}\n\n" for p, q in self.examples)
            return shots + self.template.format(passage=passage) + "\n"
        messages = []
        for shot, query in self.examples:
            messages.append({"role": "user", "content": self.template.format(passage=shot)})
            messages.append({"role": "assistant", "content": query})
        messages.append({"role": "user", "content": self.template.format(passage=passage)})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _generate_batch(
        self, passages: list[str], per_passage: int, number: int
    ) -> list[list[str]]:
        torch = require("torch", "search")
        tokenizer = self.tokenizer
        pad_id = self._pad_id()
        chat = bool(getattr(tokenizer, "chat_template", None))
        inputs = tokenizer(
            [self.prompt(p) for p in passages],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=not chat,
        ).to(self.model.device)
        sampling = (
            {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": None}
            if self.do_sample
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        device = self.model.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch_threads(self.num_threads), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed + number)
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    num_return_sequences=per_passage,
                    repetition_penalty=self.repetition_penalty,
                    eos_token_id=self._stop_ids(),
                    pad_token_id=pad_id,
                    stop_strings=["\n"],
                    tokenizer=tokenizer,
                    **sampling,
                )
        texts = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return [texts[i * per_passage : (i + 1) * per_passage] for i in range(len(passages))]

    def _stop_ids(self) -> list[int]:
        tokenizer, ids = self.tokenizer, []
        for token in (tokenizer.eos_token, "<|im_end|>"):
            if token is not None and token in tokenizer.get_vocab():
                ids.append(tokenizer.convert_tokens_to_ids(token))
        return list(dict.fromkeys(ids))

    def _pad_id(self) -> int:
        tokenizer = self.tokenizer
        if tokenizer.pad_token_id is not None:
            return tokenizer.pad_token_id
        if tokenizer.eos_token_id is None:
            raise SearchInputError("the tokenizer has neither a pad nor an eos token; set one")
        tokenizer.pad_token = tokenizer.eos_token
        return tokenizer.eos_token_id
