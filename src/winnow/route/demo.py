"""The route step of ``winnow demo``: batch vs per-query routing on the shipped RouterBench."""

from __future__ import annotations

from winnow.common.config import load_config
from winnow.common.report import ReportSection
from winnow.common.runs import RunDir
from winnow.route.jobs import RouteEvalConfig, route_eval_section

__all__ = ["run_demo"]


def run_demo(run: RunDir, quiet: bool = False) -> ReportSection:
    """Two budget levels, three streams, TF-IDF features: well under a minute on 2 cores."""
    config = load_config(
        RouteEvalConfig,
        overrides=["budget_levels=[0.25, 0.5]", "kappa_grid=[0, 1]", "gamma_grid=[0, 5]"],
    )
    return route_eval_section(config, run, quiet)
