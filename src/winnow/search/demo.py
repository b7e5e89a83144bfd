"""The search step of ``winnow demo``: retrieval on a slice of the shipped MS MARCO subset."""

from __future__ import annotations

from winnow.common.config import load_config
from winnow.common.report import ReportSection
from winnow.common.runs import RunDir
from winnow.search.config import SearchConfig
from winnow.search.jobs import retrieval_section

__all__ = ["run_demo"]


def run_demo(run: RunDir, quiet: bool = False) -> ReportSection:
    """The test queries over their judged passages plus distractors, 600 passages in all: the
    embedding takes well under a minute on 2 cores (cached after the first run)."""
    config = load_config(SearchConfig, overrides=["data.max_passages=600"])
    return retrieval_section(config, run, quiet)
