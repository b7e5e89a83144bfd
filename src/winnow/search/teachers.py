"""Relevance judges: one interface, labels from qrels, a chat LLM with a policy, or a local LM.

A :class:`RelevanceJudge` grades the documents of one query::

    judge.grade(query, docs) -> np.ndarray [len(docs)] float

on the scale named by ``judge.scale``: ``"grade"`` (0-3, TREC DL's: 3 perfectly relevant, 2
highly relevant, 1 related, 0 irrelevant) or ``"probability"`` (P(relevant) in ``[0, 1]``).
``NaN`` means "no label" (an unjudged pair, or a reply with no grade when asked not to raise),
so a distillation loss can mask it. Queries and documents are :class:`Query` / :class:`Passage`
objects or plain strings (text without an id; :class:`QrelsJudge` needs ids).

- :class:`QrelsJudge`: the collection's own judgments.
- :class:`ChatJudge`: an OpenAI-compatible ``/v1/chat/completions`` endpoint applying a written
  grading policy (the reference design's LLM judge): prompt from a template, robust parsing of a
  0-3 grade (:func:`parse_grade`), retries with exponential backoff on 429, 5xx and transport
  errors, and an on-disk cache of judgments keyed by (model, policy + template hash, query, doc).
- :class:`CausalLMJudge`: a local transformers causal LM scoring
  ``P(yes) = exp(l_yes) / (exp(l_yes) + exp(l_no))`` from next-token logits, prefill only
  (:class:`~winnow.search.prefill_scoring.PrefixScorer`, the prompt's query part computed once).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from winnow.common.causal_lm import load_causal_lm
from winnow.common.extras import require
from winnow.common.runs import atomic_write_text
from winnow.search.datasets import Passage, Query
from winnow.search.exceptions import JudgeEndpointError, JudgeReplyError, SearchInputError
from winnow.search.prefill_scoring import PrefixScorer

__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_JUDGMENT_CACHE",
    "LM_TEMPLATE",
    "TREC_DL_POLICY",
    "CausalLMJudge",
    "ChatJudge",
    "JudgmentCache",
    "QrelsJudge",
    "RelevanceJudge",
    "parse_grade",
]

TREC_DL_POLICY = """\
Grade how well the passage answers the search query, on this scale:
3 = perfectly relevant: the passage is dedicated to the query and contains the exact answer.
2 = highly relevant: the passage has some answer for the query, but it may be a bit unclear or \
hidden amongst extraneous information.
1 = related: the passage seems related to the query but does not answer it.
0 = irrelevant: the passage has nothing to do with the query."""

CHAT_TEMPLATE = """\
{policy}

Query: {query}
Passage: {passage}

