"""Coverage harness: do the forest's 95% intervals cover, on functions whose truth is known?

For each known function, training size ``n`` and subsample size ``k``, ``R`` training sets are
drawn; on each, one V-forest of ``max(tree_counts)`` trees is grown and every variance variant
is read from its first ``B`` trees for each ``B`` (trees are i.i.d., so a prefix is a forest of
``B`` trees). The target of the interval is the *expected forest prediction*: its mean over the
``R`` replicates, with their variance as the Monte-Carlo truth. Per variant:

- ``coverage``: share of (replicate, test point) pairs whose interval covers the target, with a
  95% percentile-bootstrap interval that resamples whole replicates (the points of one
  replicate share a training set, so they are not independent trials);
- ``ratio``: mean over points of (mean estimated variance / true variance); 1 is right.

Peers on the same forest: forestci's IJ-U without and with its calibration (``forestci``,
where installed). Peers with a *different estimand*, prediction intervals for a new ``Y`` at the
test point (scored against a fresh draw ``f(x) + noise``): MAPIE's jackknife+-after-bootstrap
and quantile-forest, where installed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from collections.abc import Callable
from importlib.util import find_spec

import numpy as np
from joblib import Parallel, delayed
from pydantic import Field, field_validator
from scipy.stats import norm
from sklearn.base import BaseEstimator, RegressorMixin

from winnow.common.config import Config
from winnow.common.progress import track_progress
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir
from winnow.explain.forest_calibration import MIN_CALIBRATION_POINTS
from winnow.explain.forest_variance import GROUPED_VARIANCES, SAMPLING_VARIANCE
from winnow.explain.vforest import VForestRegressor

__all__ = [
    "KNOWN_FUNCTIONS",
    "CoverageJobConfig",
    "ForestciView",
    "coverage_section",
    "forestci_variance",
    "run_coverage",
    "score_intervals",
]


def _friedman1(X: np.ndarray) -> np.ndarray:
    return (
        10 * np.sin(np.pi * X[:, 0] * X[:, 1])
        + 20 * (X[:, 2] - 0.5) ** 2
        + 10 * X[:, 3]
        + 5 * X[:, 4]
    )


def _steps(X: np.ndarray) -> np.ndarray:
    """Discontinuous, with an interaction: what trees model exactly but forests smooth."""
    return 4.0 * (X[:, 0] > 0.5) + 3.0 * (X[:, 1] > 0.3) * (X[:, 2] > 0.6) + 2.0 * X[:, 3]


def _smooth(X: np.ndarray) -> np.ndarray:
    """A periodic term, a product and a bump: smooth, hard for axis-aligned splits."""
    bump = 3.0 * np.exp(-(((X[:, 3] - 0.5) / 0.2) ** 2))
    return 5.0 * np.sin(2 * np.pi * X[:, 0]) + 4.0 * X[:, 1] * X[:, 2] + bump


# name -> (features, f); X ~ U[0, 1]^p, y = f(X) + N(0, noise^2). The extra features are noise.
KNOWN_FUNCTIONS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "friedman1": (10, _friedman1),
    "steps": (5, _steps),
    "smooth": (6, _smooth),
}
FORESTCI_VARIANTS = ("forestci", "forestci_calibrated")
Y_PEERS = ("mapie_jackknife_plus_ab", "quantile_forest")
_BOOTSTRAP = 1000


class CoverageJobConfig(Config):
    """``winnow explain coverage``: empirical coverage of the forest intervals by simulation."""

    seed: int = 0
    functions: list[str] = Field(default_factory=lambda: ["friedman1", "steps", "smooth"])
    n_train: list[int] = Field(default_factory=lambda: [500])
    subsample_sizes: list[int] = Field(default_factory=lambda: [25, 50, 100])
    tree_counts: list[int] = Field(default_factory=lambda: [500, 1000])
    replicates: int = Field(100, ge=10, description="training sets per setting")
    test_points: int = Field(25, gt=MIN_CALIBRATION_POINTS, description="fixed test points")
    noise: float = Field(1.0, gt=0)
    alpha: float = Field(0.05, gt=0, lt=1)
    variants: list[str] = Field(default_factory=lambda: ["ij_v", "ij_v_calibrated"])
    peers: bool = Field(True, description="forestci, MAPIE, quantile-forest where installed")
    peer_trees: int = Field(100, ge=10, description="resamplings/trees of the Y-interval peers")
    n_jobs: int = 1

    @field_validator("functions")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(KNOWN_FUNCTIONS))
        if unknown:
            raise ValueError(f"unknown functions {unknown}; choose from {sorted(KNOWN_FUNCTIONS)}")
        return names

    @field_validator("variants")
    @classmethod
    def _variants(cls, names: list[str]) -> list[str]:
        allowed = set(SAMPLING_VARIANCE) - GROUPED_VARIANCES
        unknown = sorted(set(names) - allowed)
        if unknown:
            raise ValueError(
                f"unknown or grouped variants {unknown}; choose from {sorted(allowed)} (the "
                "grouped ones grow a different forest: benchmarks/explain/bench_vforest.py)"
            )
        return names


class ForestciView(RegressorMixin, BaseEstimator):
    """The trees of a fitted forest as forestci expects them: ``estimators_``, iteration."""

    def __init__(self, estimators=None):
        self.estimators = estimators

    @property
    def estimators_(self):
        return self.estimators

    @estimators_.setter
    def estimators_(self, value):
        self.estimators = list(value)

    @property
    def n_estimators(self):
        return len(self.estimators)

    @n_estimators.setter
    def n_estimators(self, value):
        pass

    def __iter__(self):
        return iter(self.estimators)


def forestci_variance(
    forest: VForestRegressor, n_train: int, X_test: np.ndarray, calibrate: bool, seed: int
) -> tuple[np.ndarray, float]:
    """forestci's IJ-U sampling variance on the forest's own trees and in-bag counts; seconds."""
    import forestci

    view = ForestciView(list(forest.estimators_))
    inbag = forest.inbag_.T.toarray().astype(np.float64)
    np.random.seed(seed)  # forestci's calibration subsamples trees with the global RNG
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        sampling = forestci.random_forest_error(
            view, (n_train, X_test.shape[1]), X_test, inbag=inbag, calibrate=calibrate
        )
    return sampling, time.perf_counter() - start


def _covered(means: np.ndarray, std: np.ndarray, z: float) -> np.ndarray:
    return np.abs(means - means.mean(axis=0)) <= z * std


def score_intervals(means: np.ndarray, variances: np.ndarray, z: float) -> dict:
    """Ratio and coverage from ``[R, m]`` forest means and variances, target = mean over R."""
    truth = means.var(axis=0, ddof=1)
    std = np.sqrt(np.clip(variances, 0, None))
    covered = _covered(means, std, z)
    ratio = variances.mean(axis=0) / truth
    return {
        "ratio": float(ratio.mean()),
        "coverage": float(covered.mean()),
        "ratio_per_point": ratio,
        "coverage_per_point": covered.mean(axis=0),
        "share_negative": float((variances < 0).mean()),
        "coverage_ci": coverage_interval(means, lambda rows: _covered(means[rows], std[rows], z)),
    }


def _first_trees(forest: VForestRegressor, n_trees: int) -> VForestRegressor:
    """The forest of the first ``n_trees`` trees (a shallow copy sharing the trees)."""
    head = copy.copy(forest)
    head.estimators_ = forest.estimators_[:n_trees]
    head.inbag_ = forest.inbag_[:n_trees]
    return head


def _draw(name: str, n: int, noise: float, rng: np.random.Generator):
    features, function = KNOWN_FUNCTIONS[name]
    X = rng.uniform(size=(n, features))
    return X, function(X) + rng.normal(0, noise, n)


def _replicate(config: CoverageJobConfig, setting: tuple, rep: int, X_test: np.ndarray) -> dict:
    """One training set: per tree count and variant, means and total variances ``[m]``."""
    name, n_train, k = setting
    rng = np.random.default_rng([config.seed, rep, n_train, k, sorted(KNOWN_FUNCTIONS).index(name)])
    X, y = _draw(name, n_train, config.noise, rng)
    forest_seed = int(rng.integers(2**31 - 1))
    forest = VForestRegressor(
        n_estimators=max(config.tree_counts), subsample_size=k, random_state=forest_seed, n_jobs=1
    ).fit(X, y)
    out: dict = {}
    for n_trees in config.tree_counts:
        head = _first_trees(forest, n_trees)
        row: dict = {}
        for variant in config.variants:
            start = time.perf_counter()
            estimate = head.set_params(variance=variant).prediction_variance(X_test)
            row[f"seconds_{variant}"] = time.perf_counter() - start
            row[variant] = estimate.total
            row["mean"] = estimate.mean
        if config.peers and find_spec("forestci"):
            for variant, calibrate in zip(FORESTCI_VARIANTS, (False, True), strict=True):
                sampling, seconds = forestci_variance(head, n_train, X_test, calibrate, rep)
                row[variant] = sampling + estimate.monte_carlo
                row[f"seconds_{variant}"] = seconds
        out[n_trees] = row
    if config.peers:
        y_new = KNOWN_FUNCTIONS[name][1](X_test) + rng.normal(0, config.noise, len(X_test))
        for peer, interval in _y_intervals(config, X, y, X_test, k, forest_seed).items():
            out[peer] = (interval[:, 0] <= y_new) & (y_new <= interval[:, 1])
    return out


def _y_intervals(config, X, y, X_test, k, seed) -> dict[str, np.ndarray]:
    """Prediction intervals for Y from the peers that are installed, ``[m, 2]`` each."""
    from sklearn.tree import DecisionTreeRegressor

    out = {}
    level = 1 - config.alpha
    if find_spec("mapie"):
        from mapie.regression import JackknifeAfterBootstrapRegressor
        from mapie.subsample import Subsample

        resampling = Subsample(config.peer_trees, n_samples=k, replace=True, random_state=seed)
        model = JackknifeAfterBootstrapRegressor(
            DecisionTreeRegressor(random_state=seed), confidence_level=level, resampling=resampling
        ).fit_conformalize(X, y)
        out["mapie_jackknife_plus_ab"] = model.predict_interval(X_test)[1][:, :, 0]
    if find_spec("quantile_forest"):
        from quantile_forest import RandomForestQuantileRegressor

        forest = RandomForestQuantileRegressor(
            n_estimators=config.peer_trees, max_samples=k, random_state=seed
        ).fit(X, y)
        out["quantile_forest"] = forest.predict(
            X_test, quantiles=[config.alpha / 2, 1 - config.alpha / 2]
        )
    return out


def coverage_interval(
    means: np.ndarray, covered_of: Callable[[np.ndarray], np.ndarray], seed: int = 0
) -> list[float]:
    """95% percentile-bootstrap interval of the coverage, resampling replicates.

    ``covered_of(rows)`` gives the ``[r, m]`` coverage indicators of the replicates ``rows``
    (the target, their mean, is recomputed in each resample).
    """
    rng = np.random.default_rng(seed)
    replicates = len(means)
    shares = [
        covered_of(rng.integers(replicates, size=replicates)).mean() for _ in range(_BOOTSTRAP)
    ]
    return [float(v) for v in np.quantile(shares, [0.025, 0.975])]


def run_coverage(config: CoverageJobConfig, quiet: bool = False) -> list[dict]:
    """Every setting's rows: one per (tree count, variant) and one per Y-interval peer."""
    z = float(norm.ppf(1 - config.alpha / 2))
    settings = [
        (name, n, k)
        for name in config.functions
        for n in config.n_train
        for k in config.subsample_sizes
    ]
    rows = []
    with track_progress("coverage", total=len(settings), quiet=quiet) as bar:
        for setting in settings:
            name = setting[0]
            X_test = _draw(name, config.test_points, config.noise, np.random.default_rng(2021))[0]
            replicates = Parallel(n_jobs=config.n_jobs)(
                delayed(_replicate)(config, setting, rep, X_test)
                for rep in range(config.replicates)
            )
            rows.extend(_setting_rows(config, setting, replicates, z))
            bar.advance(1, setting=f"{name} n={setting[1]} k={setting[2]}")
    return rows


