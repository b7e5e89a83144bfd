"""The demand job's report: data joins, model accuracy, family shares, effect curves, a map."""

from __future__ import annotations

import warnings

import numpy as np

from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir
from winnow.explain.demand import TRIP_ATTRIBUTES, DemandJobConfig, build_demand_table
from winnow.explain.demand_models import ALL_ROWS, DemandAnalysis, analyse_demand
from winnow.explain.effects import percentile_interval

__all__ = ["demand_section"]

# Built-environment share of SHAP importance reported by Zhang et al. (arXiv 2209.07980).
REFERENCE_BUILT_ENVIRONMENT = {"airport": 0.50, "downtown": 0.47, "neighborhood": 0.41}
SYNTHETIC = "SYNTHETIC DATA"
STRATA_TEXT = {"none": "", "trip_count": " within deciles of observed trips"}


def demand_section(config: DemandJobConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Build the table, analyse it, draw the plots into ``run`` and write the report text."""
    table = build_demand_table(config)
    analysis = analyse_demand(table, config, quiet)
    shares = _share_rows(analysis, config.alpha)
    top = _top_features(analysis, config.curves)
    plots = _draw(analysis, run, shares, top, config)
    heterogeneity = sorted(
        analysis.heterogeneity,
        key=lambda row: -np.nansum([row["pd_share_differing"], row["ale_share_differing"]]),
    )
    summary = {
        "rows": len(table.y),
        "rows_by_context": _counts(table.contexts),
        "level": table.level,
        "unit": table.unit,
        "target": table.target_name,
        "source": table.source_summary,
        "joins": table.joins.entries,
        "cv": analysis.metrics,
        "family_shares": shares,
        "placebo": {"families": config.placebo_families, "refits": config.placebo.refits},
        "heterogeneity": heterogeneity,
        "synthetic": config.synthetic,
    }
    markdown = "\n".join(
        [
            _intro(analysis, config),
            "#### Summary\n",
            markdown_table(_summary_rows(analysis, shares, config.alpha)),
            "#### Data joins\n\nEvery join, with the rows before and after and what was done "
            "with keys that found no match:\n",
            markdown_table(table.joins.entries),
            "#### Model accuracy\n\nShuffled "
            f"{config.cv_folds}-fold cross-validation of `{table.target_name}`. LightGBM is the "
            "explained model; the random forest and ridge regression are references.\n",
            markdown_table(analysis.metrics, digits=3),
            _shares_markdown(shares, list(table.families), plots["family_shares"], config.alpha),
            *(_placebo_markdown(shares, f, plots, config) for f in config.placebo_families),
            _curves_markdown(plots, top),
            "#### Where effects differ between contexts\n\nCentred pooled-model curves of two "
            f"contexts are compared at each grid point; *differs on* lists the ranges where the "
            f"{100 * (1 - config.alpha):.0f}% bootstrap interval of their difference excludes "
            "zero (share = fraction of the points compared). Partial dependence is compared on "
            "the whole grid, ALE only on the points inside both contexts' data (`ale_points`). "
            "Twelve largest:\n",
            markdown_table(heterogeneity[:12], digits=3),
            f"#### Map\n\n![map](plots/{plots['map']})\n\n_Out-of-fold LightGBM predictions at "
            "unit centroids (tract internal points, averaged for areas)._\n",
        ]
    )
    return ReportSection(markdown, summary)


def _counts(contexts: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(contexts, return_counts=True)
    return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


def _summary_rows(analysis: DemandAnalysis, shares: list[dict], alpha: float) -> list[dict]:
    """One line per context: its model, the leading family, top features, and the features
    whose pooled partial dependence differs from another context on at least half the grid."""
    r2 = {(m["scope"], m["model"]): m["cv_r2_mean"] for m in analysis.metrics}
    families = list(analysis.table.families)
    rows = []
    for row in shares:
        context, own = row["context"], row["model"] == "own model"
        lead = max(families, key=lambda f: row[f])
        differing = sorted(
            {
                h["feature"]
                for h in analysis.heterogeneity
                if context in h["contexts"].split(" vs ") and h["pd_share_differing"] >= 0.5
            }
        )
        rows.append(
            {
                "context": context,
                "rows": row["rows"],
                "explained by": row["model"],
                "CV R² of its model": r2.get((ALL_ROWS if not own else context, "lightgbm")),
                "largest family": f"{lead.replace('_', ' ')} {row[lead]:.2f} "
                f"[{row[lead + '_lower']:.2f}, {row[lead + '_upper']:.2f}]",
                "top features": row["top_features"],
                # Heterogeneity is measured on the pooled model's curves only.
                "PD differs from another context": "(see pooled row)"
                if own
                else ", ".join(differing) or "none found",
            }
        )
    return rows


def _intro(analysis: DemandAnalysis, config: DemandJobConfig) -> str:
    table = analysis.table
    counts = _counts(table.contexts)
    small = {c: n for c, n in counts.items() if n < config.min_context_rows}
    text = (
        f"**{SYNTHETIC}: the trips are made up (make_trips.py or a test), not observed. "
        "Every number below describes the generator, not Chicago.**\n\n"
        if config.synthetic
        else ""
    )
    text += (
        f"Demand unit: {table.unit} by {table.level.replace('_', ' ')}, {len(table.y)} rows "
        f"({', '.join(f'{c}: {n}' for c, n in counts.items())}); target `{table.target_name}`; "
        f"{config.bootstrap} bootstrap refits per model for the intervals. Source: "
        f"{', '.join(f'{k} = {v}' for k, v in table.source_summary.items())}.\n"
    )
    if small:
        text += (
            f"\n**Small sample.** {', '.join(f'{c} has {n} rows' for c, n in small.items())}: "
            f"fewer than {config.min_context_rows}, so no model of its own; it is explained "
            "through the pooled model, which learns it mostly from the other contexts. Read its "
            "intervals, not its point estimates: with so few rows they only show how much the "
            "pooled fit moves under resampling, not the spread of a population.\n"
        )
    return text


def _share_rows(analysis: DemandAnalysis, alpha: float) -> list[dict]:
    explained = [*analysis.pooled.values(), *analysis.own.values()]
    rows = []
    for explanation in explained:
        row = {
            "context": explanation.context,
            "rows": explanation.rows,
            "model": explanation.explained_by,
        }
        for family, share in explanation.shares.items():
            lower, upper = explanation.share_interval(family, alpha)
            row[family] = share
            row[f"{family}_lower"] = lower
            row[f"{family}_upper"] = upper
        for family in explanation.placebo:
            lower, upper = explanation.placebo_interval(family, alpha)
            row[f"{family}_placebo"] = float(np.mean(explanation.placebo[family]))
            row[f"{family}_placebo_lower"] = lower
            row[f"{family}_placebo_upper"] = upper
            row[f"{family}_placebo_p"] = explanation.placebo_p_value(family)
        order = np.argsort(-explanation.importance)[:3]
        row["top_features"] = ", ".join(analysis.table.feature_names[j] for j in order)
        rows.append(row)
    return rows


def _shares_markdown(rows: list[dict], families: list[str], plot: str, alpha: float) -> str:
    shown = [
        {
            "context": row["context"],
            "rows": row["rows"],
            "model": row["model"],
            **{
                family.replace("_", " "): f"{row[family]:.2f} "
                f"[{row[family + '_lower']:.2f}, {row[family + '_upper']:.2f}]"
                for family in families
            },
            "paper: built environment": REFERENCE_BUILT_ENVIRONMENT.get(row["context"], ""),
            "top features": row["top_features"],
        }
        for row in rows
    ]
    return (
        "#### Importance by feature family\n\nA family's share is the sum of its features' mean "
        f"|SHAP| over the context's rows, divided by the total; brackets are "
        f"{100 * (1 - alpha):.0f}% percentile bootstrap intervals. The last columns give the "
        "built-environment share Zhang et al. report for tract-to-tract trips (a different unit, "
        "feature list and year: a comparison of direction, not a replication).\n\n"
        + markdown_table(shown)
        + f"\n![family shares](plots/{plot})\n"
    )


def _placebo_markdown(rows: list[dict], family: str, plots: dict, config) -> str:
    """Real against placebo share of one family, and where the real one is not above."""
    level = f"{100 * (1 - config.alpha):.0f}%"
    shown, weak = [], []
    for row in rows:
        above = row[family] > row[f"{family}_placebo_upper"]
        if not above:
            weak.append(f"{row['context']} ({row['model']})")
        shown.append(
            {
                "context": row["context"],
                "rows": row["rows"],
                "model": row["model"],
                "real share": f"{row[family]:.2f} "
                f"[{row[family + '_lower']:.2f}, {row[family + '_upper']:.2f}]",
                "placebo share": f"{row[family + '_placebo']:.2f} "
                f"[{row[family + '_placebo_lower']:.2f}, {row[family + '_placebo_upper']:.2f}]",
                "p": row[f"{family}_placebo_p"],
                "real above placebo": "yes" if above else "**no**",
            }
        )
    name = family.replace("_", " ")
    verdict = _placebo_verdict(family, weak, level, config)
    return (
        f"#### Placebo: {name}\n\nThe models are refitted {config.placebo.refits} times with "
        f"the {name} columns shuffled jointly across units{STRATA_TEXT[config.placebo.strata]} "
        "(same model seed): the share they keep is what the model gives to noise of their "
        f"shape. Real share with its {level} "
        f"bootstrap interval; placebo share as the mean and {level} range of the refits; *p* is "
        "the share of refits (plus one) whose placebo share reached the real one.\n\n"
        + markdown_table(shown, digits=3)
        + f"\n{verdict}\n\n![placebo {name}](plots/{plots['placebo_' + family]})\n"
    )


def _placebo_verdict(family: str, weak: list[str], level: str, config) -> str:
    name, strata = family.replace("_", " "), STRATA_TEXT[config.placebo.strata]
    if weak:
        return (
            f"**The real {name} share is not above the placebo's {level} interval in: "
            f"{', '.join(weak)}.** There the model gives {name} no more importance than it gives "
            f"the same values shuffled{strata}: no evidence that they matter beyond what the "
            "shuffle keeps."
        )
    text = (
        f"The real {name} share is above the placebo's {level} interval everywhere: the values "
        f"carry information about the target{' beyond the number of trips' if strata else ''}."
    )
    averages_trips = set(config.families[family]) & set(TRIP_ATTRIBUTES)
    if averages_trips and not strata:
        text += (
            " That need not be an effect of place: a unit's mean over few trips is noisier "
            "where there are fewer trips, so it can encode the count itself "
            "(`placebo.strata: trip_count` tests that)."
        )
    return text


def _top_features(analysis: DemandAnalysis, count: int) -> list[int]:
    return [int(j) for j in np.argsort(-analysis.pooled[ALL_ROWS].importance)[:count]]


def _draw(analysis: DemandAnalysis, run: RunDir, shares: list[dict], top, config) -> dict:
    """Every figure of the report, saved into ``run``; returns plot key -> file name."""
    from winnow.explain import plots as draw

    table = analysis.table
    labels = [f"{r['context']} (n={r['rows']}, {r['model']})" for r in shares]

    def matrix(families: list[str], suffix: str) -> np.ndarray:
        return np.array([[r[f + suffix] for f in families] for r in shares])

    def bands(families: list[str], suffix: str = "") -> tuple[np.ndarray, ...]:
        return tuple(matrix(families, suffix + end) for end in ("", "_lower", "_upper"))

    figures = {
        "family_shares": draw.plot_family_shares(
            labels, list(table.families), *bands(table.families)
        ),
        "map": draw.plot_demand_map(
            table.lon, table.lat, table.y, analysis.out_of_fold, table.contexts, table.target_name
        ),
    }
    for family in config.placebo_families:
        real, placebo = bands([family]), bands([family], "_placebo")
        figures[f"placebo_{family}"] = draw.plot_placebo_shares(
            labels, family, *(m[:, 0] for m in real), *(m[:, 0] for m in placebo)
        )
    contexts = [c for c in analysis.pooled if c != ALL_ROWS]
    for kind, label in (("pd", "partial dependence"), ("ale", "accumulated local effect")):
        curves = {
            c: [_centred_band(analysis.pooled[c], kind, j, config.alpha) for j in top]
            for c in contexts
        }
        figures[kind] = draw.plot_effect_curves(
            [table.feature_names[j] for j in top],
            [analysis.grids[j] for j in top],
            curves,
            f"centred {label}\nof {table.target_name}",
        )
    plots = {}
    for key, figure in figures.items():
        if config.synthetic:
            draw.mark_synthetic(figure)
        plots[key] = run.save_plot(figure, f"demand_{key}").name
    return plots


def _centred_band(explanation, kind: str, feature: int, alpha: float):
    """The curve and its band, centred; ALE is drawn only where the context has data."""
    curve = getattr(explanation, kind)[feature].copy()
    boot = getattr(explanation, f"{kind}_boot")[feature].copy()
    if kind == "ale":
        outside = ~explanation.support[feature]
        curve[outside], boot[:, outside] = np.nan, np.nan
    with warnings.catch_warnings():  # grid points off the support are all NaN, by design
        warnings.simplefilter("ignore", RuntimeWarning)
        curve = curve - np.nanmean(curve)
        boot = boot - np.nanmean(boot, axis=1, keepdims=True)
        lower, upper = percentile_interval(boot, alpha)
    return curve, lower, upper


def _curves_markdown(plots: dict, top: list[int]) -> str:
    return (
        "#### Nonlinear effects by context\n\n"
        f"The {len(top)} features with the largest pooled mean |SHAP|, on a grid of quantiles "
        "shared by all contexts. Each curve is the pooled model's effect averaged over one "
        "context's rows, centred on its mean over the grid (shapes, not levels, are compared), "
        "with its bootstrap band. Partial dependence sets the feature for every row of the "
        "context; accumulated local effects (ALE) only move rows within their own bin, so they "
        "stay where the context has data and are flat where it has none.\n\n"
        f"![partial dependence](plots/{plots['pd']})\n\n"
        f"![accumulated local effects](plots/{plots['ale']})\n"
    )
