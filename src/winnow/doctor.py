"""`winnow doctor`: what this installation can run, as rows of (check, status, detail)."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from dataclasses import dataclass

import winnow
from winnow.common.data import data_roots, list_datasets
from winnow.common.extras import EXTRA_MODULES, missing_modules

__all__ = ["Check", "collect_checks"]


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table; ``ok`` is False for what needs fixing."""

    name: str
    ok: bool
    detail: str


def collect_checks() -> list[Check]:
    """Python, winnow, torch and devices, each extra, and each shipped data set."""
    checks = [
        Check("python", sys.version_info >= (3, 10), platform.python_version()),
        Check("winnow", True, winnow.__version__),
        Check("cpu", True, f"{os.cpu_count()} cores, {platform.machine()}"),
        *_torch_checks(),
    ]
    for extra in EXTRA_MODULES:
        missing = missing_modules(extra)
        detail = (
            "installed"
            if not missing
            else f"missing {', '.join(missing)}: pip install 'winnow[{extra}]'"
        )
        checks.append(Check(f"extra [{extra}]", not missing, detail))
    checks.extend(_data_checks())
    return checks


def _torch_checks() -> list[Check]:
    if importlib.util.find_spec("torch") is None:
        return [Check("torch", False, "not installed: make install (or pip install torch)")]
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        gpu = f"{torch.cuda.device_count()} CUDA device(s): {names}"
    else:
        gpu = "none (CPU only)"
    return [Check("torch", True, torch.__version__), Check("gpu", True, gpu)]


def _data_checks() -> list[Check]:
    reports = list_datasets()
    if not reports:
        searched = ", ".join(str(root) for root in data_roots())
        return [Check("data", False, f"no data root found; searched {searched}")]
    return [Check(f"data {r.folder.name}", r.ok, f"{r.status} at {r.folder}") for r in reports]