def _setting_rows(config, setting, replicates, z) -> list[dict]:
    name, n_train, k = setting
    base = {"function": name, "n_train": n_train, "subsample_size": k}
    rows = []
    for n_trees in config.tree_counts:
        reps = [rep[n_trees] for rep in replicates]
        means = np.stack([r["mean"] for r in reps])
        for variant in [v for v in (*config.variants, *FORESTCI_VARIANTS) if v in reps[0]]:
            scored = score_intervals(means, np.stack([r[variant] for r in reps]), z)
            rows.append(
                base
                | {
                    "n_trees": n_trees,
                    "variant": variant,
                    "estimand": "E[forest prediction]",
                    "coverage": scored["coverage"],
                    "coverage_ci": scored["coverage_ci"],
                    "ratio": scored["ratio"],
                    "median_seconds": float(np.median([r[f"seconds_{variant}"] for r in reps])),
                }
            )
    for peer in [p for p in Y_PEERS if p in replicates[0]]:
        hits = np.stack([rep[peer] for rep in replicates])
        covered = float(hits.mean())
        rows.append(
            base
            | {
                "n_trees": config.peer_trees,
                "variant": peer,
                "estimand": "new Y (prediction interval)",
                "coverage": covered,
                "coverage_ci": coverage_interval(hits, lambda rows, hits=hits: hits[rows]),
                "ratio": None,
                "median_seconds": None,
            }
        )
    return rows


