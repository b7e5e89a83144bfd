"""The explain jobs: S-LIME stability on a fitted black box, and forest confidence intervals.

Each job is a pipeline: it composes the pure parts (table loading, estimators, explainers,
plots) and writes into a :class:`~winnow.common.runs.RunDir`. ``slime_section`` and
``forest_section`` add their plots to a given run and return a report section, so the CLI and
the demo share them; ``run_job`` makes a run folder of its own for one job.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from winnow.common.config import Config
from winnow.common.exceptions import WinnowError
from winnow.common.progress import track_progress
from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir, run_section
from winnow.explain.coverage import CoverageJobConfig, coverage_section
from winnow.explain.demand import DemandJobConfig
from winnow.explain.demand_report import demand_section
from winnow.explain.exceptions import ExplainInputError
from winnow.explain.slime import SlimeParams, StableLimeExplainer, mean_pairwise_jaccard
from winnow.explain.tables import TableConfig, load_table

__all__ = ["ForestJobConfig", "SlimeJobConfig", "forest_section", "run_job", "slime_section"]


class BlackBoxConfig(Config):
    """The model to explain: a scikit-learn random forest regressor."""

    n_estimators: int = Field(300, ge=1)
    min_samples_leaf: int = Field(2, ge=1)


class SlimeJobConfig(Config):
    """``winnow explain slime``: explain a few rows repeatedly and measure stability."""

    seed: int = 0
    data: TableConfig = TableConfig()
    model: BlackBoxConfig = BlackBoxConfig()
    instances: list[str] = Field(
        default_factory=lambda: ["32", "8", "76"],
        min_length=1,
        description="row ids (data.id_column) to explain; default: Loop, Near North Side, O'Hare",
    )
    repeats: int = Field(10, ge=2, description="explanations per row, each with its own seed")
    # Sampling around the row, not the data mean: the rows of interest (the Loop, O'Hare) lie far
    # from the mean, where LIME's default samples get almost no kernel weight.
    explainer: SlimeParams = SlimeParams(
        num_features=4, n_init=500, n_max=8000, sample_around_instance=True
    )

    @model_validator(mode="after")
    def _seed_comes_from_the_job(self):
        if self.explainer.random_state is not None:
            raise ValueError(
                "explainer.random_state is set by the job (repeat r uses seed + r); "
                "remove it and set seed instead"
            )
        return self


class VForestParams(Config):
    """Parameters of :class:`~winnow.explain.vforest.VForestRegressor` used by the forest job."""

    n_estimators: int = Field(1000, ge=10)
    subsample_size: float = Field(0.3, gt=0, description="k: a fraction of n if <= 1, else rows")
    variance: str = Field(
        "ij_v_calibrated", pattern="^(ij_v_calibrated|ij_v|internal|internal_corrected)$"
    )
    min_samples_leaf: int = Field(1, ge=1)
    n_jobs: int | None = 1


class ForestJobConfig(Config):
    """``winnow explain forest``: predictions with confidence intervals from a V-forest."""

    seed: int = 0
    data: TableConfig = TableConfig()
    forest: VForestParams = VForestParams()
    alpha: float = Field(0.05, gt=0, lt=1, description="1 - confidence level of the intervals")
    ribbon_feature: str = "job_density_km2"
    grid_points: int = Field(30, ge=2)
    cv_folds: int = Field(5, ge=2)


def slime_section(config: SlimeJobConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Fit the black box, explain each instance ``repeats`` times, compare with fixed-n LIME."""
    from sklearn.ensemble import RandomForestRegressor

    from winnow.explain.plots import plot_explanation

    table = load_table(config.data)
    model = RandomForestRegressor(
        n_estimators=config.model.n_estimators,
        min_samples_leaf=config.model.min_samples_leaf,
        oob_score=True,
        random_state=config.seed,
        n_jobs=1,
    ).fit(table.X, table.y)
    params = config.explainer.model_dump(exclude={"random_state"})
    stable = StableLimeExplainer(table.X, table.feature_names, **params)
    fixed = StableLimeExplainer(
        table.X, table.feature_names, **{**params, "n_max": params["n_init"]}
    )
    rows, parts = [], []
    with track_progress("S-LIME", total=len(config.instances), quiet=quiet) as bar:
        for identifier in config.instances:
            x = table.X[table.row(identifier)]
            seeds = [config.seed + r for r in range(config.repeats)]
            ours = [stable.explain_instance(x, model.predict, random_state=s) for s in seeds]
            lime = [fixed.explain_instance(x, model.predict, random_state=s) for s in seeds]
            plot = run.save_plot(plot_explanation(ours[0]), f"slime_{identifier}")
            rows.append(_stability_row(identifier, ours, lime, params["num_features"]))
            parts.append(_explanation_markdown(identifier, ours[0], plot.name))
            bar.advance(1, row=identifier)
    summary = {"oob_r2": float(model.oob_score_), "instances": rows}
    markdown = "\n".join(
        [
            f"Black box: random forest on `{table.target_name}` of {len(table.y)} rows "
            f"(out-of-bag R² {model.oob_score_:.3f}). Each row is explained {config.repeats} "
            "times with different seeds; *fixed n* is the same explainer without the test "
            f"(always {params['n_init']} samples, as LIME). Jaccard@k is the mean pairwise "
            "overlap of the top-k features across repeats (1 = always the same).\n",
            markdown_table(rows),
            *parts,
        ]
    )
    return ReportSection(markdown, summary)


