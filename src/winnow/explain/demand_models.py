"""Models of a :class:`~winnow.explain.demand.DemandTable` and their bootstrap explanations.

Scopes: the pooled model sees every row; each context with at least ``min_context_rows`` rows
also gets a model of its own. Every scope is refitted on ``bootstrap`` resamples of its rows
(stratified by context, so a small context keeps its size) and each refit is explained on the
original rows of the contexts it covers: SHAP family shares, partial dependence and ALE on the
grid shared by all contexts. Percentiles of the replicates give the intervals.

Placebo: each family of ``config.placebo_families`` is also refitted ``placebo.refits`` times
with its columns shuffled across the scope's rows. The share it keeps is what the model gives
to noise of that shape; a real share inside that range is no evidence of an effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np

from winnow.common.progress import track_progress
from winnow.explain.demand import DemandJobConfig, DemandTable
from winnow.explain.effects import (
    accumulated_local_effects,
    ale_local_effects,
    curve_difference,
    data_support,
    family_shares,
    ice_curves,
    percentile_interval,
    permutation_p_value,
    quantile_bins,
    shared_grid,
    shuffle_columns,
)

__all__ = [
    "ALL_ROWS",
    "MODELS",
    "ContextExplanation",
    "DemandAnalysis",
    "analyse_demand",
    "cross_validated_metrics",
    "shap_values",
]

ALL_ROWS = "all"
# Seed streams of the curve-row sample and the placebo shuffles, apart from the bootstrap
# streams 0..bootstrap-1.
CURVE_STREAM = 2**31 - 1
PLACEBO_STREAM = 2**31 - 2
TRIP_COUNT_STRATA = 10  # deciles of observed trips for placebo.strata = "trip_count"


def _boosting(config: DemandJobConfig, seed: int):
    from lightgbm import LGBMRegressor

    return LGBMRegressor(
        **config.model.model_dump(),
        subsample_freq=1,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def _forest(config: DemandJobConfig, seed: int):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=300, min_samples_leaf=2, random_state=seed, n_jobs=1)


def _linear(config: DemandJobConfig, seed: int):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), RidgeCV(np.logspace(-3, 3, 13))
    )


# The explained model first; the other two are references for its cross-validated accuracy.
MODELS = {"lightgbm": _boosting, "random_forest": _forest, "ridge": _linear}


def shap_values(model, X: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact tree SHAP values ``[n, p]`` of a fitted tree model and its expected value."""
    from shap import TreeExplainer

    explainer = TreeExplainer(model)
    return np.asarray(explainer.shap_values(X)), float(np.ravel(explainer.expected_value)[0])


@dataclass
class ContextExplanation:
    """One context's explanation: point estimates and their bootstrap replicates.

    Curves are lists over features (each on its own grid): ``pd[j]: [G_j]``,
    ``pd_boot[j]: [B, G_j]``; shares map family -> point, ``share_boot`` family -> ``[B]``.
    ``support[j]: [G_j] bool`` marks the grid points inside the range of the context's own
    values of feature j: outside it, ALE has no data and partial dependence extrapolates.
    ``placebo[f]: [R]`` is family f's share in each refit with f shuffled across units.
    """

    context: str
    rows: int
    explained_by: str
    shares: dict[str, float]
    share_boot: dict[str, np.ndarray]
    pd: list[np.ndarray]
    pd_boot: list[np.ndarray]
    ale: list[np.ndarray]
    ale_boot: list[np.ndarray]
    importance: np.ndarray
    support: list[np.ndarray]
    placebo: dict[str, np.ndarray] = field(default_factory=dict)

    def share_interval(self, family: str, alpha: float) -> tuple[float, float]:
        lower, upper = percentile_interval(self.share_boot[family], alpha)
        return float(lower), float(upper)

    def placebo_interval(self, family: str, alpha: float) -> tuple[float, float]:
        lower, upper = percentile_interval(self.placebo[family], alpha)
        return float(lower), float(upper)

    def placebo_p_value(self, family: str) -> float:
        """How often a shuffled refit gave the family at least its real share."""
        return permutation_p_value(self.shares[family], self.placebo[family])


@dataclass
class DemandAnalysis:
    """Everything the demand report shows.

    ``pooled`` explains every context (and ``all`` rows) through the pooled model, so their
    curves differ only through the rows each context holds; ``own`` explains each context
    large enough for a model of its own, as in the reference study.
    """

    table: DemandTable
    metrics: list[dict]
    out_of_fold: np.ndarray
    grids: list[np.ndarray]
    pooled: dict[str, ContextExplanation]
    own: dict[str, ContextExplanation]
    heterogeneity: list[dict]