Reply with the grade only: a single digit, 0, 1, 2 or 3."""

LM_TEMPLATE = """\
{policy}
Query: {query}
Passage:
{passage}
Does the passage answer the query? Answer yes or no.
Answer:"""

DEFAULT_JUDGMENT_CACHE = Path(".cache") / "winnow" / "search" / "judgments"

_FIELDS = ("policy", "query", "passage")
_RETRY_STATUS = frozenset({408, 409, 425, 429})


@runtime_checkable
class RelevanceJudge(Protocol):
    """Grades documents for a query; ``scale`` is ``"grade"`` (0-3) or ``"probability"``."""

    scale: str

    def grade(self, query: Query | str, docs: Sequence[Passage | str]) -> np.ndarray: ...


class QrelsJudge:
    """Labels straight from judgments ``{qid: {docid: grade}}``.

    Args:
        qrels: graded judgments, e.g. :attr:`BeirDataset.qrels`.
        unjudged: ``"zero"`` (an unjudged pair counts as irrelevant, the usual IR convention) or
            ``"missing"`` (``NaN``: no label).
    """

    scale = "grade"

    def __init__(self, qrels: Mapping[str, Mapping[str, int]], unjudged: str = "zero"):
        if unjudged not in ("zero", "missing"):
            raise SearchInputError(f"unjudged must be 'zero' or 'missing'; got {unjudged!r}")
        self.qrels = qrels
        self.unjudged = unjudged

    def grade(self, query: Query | str, docs: Sequence[Passage | str]) -> np.ndarray:
        """``[len(docs)]`` float grades; unjudged pairs are 0 or ``NaN`` (see ``unjudged``)."""
        query_id = _require_id(query, "query")
        judged = self.qrels.get(query_id, {})
        fallback = 0.0 if self.unjudged == "zero" else math.nan
        return np.array(
            [float(judged.get(_require_id(doc, "doc"), fallback)) for doc in docs],
            dtype=np.float64,
        )


def parse_grade(reply: str) -> int | None:
    """The 0-3 grade in a judge's reply, or ``None`` when there is none or it is ambiguous.

    Reasoning inside ``<think>...</think>`` is ignored. In order, the first rule that applies:
    a JSON object with a ``grade``/``score``/``relevance`` field; the last labelled grade
    (``"Grade: 2"``, ``"score = **3**"``); a ``"N/3"`` fraction; the only number in the text,
    if it is 0-3.

    >>> parse_grade("Grade: 2"), parse_grade("**3**"), parse_grade("1 or 2")
    (2, 3, None)
    """
    text = re.sub(r"<think>.*?(</think>|$)", " ", reply, flags=re.DOTALL | re.IGNORECASE)
    for rule in (_json_grade, _labelled_grade, _fraction_grade, _lone_number_grade):
        grade = rule(text)
        if grade is not None:
            return grade
    return None


def _json_grade(text: str) -> int | None:
    match = re.search(r"\{.*\}", text, flags=re.DOTALL)
    if not match:
        return None
    try:
        payload = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    for key in ("grade", "score", "relevance"):
        value = payload.get(key) if isinstance(payload, dict) else None
        if isinstance(value, int | str) and str(value).strip() in ("0", "1", "2", "3"):
            return int(value)
    return None


def _labelled_grade(text: str) -> int | None:
    found = re.findall(
        r"\b(?:grade|score|relevance|rating)\b[\s:=*\"'`]*([0-3])(?![\d.])", text, re.IGNORECASE
    )
    return int(found[-1]) if found else None


def _fraction_grade(text: str) -> int | None:
    found = re.findall(r"(?<![\d.])([0-3])\s*/\s*3(?![\d.])", text)
    return int(found[-1]) if found else None


def _lone_number_grade(text: str) -> int | None:
    numbers = re.findall(r"(?<![\d.])\d+(?:\.\d+)?(?![\d.])", text)
    if len(numbers) == 1 and numbers[0] in ("0", "1", "2", "3"):
        return int(numbers[0])
    return None


class JudgmentCache:
    """One JSON file per judgment: ``root/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, root: str | Path = DEFAULT_JUDGMENT_CACHE):
        self.root = Path(root)

    @staticmethod
    def key(model: str, policy_hash: str, query: str, passage: str) -> str:
        """SHA-256 hex of the four parts."""
        return hashlib.sha256(json.dumps([model, policy_hash, query, passage]).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        """The stored record, or ``None`` (also for an unreadable file)."""
        try:
            return json.loads((self.root / key[:2] / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict) -> None:
        atomic_write_text(self.root / key[:2] / f"{key}.json", json.dumps(record, indent=1) + "\n")


class ChatJudge:
    """Grades with an LLM behind an OpenAI-compatible chat endpoint, following ``policy``.

    Args:
        model: model name sent to the endpoint (also part of the cache key).
        base_url: the API root, e.g. ``"http://localhost:8000/v1"`` (vLLM, SGLang, llama.cpp,
            OpenAI); requests go to ``{base_url}/chat/completions``.
        policy: the grading policy, inserted into ``template``.
        template: the user message, with ``{policy}``, ``{query}`` and ``{passage}``.
        api_key: sent as a bearer token when given (never read from the environment here).
        cache_dir: judgment cache folder, or ``None`` for no cache. The key covers the model,
            the SHA-256 of policy and template, and the query and passage texts.
        on_bad_reply: ``"raise"`` (:class:`JudgeReplyError` quoting the reply) or ``"missing"``
            (``NaN``; not cached, so a later call asks again).
        max_retries: retries after the first attempt on 429/408/409/425, 5xx, timeouts and
            connection errors; then :class:`JudgeEndpointError`. Other 4xx fail at once.
        backoff_s, max_backoff_s: wait ``min(max_backoff_s, backoff_s * 2**attempt)`` between
            attempts, or the ``Retry-After`` seconds of a 429/503 when given.
        timeout_s: per-request timeout; temperature, max_tokens: sampling settings.
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``); sleep: the wait
            function (tests pass a recorder).
    """

    scale = "grade"

    def __init__(
        self,
        model: str,
        base_url: str = "http://localhost:8000/v1",
        policy: str = TREC_DL_POLICY,
        template: str = CHAT_TEMPLATE,
        api_key: str | None = None,
        cache_dir: str | Path | None = DEFAULT_JUDGMENT_CACHE,
        on_bad_reply: str = "raise",
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 16,
        transport=None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        _check_template(template, "template")
        if on_bad_reply not in ("raise", "missing"):
            raise SearchInputError(
                f"on_bad_reply must be 'raise' or 'missing'; got {on_bad_reply!r}"
            )
        if not isinstance(max_retries, Integral) or max_retries < 0:
            raise SearchInputError(f"max_retries must be an int >= 0; got {max_retries!r}")
        for name, value in (("backoff_s", backoff_s), ("timeout_s", timeout_s)):
            if not isinstance(value, Real) or value < 0:
                raise SearchInputError(f"{name} must be a number >= 0; got {value!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.template = template
        self.api_key = api_key
        self.cache_dir = cache_dir
        self.on_bad_reply = on_bad_reply
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.transport = transport
        self.sleep = sleep
        self.policy_hash = hashlib.sha256(f"{policy}\0{template}".encode()).hexdigest()
        self.cache = None if cache_dir is None else JudgmentCache(cache_dir)
        self.requests_sent = 0
        self._client = None

    def grade(self, query: Query | str, docs: Sequence[Passage | str]) -> np.ndarray:
        """``[len(docs)]`` float grades in ``{0, 1, 2, 3}``; ``NaN`` only with ``"missing"``."""
        query_text = _text(query)
        return np.array([self._grade_one(query_text, _text(doc)) for doc in docs], dtype=float)

    def prompt(self, query: str, passage: str) -> str:
        """The user message sent for one pair."""
        return self.template.format(policy=self.policy, query=query, passage=passage)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _grade_one(self, query: str, passage: str) -> float:
        key = JudgmentCache.key(self.model, self.policy_hash, query, passage)
        if self.cache is not None:
            record = self.cache.get(key)
            if record is not None and record.get("grade") in (0, 1, 2, 3):
                return float(record["grade"])
        reply = self._complete(self.prompt(query, passage))
        grade = parse_grade(reply)
        if grade is None:
            if self.on_bad_reply == "raise":
                raise JudgeReplyError(
                    f"{self.model} replied without a 0-3 grade: {reply[:300]!r}; fix: tighten the "
                    "template's reply instruction, or pass on_bad_reply='missing'"
                )
            return math.nan
        if self.cache is not None:
            self.cache.put(
                key,
                {
                    "model": self.model,
                    "policy_sha256": self.policy_hash,
                    "query": query,
                    "passage": passage,
                    "grade": grade,
                    "reply": reply,
                },
            )
        return float(grade)

    def _complete(self, prompt: str) -> str:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        body = self._post(payload)
        try:
            return str(body["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise JudgeReplyError(
                f"{self.base_url}/chat/completions returned no choices[0].message.content: "
                f"{str(body)[:300]}"
            ) from None

    def _post(self, payload: dict) -> dict:
        httpx = require("httpx", "serve")
        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            try:
                self.requests_sent += 1
                response = self._http().post(url, json=payload)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise JudgeReplyError(
                            f"{url} returned a body that is not JSON: {response.text[:300]!r}"
                        ) from None
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if not _retryable(response.status_code):
                    raise JudgeEndpointError(f"{url} refused the request ({last})")
                wait = _retry_after(response, wait)
            if attempt < self.max_retries:
                self.sleep(wait)
        raise JudgeEndpointError(
            f"{url} failed {self.max_retries + 1} times; last: {last}. Fix: check that the "
            "server is up and the model name is right, or raise max_retries"
        )

    def _http(self):
        if self._client is None:
            httpx = require("httpx", "serve")
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(
                timeout=self.timeout_s, transport=self.transport, headers=headers
            )
        return self._client


class CausalLMJudge:
    """P(yes) from a local causal LM reading ``template`` (policy, query, passage), prefill only.

    Args:
        model, tokenizer: a transformers causal LM and its tokenizer
            (:meth:`from_pretrained` loads both by hub id or local path, safetensors or GGUF;
            ``CausalLMJudge.from_pretrained(*bundled_smollm2())`` runs offline).
        policy: grading policy placed in the prompt.
        template: prompt with ``{policy}``, ``{query}``, ``{passage}``; everything before
            ``{passage}`` is the prefix computed once per query. End that part with a newline.
        yes, no: answer strings, one token each for the tokenizer (``" yes"``/``" no"`` for BPE
            models after ``"Answer:"``).
        batch_size: documents per forward pass; reuse_prefix: see
            :class:`~winnow.search.prefill_scoring.PrefixScorer`.
    """

    scale = "probability"

    def __init__(
        self,
        model,
        tokenizer,
        policy: str = TREC_DL_POLICY,
        template: str = LM_TEMPLATE,
        yes: str = " yes",
        no: str = " no",
        batch_size: int = 16,
        reuse_prefix: bool = True,
    ):
        _check_template(template, "template")
        self.policy = policy
        self.template = template
        self.scorer = PrefixScorer(model, tokenizer, yes, no, batch_size, reuse_prefix)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        gguf_file: str | None = None,
        dtype: str = "float32",
        device: str = "cpu",
        **kwargs,
    ) -> CausalLMJudge:
        """Load a causal LM and its tokenizer by hub id or local folder, safetensors or GGUF
        (:func:`~winnow.common.causal_lm.load_causal_lm`); ``kwargs`` go to ``__init__``."""
        model, tokenizer = load_causal_lm(name_or_path, gguf_file, dtype, device)
        return cls(model, tokenizer, **kwargs)

    def grade(self, query: Query | str, docs: Sequence[Passage | str]) -> np.ndarray:
        """``[len(docs)]`` float P(yes) in ``(0, 1)``."""
        head, _, tail = self.template.partition("{passage}")
        fields = {"policy": self.policy, "query": _text(query)}
        prefix = head.format(**fields)
        suffix = tail.format(**fields)
        candidates = [_text(doc) + suffix for doc in docs]
        return self.scorer.score(prefix, candidates).astype(np.float64)


def _retryable(status: int) -> bool:
    return status in _RETRY_STATUS or status >= 500


def _retry_after(response, default: float) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return default


def _check_template(template: str, name: str) -> None:
    missing = [field for field in _FIELDS if "{" + field + "}" not in template]
    if missing:
        raise SearchInputError(
            f"{name} lacks the placeholders {missing}; it needs {{policy}}, {{query}} and "
            "{passage}"
        )
    try:
        template.format(policy="", query="", passage="")
    except (KeyError, IndexError, ValueError) as exc:
        raise SearchInputError(
            f"{name} is not a valid format string ({exc!r}); double literal braces: {{{{ }}}}"
        ) from None


def _text(item: Query | Passage | str) -> str:
    return item if isinstance(item, str) else item.text


def _require_id(item: Query | Passage | str, what: str) -> str:
    if isinstance(item, str) or not item.id:
        raise SearchInputError(
            f"QrelsJudge needs {what} ids; pass Query/Passage objects with ids, not bare text"
        )
    return item.id
