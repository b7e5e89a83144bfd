"""The main job: a short run of every capability on shipped data, gathered in one report.

Each capability that exists offers ``winnow.<capability>.demo.run_demo(run, quiet)``, which
writes its plots into the shared run folder and returns a :class:`ReportSection`. A capability whose
extra is missing is skipped with the line that installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from winnow.common.extras import missing_modules
from winnow.common.report import ReportSection
from winnow.common.runs import RunDir
from winnow.doctor import collect_checks

__all__ = ["CAPABILITIES", "DemoResult", "available_steps", "run_demo"]

CAPABILITIES: tuple[str, ...] = ("distill", "route", "search", "explain")


@dataclass
class DemoResult:
    """Where the demo wrote its report, and what ran or was skipped."""

    run: RunDir
    report: Path
    ran: list[str]
    skipped: dict[str, str]


def available_steps(capabilities: Sequence[str] = CAPABILITIES) -> tuple[dict, dict[str, str]]:
    """Split capabilities into runnable demo steps and skipped ones (with the reason)."""
    steps: dict[str, Callable[[RunDir, bool], ReportSection]] = {}
    skipped: dict[str, str] = {}
    for name in capabilities:
        if importlib.util.find_spec(f"winnow.{name}") is None or (
            importlib.util.find_spec(f"winnow.{name}.demo") is None
        ):
            skipped[name] = "no demo step yet"
            continue
        missing = missing_modules(name)
        if missing:
            skipped[name] = (
                f"missing {', '.join(missing)}; install with pip install 'winnow[{name}]'"
            )
            continue
        steps[name] = importlib.import_module(f"winnow.{name}.demo").run_demo
    return steps, skipped


def run_demo(
    root: str | Path = "runs",
    quiet: bool = False,
    capabilities: Sequence[str] = CAPABILITIES,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run every available demo step into one run folder and write ``report.html``."""
    steps, skipped = available_steps(capabilities)
    with RunDir("demo", root=root, seed=0) as run:  # a failure is recorded in run.json
        sections, summary = [], {}
        for name, reason in skipped.items():
            log(f"skip {name}: {reason}")
        for name, step in steps.items():
            log(f"run  {name} ...")
            started = time.perf_counter()
            section = step(run, quiet)
            seconds = time.perf_counter() - started
            summary[name] = {**section.summary, "seconds": round(seconds, 2)}
            sections.append(f"## {name}\n\n_{seconds:.1f} s_\n\n{section.markdown}")
            log(f"done {name} in {seconds:.1f} s")
        run.write_summary({"ran": list(steps), "skipped": skipped, "capabilities": summary})
        report = run.write_report(_report_markdown(sections, skipped), title="winnow demo")
    return DemoResult(run=run, report=report, ran=list(steps), skipped=skipped)


def _report_markdown(sections: list[str], skipped: dict[str, str]) -> str:
    env = "\n".join(
        f"| {check.name} | {check.status} | {check.detail} |" for check in collect_checks()
    )
    skipped_lines = "\n".join(f"- **{name}**: {reason}" for name, reason in skipped.items())
    parts = [
        "# winnow demo\n",
        "A short run of each capability on shipped data.\n",
        *sections,
        "## Skipped\n\n" + (skipped_lines or "_(nothing)_") + "\n",
        "## Environment\n\n| check | status | detail |\n| --- | --- | --- |\n" + env + "\n",
    ]
    return "\n".join(parts)