def cross_validated_metrics(table: DemandTable, config: DemandJobConfig) -> list[dict]:
    """R² and RMSE of each model in each scope, by shuffled K-fold cross-validation."""
    from sklearn.model_selection import KFold, cross_validate

    rows = []
    for scope, index in _scopes(table, config).items():
        folds = KFold(min(config.cv_folds, len(index)), shuffle=True, random_state=config.seed)
        for name, make in MODELS.items():
            scores = cross_validate(
                make(config, config.seed),
                table.X[index],
                table.y[index],
                cv=folds,
                scoring=("r2", "neg_root_mean_squared_error"),
            )
            rows.append(
                {
                    "scope": scope,
                    "model": name,
                    "rows": len(index),
                    "cv_r2_mean": float(scores["test_r2"].mean()),
                    "cv_r2_sd": float(scores["test_r2"].std(ddof=1)),
                    "cv_rmse": float(-scores["test_neg_root_mean_squared_error"].mean()),
                }
            )
    return rows


def _scopes(table: DemandTable, config: DemandJobConfig) -> dict[str, np.ndarray]:
    """``all`` (pooled) and every context large enough for a model of its own."""
    scopes = {ALL_ROWS: np.arange(len(table.y))}
    for context in _present_contexts(table):
        rows = table.rows(context)
        if len(rows) >= config.min_context_rows:
            scopes[context] = rows
    return scopes


def _present_contexts(table: DemandTable) -> list[str]:
    return [c for c in ("airport", "downtown", "neighborhood") if (table.contexts == c).any()]


def analyse_demand(
    table: DemandTable, config: DemandJobConfig, quiet: bool = False
) -> DemandAnalysis:
    """Cross-validate, then explain every context with bootstrap intervals."""
    from sklearn.model_selection import KFold, cross_val_predict

    metrics = cross_validated_metrics(table, config)
    folds = KFold(config.cv_folds, shuffle=True, random_state=config.seed)
    out_of_fold = cross_val_predict(_boosting(config, config.seed), table.X, table.y, cv=folds)
    grids = [shared_grid(table.X[:, j], config.grid_points) for j in range(table.X.shape[1])]
    scopes = _scopes(table, config)
    fits = 1 + config.bootstrap + config.placebo.refits * len(config.placebo_families)
    explained = {}
    with track_progress("demand bootstrap", total=len(scopes) * fits, quiet=quiet) as bar:
        for scope, fit_rows in scopes.items():
            contexts = [ALL_ROWS, *_present_contexts(table)] if scope == ALL_ROWS else [scope]
            explained[scope] = _explain_scope(table, config, fit_rows, contexts, grids, bar)
    pooled = explained.pop(ALL_ROWS)
    own = {scope: found[scope] for scope, found in explained.items()}
    heterogeneity = _heterogeneity(table, pooled, grids, config.alpha)
    return DemandAnalysis(table, metrics, out_of_fold, grids, pooled, own, heterogeneity)


def _explain_scope(table, config, fit_rows, contexts, grids, bar) -> dict[str, ContextExplanation]:
    """Fit on ``fit_rows`` and on each bootstrap resample; explain each context's rows."""
    label = "pooled model" if len(contexts) > 1 else "own model"
    in_scope = table.contexts[fit_rows]
    where = {  # positions of each context's rows within fit_rows
        c: np.arange(len(fit_rows)) if c == ALL_ROWS else np.flatnonzero(in_scope == c)
        for c in contexts
    }
    X = table.X[fit_rows]
    curves = _curve_rows(
        where, config.curve_rows, np.random.default_rng([config.seed, CURVE_STREAM])
    )
    explain = partial(_explain, X=X, families=table.families, grids=grids, where=where, **curves)
    point = explain(_fit(table, config, fit_rows, config.seed))
    bar.advance(1)
    replicates = []
    for b in range(config.bootstrap):
        rng = np.random.default_rng([config.seed, b])
        sample = _stratified_resample(fit_rows, table.contexts[fit_rows], rng)
        replicates.append(explain(_fit(table, config, sample, config.seed + 1 + b)))
        bar.advance(1)
    placebo = _placebo(table, config, fit_rows, where, bar)
    out = {}
    for context in contexts:
        shares, pd, ale, importance = point[context]
        boot = [replicate[context] for replicate in replicates]
        out[context] = ContextExplanation(
            context=context,
            rows=len(where[context]),
            explained_by=label,
            shares=shares,
            share_boot={f: np.array([r[0][f] for r in boot]) for f in shares},
            pd=pd,
            pd_boot=[np.array([r[1][j] for r in boot]) for j in range(len(grids))],
            ale=ale,
            ale_boot=[np.array([r[2][j] for r in boot]) for j in range(len(grids))],
            importance=importance,
            support=[
                data_support(X[curves["curve_at"]][curves["curve_where"][context], j], g)
                for j, g in enumerate(grids)
            ],
            placebo={family: found[context] for family, found in placebo.items()},
        )
    return out


