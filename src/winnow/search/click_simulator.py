"""A SIMULATED click log over real graded judgments: position bias times text-driven attractiveness.

No real interaction data ships with winnow, so the engagement teacher trains on clicks drawn
from a position-based model (Craswell et al. 2008; Joachims et al. 2017)::

    P(click | d at rank r) = examination(r) * attractiveness(q, d),   examination(r) = r^-eta
    attractiveness(q, d) = sigmoid(logit(base[grade(q, d)])
                                   + sum_f text_weights[f] * (x_f(q, d) - centre_f)
                                   + noise_scale * z_d)

``base`` maps grades 0-3 (unjudged = 0) to a click probability. ``x_f`` are the text features
of :data:`TEXT_FEATURES`, each a deterministic function of the query and passage text in
``[0, 1]``, centred at its typical value ``centre_f`` (:data:`TEXT_FEATURE_CENTRES`) so a typical
passage keeps its grade's base. A model that reads the text can thus learn what makes a result
attractive beyond its relevance:

- ``headline``: a title-like opening, a short first sentence of capitalised words;
- ``brevity``: a short snippet, ``1 / (1 + (words / 50)^2)``;
- ``query_terms_early``: the query's terms among the passage's first 20 words;
- ``numbers``: numbers and dates, words with a digit (saturating at 3).

``z_d ~ N(0, 1)`` is one seeded draw per *document* (the same for every query): the part of
attractiveness no text model can predict, small by default. Each session shows a ranker's list
for a query, reordered by a perturbation (:data:`PERTURBATIONS`) so documents appear at varied
ranks, and records impressions and clicks per (query, doc, position).

Every output says SIMULATED: :attr:`ClickLog.simulated` is true, its ``source`` is
:data:`SIMULATED_SOURCE`, its records carry ``simulated=True`` and its summary the label.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real

import numpy as np

from winnow.search.clicks import ClickLog, PairValues, examination_probability
from winnow.search.exceptions import SearchInputError

__all__ = [
    "DEFAULT_TEXT_WEIGHTS",
    "PERTURBATIONS",
    "SIMULATED_SOURCE",
    "TEXT_FEATURES",
    "TEXT_FEATURE_CENTRES",
    "ClickModel",
    "SimulatedClicks",
    "simulate_clicks",
    "text_features",
]

SIMULATED_SOURCE = "SIMULATED: position-based click model over graded judgments and passage text"

_TERM = re.compile(r"[A-Za-z0-9]+")
_FIRST_SENTENCE_END = re.compile(r"(?<=[.!?])\s|[:\n]")
_STOPWORDS = frozenset(
    _TERM.findall(
        "a an and are as at be by can do does for from how i in is it of on or the to was what "
        "when where which who why will with you your"
    )
)
HEADLINE_WORDS = 8
BREVITY_WORDS = 50
EARLY_WORDS = 20
NUMBERS_SATURATE = 3


def headline_opening(query: str, passage: str) -> float:
    """Share of capitalised words in the first sentence, times ``min(1, 8 / its words)``."""
    first = _FIRST_SENTENCE_END.split(passage.strip(), maxsplit=1)[0]
    words = _TERM.findall(first)
    if not words:
        return 0.0
    capitalised = sum(word[0].isupper() for word in words) / len(words)
    return capitalised * min(1.0, HEADLINE_WORDS / len(words))


def brevity(query: str, passage: str) -> float:
    """``1 / (1 + (words / 50)^2)``: near 1 for a few words, 0.5 at 50, towards 0 beyond."""
    return 1.0 / (1.0 + (len(passage.split()) / BREVITY_WORDS) ** 2)


def query_terms_early(query: str, passage: str) -> float:
    """Share of the query's terms (lowercased, stopwords dropped) in the passage's first 20
    words; 0 for a query without terms."""
    terms = {t for t in _TERM.findall(query.lower()) if t not in _STOPWORDS}
    if not terms:
        return 0.0
    early = set(_TERM.findall(" ".join(passage.lower().split()[:EARLY_WORDS])))
    return len(terms & early) / len(terms)


def numbers(query: str, passage: str) -> float:
    """``min(1, words with a digit / 3)``: figures and dates, saturating."""
    with_digit = sum(any(c.isdigit() for c in word) for word in passage.split())
    return min(1.0, with_digit / NUMBERS_SATURATE)


TEXT_FEATURES: dict[str, Callable[[str, str], float]] = {
    "headline": headline_opening,
    "brevity": brevity,
    "query_terms_early": query_terms_early,
    "numbers": numbers,
}
# Over the shipped MS MARCO / TREC DL candidates (judged passages plus random ones), the features
# average about these centres and spread with sd 0.32, 0.17, 0.31, 0.43; times the weights, the
# text term has sd about 1 (the spread the per-document noise had when it was the only term).
TEXT_FEATURE_CENTRES: dict[str, float] = {
    "headline": 0.25,
    "brevity": 0.45,
    "query_terms_early": 0.25,
    "numbers": 0.4,
}
DEFAULT_TEXT_WEIGHTS: dict[str, float] = {
    "headline": 1.5,
    "brevity": 2.5,
    "query_terms_early": 2.0,
    "numbers": 1.0,
}


def text_features(query: str, passages: Sequence[str]) -> np.ndarray:
    """``[len(passages), len(TEXT_FEATURES)]`` float64 in ``[0, 1]``, columns in the order of
    :data:`TEXT_FEATURES`; row ``i`` depends only on ``query`` and ``passages[i]``."""
    rows = [[feature(query, passage) for feature in TEXT_FEATURES.values()] for passage in passages]
    return np.asarray(rows, dtype=np.float64).reshape(len(passages), len(TEXT_FEATURES))


def _adjacent_swaps(base: np.ndarray, sessions: int, model: ClickModel, rng) -> np.ndarray:
    """Per session, walk down the list swapping neighbours with ``swap_probability`` each."""
    shown = np.tile(base, (sessions, 1))
    rows = np.arange(sessions)
    for r in range(base.size - 1):
        swap = rows[rng.random(sessions) < model.swap_probability]
        shown[swap, r], shown[swap, r + 1] = shown[swap, r + 1], shown[swap, r].copy()
    return shown


def _shuffle(base: np.ndarray, sessions: int, model: ClickModel, rng) -> np.ndarray:
    """A uniformly random order per session (the RandTop-k intervention)."""
    return rng.permuted(np.tile(base, (sessions, 1)), axis=1)


def _no_perturbation(base: np.ndarray, sessions: int, model: ClickModel, rng) -> np.ndarray:
    return np.tile(base, (sessions, 1))


PERTURBATIONS: dict[str, Callable] = {
    "swap": _adjacent_swaps,
    "shuffle": _shuffle,
    "none": _no_perturbation,
}


@dataclass(frozen=True)
class ClickModel:
    """Settings of the SIMULATED position-based click model (see the module doc).

    Args:
        eta: examination exponent, ``examination(r) = r ** -eta``.
        grade_attractiveness: base attractiveness of grades 0, 1, 2, 3 (unjudged = grade 0),
            for a passage whose text features all sit at their centres.
        text_weights: ``{feature name: log-odds weight}`` over :data:`TEXT_FEATURES`; a feature
            not named weighs 0; all zero makes attractiveness blind to the text.
        noise_scale: standard deviation of the per-document log-odds noise ``z_d``; 0 makes
            attractiveness a function of the grade and the text alone.
        sessions: simulated result pages per query.
        perturbation: how each session reorders the ranker's list: ``"swap"`` (neighbours
            swapped with ``swap_probability``, walking down), ``"shuffle"`` or ``"none"``.
        seed: seeds the noise draws (per document id) and the sessions (per query id), so a
            pair's outcome does not depend on which other queries are simulated.
    """

    eta: float = 1.0
    grade_attractiveness: tuple[float, ...] = (0.05, 0.25, 0.5, 0.8)
    text_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TEXT_WEIGHTS))
    noise_scale: float = 0.25
    sessions: int = 1000
    perturbation: str = "swap"
    swap_probability: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.eta, Real) or self.eta < 0:
            raise SearchInputError(f"eta must be a number >= 0; got {self.eta!r}")
        base = self.grade_attractiveness
        if len(base) < 1 or any(not 0 < float(a) < 1 for a in base):
            raise SearchInputError(
                f"grade_attractiveness must hold one probability in (0, 1) per grade; got {base!r}"
            )
        weights = dict(self.text_weights)
        if set(weights) - set(TEXT_FEATURES) or not all(
            isinstance(w, Real) and math.isfinite(w) for w in weights.values()
        ):
            raise SearchInputError(
                f"text_weights must map names of {list(TEXT_FEATURES)} to finite numbers, e.g. "
                f"{DEFAULT_TEXT_WEIGHTS}; got {self.text_weights!r}"
            )
        object.__setattr__(self, "text_weights", weights)
        if not isinstance(self.noise_scale, Real) or self.noise_scale < 0:
            raise SearchInputError(f"noise_scale must be >= 0; got {self.noise_scale!r}")
        if not isinstance(self.sessions, Integral) or self.sessions < 1:
            raise SearchInputError(f"sessions must be an int >= 1; got {self.sessions!r}")
        if self.perturbation not in PERTURBATIONS:
            raise SearchInputError(
                f"perturbation must be one of {sorted(PERTURBATIONS)}; got {self.perturbation!r}"
            )
        if not 0 <= self.swap_probability <= 1:
            raise SearchInputError(
                f"swap_probability must be in [0, 1]; got {self.swap_probability!r}"
            )

    @property
    def reads_text(self) -> bool:
        """Whether some text feature has a non-zero weight (the simulation then needs texts)."""
        return any(w != 0 for w in self.text_weights.values())

    def text_logits(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """``[n]`` float64 ``sum_f text_weights[f] * (x_f - centre_f)`` per passage."""
        weights = np.array([self.text_weights.get(name, 0.0) for name in TEXT_FEATURES])
        centres = np.array([TEXT_FEATURE_CENTRES[name] for name in TEXT_FEATURES])
        return (text_features(query, passages) - centres) @ weights

    def attractiveness(
        self, grades: np.ndarray, doc_ids: Sequence[str], query: str, passages: Sequence[str]
    ) -> np.ndarray:
        """``[n]`` true attractiveness of documents ``doc_ids`` with integer ``grades`` (0 if
        unjudged) and texts ``passages`` for ``query``; ``doc_ids`` only seed the noise."""
        grades = np.clip(np.asarray(grades, dtype=np.int64), 0, len(self.grade_attractiveness) - 1)
        base = np.asarray(self.grade_attractiveness, dtype=np.float64)[grades]
        noise = np.array([_seeded_normal(self.seed, "noise", doc) for doc in doc_ids])
        logits = np.log(base / (1 - base)) + self.text_logits(query, passages)
        return 1.0 / (1.0 + np.exp(-(logits + self.noise_scale * noise.reshape(base.shape))))


@dataclass(frozen=True, eq=False)
class SimulatedClicks:
    """A SIMULATED log and the truth behind it.

    ``log`` is a :class:`ClickLog` with ``simulated=True``; ``attractiveness`` is
    ``{qid: {docid: true attractiveness}}``; ``model`` the settings used.
    """

    log: ClickLog
    attractiveness: PairValues
    model: ClickModel = field(default_factory=ClickModel)

    def attractiveness_qrels(self, levels: int = 100) -> dict[str, dict[str, int]]:
        """True attractiveness as integer gains ``round(levels * a)``, for nDCG with ranx."""
        return {
            qid: {doc: round(levels * value) for doc, value in docs.items()}
            for qid, docs in self.attractiveness.items()
        }

    def summary(self) -> dict:
        return {**self.log.summary(), "click_model": asdict(self.model)}


def simulate_clicks(
    query_ids: Sequence[str],
    ranked_ids: np.ndarray,
    qrels: Mapping[str, Mapping[str, int]],
    model: ClickModel | None = None,
    *,
    query_texts: Mapping[str, str] | None = None,
    doc_texts: Mapping[str, str] | None = None,
) -> SimulatedClicks:
    """SIMULATED impressions and clicks per (query, doc, position) over a ranker's lists.

    Args:
        query_ids: ``[q]`` query ids.
        ranked_ids: ``[q, k]`` document ids from a ranker, best first (``""`` slots dropped);
            every session shows the whole (perturbed) list.
        qrels: ``{qid: {docid: grade}}``; unjudged pairs are grade 0.
        model: the click model; default :class:`ClickModel()`.
        query_texts: ``{qid: text}`` of every query in ``query_ids``.
        doc_texts: ``{docid: text}`` of every ranked document, the text a user would see (and a
            text model reads). Both are required when ``model`` weights a text feature.

    Returns a :class:`SimulatedClicks` whose log rows are the (query, doc, position) triples
    shown at least once.
    """
    model = model or ClickModel()
    ranked_ids = np.asarray(ranked_ids)
    if ranked_ids.ndim != 2 or ranked_ids.shape[0] != len(query_ids):
        raise SearchInputError(
            f"ranked_ids must be [n_queries, k] with n_queries={len(query_ids)}; "
            f"got shape {ranked_ids.shape}"
        )
    query_texts, doc_texts = _texts(model, query_ids, ranked_ids, query_texts, doc_texts)
    columns: dict[str, list] = {name: [] for name in ("q", "d", "r", "n", "c")}
    truth: PairValues = {}
    for qid, row in zip(query_ids, ranked_ids, strict=True):
        docs = [doc for doc in row.tolist() if doc != ""]
        if not docs:
            continue
        judged = qrels.get(qid, {})
        grades = np.array([judged.get(d, 0) for d in docs])
        texts = [doc_texts.get(d, "") for d in docs]
        attract = model.attractiveness(grades, docs, query_texts.get(qid, ""), texts)
        truth[qid] = dict(zip(docs, attract.tolist(), strict=True))
        shown, clicked = _simulate_query(qid, attract, model)
        doc_index, rank = np.nonzero(shown)
        columns["q"] += [qid] * len(doc_index)
        columns["d"] += [docs[i] for i in doc_index]
        columns["r"] += (rank + 1).tolist()
        columns["n"] += shown[doc_index, rank].tolist()
        columns["c"] += clicked[doc_index, rank].tolist()
    log = ClickLog(
        query_ids=np.array(columns["q"], dtype=str),
        doc_ids=np.array(columns["d"], dtype=str),
        positions=np.array(columns["r"], dtype=np.int64),
        impressions=np.array(columns["n"], dtype=np.int64),
        clicks=np.array(columns["c"], dtype=np.int64),
        query_texts=np.array([query_texts.get(q, "") for q in columns["q"]], dtype=str),
        simulated=True,
        source=SIMULATED_SOURCE,
    )
    return SimulatedClicks(log=log, attractiveness=truth, model=model)


def _texts(model: ClickModel, query_ids, ranked_ids, query_texts, doc_texts):
    """``(query_texts, doc_texts)`` checked to cover every query and ranked document when the
    model reads text; empty mappings when it does not and none were given."""
    query_texts, doc_texts = dict(query_texts or {}), dict(doc_texts or {})
    if not model.reads_text:
        return query_texts, doc_texts
    missing_queries = [qid for qid in query_ids if qid not in query_texts]
    missing_docs = sorted({d for d in ranked_ids.ravel().tolist() if d and d not in doc_texts})
    if missing_queries or missing_docs:
        raise SearchInputError(
            f"the click model weights text features ({model.text_weights}), so simulate_clicks "
            f"needs query_texts={{qid: text}} and doc_texts={{docid: text}} covering every query "
            f"and ranked document; missing queries {missing_queries[:5]}, documents "
            f"{missing_docs[:5]}; pass them, or set every text weight to 0"
        )
    return query_texts, doc_texts


def _simulate_query(qid: str, attract: np.ndarray, model: ClickModel):
    """``(impressions, clicks)``, each ``[k docs, k ranks]`` int64, of one query's sessions."""
    k = attract.size
    rng = np.random.default_rng([model.seed, _stable_int("sessions", qid)])
    order = PERTURBATIONS[model.perturbation](np.arange(k), model.sessions, model, rng)
    examine = examination_probability(np.arange(1, k + 1), model.eta)
    clicked = rng.random(order.shape) < examine[None, :] * attract[order]
    shown = np.zeros((k, k), dtype=np.int64)
    clicks = np.zeros((k, k), dtype=np.int64)
    ranks = np.broadcast_to(np.arange(k), order.shape)
    np.add.at(shown, (order, ranks), 1)
    np.add.at(clicks, (order, ranks), clicked.astype(np.int64))
    return shown, clicks


def _stable_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8], "big")


def _seeded_normal(seed: int, *parts: object) -> float:
    return float(np.random.default_rng([seed, _stable_int(*parts)]).standard_normal())