def coverage_table(rows: list[dict]) -> dict:
    """``function -> n -> k -> trees -> variant -> coverage`` (strings as JSON keys)."""
    table: dict = {}
    for row in rows:
        keys = [row["function"], str(row["n_train"]), str(row["subsample_size"])]
        node = table
        for key in [*keys, str(row["n_trees"])]:
            node = node.setdefault(key, {})
        node[row["variant"]] = row["coverage"]
    return table


def plot_coverage(rows: list[dict], alpha: float):
    """Coverage against k per function and tree count, one line per variant."""
    import matplotlib.pyplot as plt

    ours = [r for r in rows if r["estimand"] == "E[forest prediction]"]
    functions = sorted({r["function"] for r in ours})
    trees = sorted({r["n_trees"] for r in ours})
    figure, axes = plt.subplots(
        len(trees), len(functions), figsize=(4 * len(functions), 3 * len(trees)), squeeze=False
    )
    for i, n_trees in enumerate(trees):
        for j, name in enumerate(functions):
            ax = axes[i, j]
            ax.axhspan(0.93, 0.97, color="0.9", label="goal [0.93, 0.97]")
            ax.axhline(1 - alpha, color="0.5", linestyle=":")
            cell = [r for r in ours if r["function"] == name and r["n_trees"] == n_trees]
            for variant in dict.fromkeys(r["variant"] for r in cell):
                line = sorted(
                    (r for r in cell if r["variant"] == variant),
                    key=lambda r: (r["n_train"], r["subsample_size"]),
                )
                ks = [r["subsample_size"] for r in line]
                ax.plot(ks, [r["coverage"] for r in line], marker="o", label=variant)
            ax.set(title=f"{name}, {n_trees} trees", xlabel="subsample size k", ylim=(0.75, 1.0))
            ax.set_ylabel(f"coverage of the {100 * (1 - alpha):.0f}% interval")
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


def coverage_section(config: CoverageJobConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Run the simulation, plot coverage, and report the table."""
    rows = run_coverage(config, quiet=quiet)
    plot = run.save_plot(plot_coverage(rows, config.alpha), "coverage")
    shown = [
        {
            **{key: row[key] for key in ("function", "n_train", "subsample_size", "n_trees")},
            "variant": row["variant"],
            "estimand": row["estimand"],
            "coverage": row["coverage"],
            "95% CI": "{:.3f}-{:.3f}".format(*row["coverage_ci"]),
            "variance ratio": row["ratio"],
        }
        for row in rows
    ]
    markdown = (
        f"{config.replicates} training sets per setting, {config.test_points} fixed test points, "
        f"noise sd {config.noise}. Coverage of the {100 * (1 - config.alpha):.0f}% interval for "
        "the expected forest prediction (the mean over training sets); the Y-interval peers "
        "are scored against a new draw of Y and answer a different question. The CI is a "
        "bootstrap over training sets.\n\n"
        f"![coverage](plots/{plot.name})\n\n" + markdown_table(shown, digits=3)
    )
    return ReportSection(markdown, {"rows": rows, "coverage": coverage_table(rows)})