def _stability_row(identifier: str, ours: list, lime: list, num_features: int) -> dict:
    ks = range(1, num_features + 1)
    ranked_ours = [e.ranked_features for e in ours]
    ranked_lime = [e.ranked_features for e in lime]
    return {
        "row": identifier,
        "jaccard@k S-LIME": " ".join(f"{mean_pairwise_jaccard(ranked_ours, k):.2f}" for k in ks),
        "jaccard@k fixed n": " ".join(f"{mean_pairwise_jaccard(ranked_lime, k):.2f}" for k in ks),
        "mean n S-LIME": float(np.mean([e.n_samples for e in ours])),
        "converged": f"{sum(e.converged for e in ours)}/{len(ours)}",
    }


def _explanation_markdown(identifier: str, explanation, plot_name: str) -> str:
    weights = [{"feature": n, "weight": w} for n, w in explanation.as_list()]
    return (
        f"\n### Row {identifier}\n\n"
        f"n = {explanation.n_samples}, converged = {explanation.converged}, "
        f"local R² = {explanation.score:.3f}\n\n"
        f"![S-LIME {identifier}](plots/{plot_name})\n\n"
        + markdown_table(weights)
        + "\nTests before each LARS step (first seed):\n\n"
        + markdown_table(explanation.test_table(), digits=3)
    )


