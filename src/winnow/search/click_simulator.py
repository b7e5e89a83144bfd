"""A SIMULATED click log over real graded judgments: position bias plus item attractiveness.

No real interaction data ships with winnow, so the engagement teacher trains on clicks drawn
from a position-based model (Craswell et al. 2008; Joachims et al. 2017)::

    P(click | d at rank r) = examination(r) * attractiveness(q, d),   examination(r) = r^-eta
    attractiveness(q, d) = sigmoid(logit(base[grade(q, d)]) + clickbait_scale * z_d)

``base`` maps grades 0-3 (unjudged = 0) to a click probability and ``z_d ~ N(0, 1)`` is one
seeded draw per *document* (a "clickbait" factor, the same for every query): engagement differs
from relevance on purpose. Each session shows a ranker's list for a query, reordered by a
perturbation (:data:`PERTURBATIONS`) so documents appear at varied ranks, and records
impressions and clicks per (query, doc, position).

Every output says SIMULATED: :attr:`ClickLog.simulated` is true, its ``source`` is
:data:`SIMULATED_SOURCE`, its records carry ``simulated=True`` and its summary the label.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real

import numpy as np

from winnow.search.clicks import ClickLog, PairValues, examination_probability
from winnow.search.exceptions import SearchInputError

__all__ = [
    "PERTURBATIONS",
    "SIMULATED_SOURCE",
    "ClickModel",
    "SimulatedClicks",
    "simulate_clicks",
]

SIMULATED_SOURCE = "SIMULATED: position-based click model over graded judgments"


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
        grade_attractiveness: base attractiveness of grades 0, 1, 2, 3 (unjudged = grade 0).
        clickbait_scale: standard deviation of the per-document log-odds noise ``z_d``; 0 makes
            attractiveness a function of the grade alone.
        sessions: simulated result pages per query.
        perturbation: how each session reorders the ranker's list: ``"swap"`` (neighbours
            swapped with ``swap_probability``, walking down), ``"shuffle"`` or ``"none"``.
        seed: seeds the clickbait draws (per document id) and the sessions (per query id), so a
            pair's outcome does not depend on which other queries are simulated.
    """

    eta: float = 1.0
    grade_attractiveness: tuple[float, ...] = (0.05, 0.25, 0.5, 0.8)
    clickbait_scale: float = 1.0
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
        if not isinstance(self.clickbait_scale, Real) or self.clickbait_scale < 0:
            raise SearchInputError(f"clickbait_scale must be >= 0; got {self.clickbait_scale!r}")
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

    def attractiveness(self, grades: np.ndarray, doc_ids: Sequence[str]) -> np.ndarray:
        """``[n]`` true attractiveness of documents with integer ``grades`` (0 if unjudged)."""
        grades = np.clip(np.asarray(grades, dtype=np.int64), 0, len(self.grade_attractiveness) - 1)
        base = np.asarray(self.grade_attractiveness, dtype=np.float64)[grades]
        noise = np.array([_seeded_normal(self.seed, "clickbait", doc) for doc in doc_ids])
        return 1.0 / (1.0 + np.exp(-(np.log(base / (1 - base)) + self.clickbait_scale * noise)))


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
) -> SimulatedClicks:
    """SIMULATED impressions and clicks per (query, doc, position) over a ranker's lists.

    Args:
        query_ids: ``[q]`` query ids.
        ranked_ids: ``[q, k]`` document ids from a ranker, best first (``""`` slots dropped);
            every session shows the whole (perturbed) list.
        qrels: ``{qid: {docid: grade}}``; unjudged pairs are grade 0.
        model: the click model; default :class:`ClickModel()`.

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
    columns: dict[str, list] = {name: [] for name in ("q", "d", "r", "n", "c")}
    truth: PairValues = {}
    for qid, row in zip(query_ids, ranked_ids, strict=True):
        docs = [doc for doc in row.tolist() if doc != ""]
        if not docs:
            continue
        judged = qrels.get(qid, {})
        attract = model.attractiveness(np.array([judged.get(d, 0) for d in docs]), docs)
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
        query_texts=np.full(len(columns["q"]), "", dtype=str),
        simulated=True,
        source=SIMULATED_SOURCE,
    )
    return SimulatedClicks(log=log, attractiveness=truth, model=model)


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
