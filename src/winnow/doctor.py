"""`winnow doctor`: what this installation can run, as rows of (check, status, detail).

A row's status is ``ok``, ``unverified`` (a data set folder without SHA256SUMS: present, but
nothing to check its files against), ``not required`` (missing, but no required extra needs
it), ``missing`` or ``failed``. Only the last two fail the doctor, so scripts can run
``winnow doctor && make demo``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import winnow
from winnow.common.data import (
    SHIPPED_DATASETS,
    data_roots,
    find_dataset,
    list_datasets,
    verify_checksums,
)
from winnow.common.exceptions import InputError
from winnow.common.extras import EXTRA_MODULES, missing_modules

__all__ = ["PASSING", "Check", "collect_checks"]

PASSING = ("ok", "unverified", "not required")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table."""

    name: str
    status: str
    detail: str

    @property
    def ok(self) -> bool:
        """False for what fails the doctor (exit code 1): something missing or failed."""
        return self.status in PASSING


def collect_checks(required: Sequence[str] | None = None) -> list[Check]:
    """Python, winnow, torch and devices, each extra, and each data set.

    ``required`` names the extras that must be installed, and so the data sets their jobs read
    (default: every extra, as ``make install`` installs them all).
    """
    required = list(EXTRA_MODULES) if not required else list(required)
    unknown = [name for name in required if name not in EXTRA_MODULES]
    if unknown:
        raise InputError(
            f"unknown extra {', '.join(unknown)}; choose from {', '.join(EXTRA_MODULES)}"
        )
    checks = [
        Check("python", "ok" if sys.version_info >= (3, 10) else "failed", sys.version.split()[0]),
        Check("winnow", "ok", winnow.__version__),
        Check("cpu", "ok", f"{os.cpu_count()} cores, {platform.machine()}"),
        *_torch_checks(any("torch" in EXTRA_MODULES[name] for name in required)),
    ]
    for extra in EXTRA_MODULES:
        missing = missing_modules(extra)
        if not missing:
            checks.append(Check(f"extra [{extra}]", "ok", "installed"))
            continue
        status = "missing" if extra in required else "not required"
        detail = f"missing {', '.join(missing)}: pip install 'winnow[{extra}]'"
        checks.append(Check(f"extra [{extra}]", status, detail))
    checks.extend(_data_checks(required))
    return checks


def _torch_checks(needed: bool) -> list[Check]:
    if importlib.util.find_spec("torch") is None:
        status = "missing" if needed else "not required"
        return [Check("torch", status, "not installed: make install (or pip install torch)")]
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        gpu = f"{torch.cuda.device_count()} CUDA device(s): {names}"
    else:
        gpu = "none (CPU only)"
    return [Check("torch", "ok", torch.__version__), Check("gpu", "ok", gpu)]


def _data_checks(required: list[str]) -> list[Check]:
    """The shipped data sets (missing ones too), then any other folder in the data root."""
    checks = []
    searched = ", ".join(str(root) for root in data_roots())
    for name, extra in SHIPPED_DATASETS.items():
        folder = find_dataset(name)
        if folder is not None:
            checks.append(_data_check(name, folder))
        else:
            status = "missing" if extra in required else "not required"
            checks.append(Check(f"data {name}", status, f"not found; searched {searched}"))
    others = [r.folder for r in list_datasets() if r.folder.name not in SHIPPED_DATASETS]
    return checks + [_data_check(folder.name, folder) for folder in others]


def _data_check(name: str, folder: Path) -> Check:
    report = verify_checksums(folder)
    if report.verdict == "unverified":
        detail = f"no SHA256SUMS, files not checked, at {folder}"
    elif report.verdict == "ok":
        detail = f"{report.listed} files match SHA256SUMS at {folder}"
    else:
        problems = [
            f"{label}: {', '.join(files)}"
            for label, files in (("changed", report.mismatched), ("missing", report.missing))
            if files
        ]
        detail = f"{'; '.join(problems)} at {folder}"
    return Check(f"data {name}", report.verdict, detail)