def forest_section(config: ForestJobConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Fit a V-forest, report intervals, the variance split, CV R² and a CI ribbon."""
    from sklearn.model_selection import KFold, cross_val_score

    from winnow.explain.plots import plot_forest_ribbon
    from winnow.explain.vforest import VForestRegressor

    table = load_table(config.data)
    if config.ribbon_feature not in table.feature_names:
        raise ExplainInputError(
            f"ribbon_feature {config.ribbon_feature!r} is not one of data.features "
            f"({', '.join(table.feature_names)})"
        )
    size = config.forest.subsample_size
    params = {
        **config.forest.model_dump(),
        "subsample_size": size if size <= 1 else int(size),
        "random_state": config.seed,
    }
    with track_progress("V-forest", total=3, quiet=quiet) as bar:
        folds = KFold(config.cv_folds, shuffle=True, random_state=config.seed)
        cv_r2 = cross_val_score(VForestRegressor(**params), table.X, table.y, cv=folds)
        bar.advance(1, cv_r2=float(cv_r2.mean()))
        forest = VForestRegressor(**params).fit(table.X, table.y)
        variance = forest.prediction_variance(table.X)
        interval = forest.predict_interval(table.X, alpha=config.alpha)
        bar.advance(1)
        column = table.feature_names.index(config.ribbon_feature)
        grid, grid_x = _ribbon_grid(table.X, column, config.grid_points)
        # with the table's rows, so the calibrated variance has a batch to fit its prior on
        grid_interval = forest.predict_interval(np.vstack([grid_x, table.X]), config.alpha)
        grid_interval = grid_interval[: len(grid_x)]
        grid_mean = forest.predict(grid_x)
        figure = plot_forest_ribbon(
            grid,
            grid_mean,
            grid_interval[:, 0],
            grid_interval[:, 1],
            config.ribbon_feature,
            target_name=f"predicted {table.target_name}",
            interval=f"{100 * (1 - config.alpha):g}% confidence interval",
        )
        plot = run.save_plot(figure, f"forest_ribbon_{config.ribbon_feature}")
        bar.advance(1)
    order = np.argsort(-variance.mean)[:10]
    rows = [
        {
            "row": str(table.ids[i]),
            "observed": float(table.y[i]),
            "prediction": float(variance.mean[i]),
            "lower": float(interval[i, 0]),
            "upper": float(interval[i, 1]),
            "sd (sampling)": float(np.sqrt(variance.sampling[i])),
            "sd (trees)": float(np.sqrt(variance.monte_carlo[i])),
            "flag": "degenerate" if variance.degenerate[i] else "",
        }
        for i in order
    ]
    level = 100 * (1 - config.alpha)
    degenerate = [str(table.ids[i]) for i in np.flatnonzero(variance.degenerate)]
    summary = {
        "cv_r2_mean": float(cv_r2.mean()),
        "cv_r2_folds": cv_r2.tolist(),
        "mean_sampling_variance": float(variance.sampling.mean()),
        "mean_monte_carlo_variance": float(variance.monte_carlo.mean()),
        "mean_interval_width": float((interval[:, 1] - interval[:, 0]).mean()),
        "subsample_size": int(forest.subsample_size_),
        "degenerate_rows": degenerate,
    }
    markdown = (
        f"V-statistic forest on `{table.target_name}` ({len(table.y)} rows, "
        f"{config.forest.n_estimators} trees on with-replacement subsamples of "
        f"k = {forest.subsample_size_}, variance `{config.forest.variance}`). "
        f"{config.cv_folds}-fold CV R² {cv_r2.mean():.3f} "
        f"(folds {', '.join(f'{v:.2f}' for v in cv_r2)}). "
        f"Intervals are {level:.0f}% normal intervals for the expected forest prediction; "
        "the variance splits into the sampling part (training data) and the Monte-Carlo part "
        "(finite number of trees).\n\n"
        f"Mean sampling variance {summary['mean_sampling_variance']:.4g}, mean Monte-Carlo "
        f"variance {summary['mean_monte_carlo_variance']:.4g}.\n\n"
        + _degenerate_note(degenerate, len(table.y))
        + "Ten highest predictions:\n\n"
        + markdown_table(rows, digits=3)
        + f"\n![ribbon](plots/{plot.name})\n\n_Other features held at their medians._\n"
    )
    return ReportSection(markdown, summary)


def _degenerate_note(rows: list[str], total: int) -> str:
    """A warning naming the rows whose sampling variance came out at or below zero."""
    if not rows:
        return ""
    shown = ", ".join(rows[:10]) + (", ..." if len(rows) > 10 else "")
    return (
        f"**Warning: {len(rows)} of {total} rows have a degenerate variance** (rows {shown}): "
        "the trees disagree there, but the sampling-variance estimate came out at or below "
        "zero and was clipped, so their intervals rest on the Monte-Carlo part alone and are "
        "too narrow. More trees, or `forest.variance=ij_v_calibrated`, fix this.\n\n"
    )


def _ribbon_grid(X: np.ndarray, column: int, points: int) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(*np.quantile(X[:, column], [0.05, 0.95]), points)
    grid_x = np.tile(np.median(X, axis=0), (points, 1))
    grid_x[:, column] = grid
    return grid, grid_x


JOBS: dict[str, tuple[type[Config], Callable[..., ReportSection], str]] = {
    "slime": (SlimeJobConfig, slime_section, "S-LIME stable explanations"),
    "forest": (ForestJobConfig, forest_section, "V-statistic forest confidence intervals"),
    "demand": (DemandJobConfig, demand_section, "Ridesourcing demand across spatial contexts"),
    "coverage": (CoverageJobConfig, coverage_section, "Coverage of V-forest intervals"),
}


def run_job(name: str, config: Config, root: str | Path = "runs", quiet: bool = False) -> Path:
    """Run one explain job into a new run folder; returns the path of ``report.html``.

    A job stopped by bad input (a :class:`~winnow.common.exceptions.WinnowError`) leaves no run
    folder behind: a folder with a config and no results would pass for a finished run. A
    config marked ``synthetic`` puts "SYNTHETIC DATA" in the report's title.
    """
    _, section_fn, title = JOBS[name]
    if getattr(config, "synthetic", False):
        title = f"SYNTHETIC DATA: {title}"
    started: list[RunDir] = []

    def section(settings: Config, run: RunDir, quiet: bool) -> ReportSection:
        started.append(run)
        return section_fn(settings, run, quiet)

    root_existed = Path(root).exists()
    try:
        return run_section(f"explain-{name}", config, section, title, root, quiet)
    except WinnowError:
        for run in started:
            shutil.rmtree(run.path, ignore_errors=True)
        if not root_existed and Path(root).is_dir() and not any(Path(root).iterdir()):
            Path(root).rmdir()
        raise