def _placebo(table, config, fit_rows, where, bar) -> dict[str, dict[str, np.ndarray]]:
    """Per placebo family and context, the family's SHAP share in each refit with its columns
    shuffled across ``fit_rows``, or within their deciles of observed trips (one joint
    permutation per refit; the model seed is the point fit's, so only the shuffle differs)."""
    X, y = table.X[fit_rows], table.y[fit_rows]
    strata = None
    if config.placebo.strata == "trip_count":
        strata = quantile_bins(table.observed_trips[fit_rows], TRIP_COUNT_STRATA)
    found = {}
    for k, family in enumerate(config.placebo_families):
        shares = {context: np.empty(config.placebo.refits) for context in where}
        for r in range(config.placebo.refits):
            rng = np.random.default_rng([config.seed, PLACEBO_STREAM, k, r])
            shuffled = shuffle_columns(X, table.families[family], rng, strata)
            values, _ = shap_values(_boosting(config, config.seed).fit(shuffled, y), shuffled)
            for context, rows in where.items():
                shares[context][r] = family_shares(values[rows], table.families)[family]
            bar.advance(1)
        found[family] = shares
    return found


def _fit(table: DemandTable, config: DemandJobConfig, rows: np.ndarray, seed: int):
    return _boosting(config, seed).fit(table.X[rows], table.y[rows])


def _stratified_resample(rows: np.ndarray, strata: np.ndarray, rng) -> np.ndarray:
    parts = [rng.choice(rows[strata == s], size=(strata == s).sum()) for s in np.unique(strata)]
    return np.concatenate(parts)


def _curve_rows(where: dict, limit: int, rng) -> dict:
    """At most ``limit`` rows of each context (seeded, the same for every replicate) for ICE
    and ALE, which cost ``len(grid)`` predictions per row; SHAP uses every row.

    Returns ``curve_at`` (positions in the scope's rows) and ``curve_where`` (each context's
    positions within ``curve_at``).
    """
    chosen = {
        c: rows if len(rows) <= limit else np.sort(rng.choice(rows, limit, replace=False))
        for c, rows in where.items()
    }
    curve_at = np.unique(np.concatenate(list(chosen.values())))
    return {
        "curve_at": curve_at,
        "curve_where": {c: np.searchsorted(curve_at, rows) for c, rows in chosen.items()},
    }


def _explain(model, X, families, grids, where, curve_at, curve_where) -> dict:
    """SHAP on every row and ICE / ALE local effects on the curve rows, once per model, then
    summarised per context."""
    values, _ = shap_values(model, X)
    X_curves = X[curve_at]
    ice = [ice_curves(model.predict, X_curves, j, grid) for j, grid in enumerate(grids)]
    local = [ale_local_effects(model.predict, X_curves, j, grid) for j, grid in enumerate(grids)]
    found = {}
    for context, rows in where.items():
        at = curve_where[context]
        pd = [curves[at].mean(axis=0) for curves in ice]
        ale = [
            accumulated_local_effects(bins[at], effects[at], len(grid))
            for (bins, effects), grid in zip(local, grids, strict=True)
        ]
        importance = np.abs(values[rows]).mean(axis=0)
        found[context] = (family_shares(values[rows], families), pd, ale, importance)
    return found


def _heterogeneity(table, explanations, grids, alpha: float) -> list[dict]:
    """Per feature and pair of contexts: where centred PD / ALE curves of the pooled model
    differ beyond their interval (paired by bootstrap replicate).

    Partial dependence is compared on the whole grid; ALE only where both contexts have data,
    since outside its own range a context's ALE is flat by construction, not by evidence.
    """
    contexts = _present_contexts(table)
    family_of = {j: f for f, columns in table.families.items() for j in columns}
    rows = []
    for j, name in enumerate(table.feature_names):
        for i, a in enumerate(contexts):
            for b in contexts[i + 1 :]:
                first, second = explanations[a], explanations[b]
                row = {"feature": name, "family": family_of[j], "contexts": f"{a} vs {b}"}
                both = first.support[j] & second.support[j]
                for kind, support in (("pd", None), ("ale", both)):
                    found = curve_difference(
                        getattr(first, f"{kind}_boot")[j],
                        getattr(second, f"{kind}_boot")[j],
                        alpha,
                        support,
                    )
                    row[f"{kind}_points"] = found["points_compared"]
                    row[f"{kind}_share_differing"] = found["share_of_grid_differing"]
                    row[f"{kind}_max_abs_difference"] = found["max_abs_difference"]
                    row[f"{kind}_differs_on"] = _ranges(grids[j], found["differs"])
                rows.append(row)
    return rows


def _ranges(grid: np.ndarray, mask: np.ndarray) -> str:
    """Grid intervals where ``mask`` holds, e.g. ``"0.12-0.40, 0.9-1.3"``."""
    spans, start = [], None
    for k, flag in enumerate([*mask, False]):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            spans.append(f"{grid[start]:.3g}-{grid[k - 1]:.3g}")
            start = None
    return ", ".join(spans)
