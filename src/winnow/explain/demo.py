"""The explain step of ``winnow demo``: both jobs, small, on the shipped Chicago table."""

from __future__ import annotations

from winnow.common.config import load_config
from winnow.common.report import ReportSection
from winnow.common.runs import RunDir
from winnow.explain.demand import DemandJobConfig
from winnow.explain.demand_report import demand_section
from winnow.explain.jobs import ForestJobConfig, SlimeJobConfig, forest_section, slime_section

__all__ = ["run_demo"]


def run_demo(run: RunDir, quiet: bool = False) -> ReportSection:
    """S-LIME on two community areas, a 500-tree V-forest and the demand analysis with 30
    bootstrap refits; under a minute on 2 cores."""
    slime_config = load_config(
        SlimeJobConfig, overrides=["instances=['32', '76']", "repeats=5", "model.n_estimators=200"]
    )
    forest_config = load_config(ForestJobConfig, overrides=["forest.n_estimators=500"])
    slime = slime_section(slime_config, run, quiet)
    forest = forest_section(forest_config, run, quiet)
    demand = demand_section(load_config(DemandJobConfig, overrides=["bootstrap=30"]), run, quiet)
    markdown = (
        "### S-LIME: which features drive rideshare demand at a community area\n\n"
        f"{slime.markdown}\n\n### V-statistic forest: demand with confidence intervals\n\n"
        f"{forest.markdown}\n\n### Ridesourcing demand across airport, downtown and "
        f"neighbourhood areas\n\n{demand.markdown}"
    )
    summary = {"slime": slime.summary, "forest": forest.summary, "demand": demand.summary}
    return ReportSection(markdown, summary)
