"""explain: statistically sound explanation and inference for black-box models.

- :class:`StableLimeExplainer` (S-LIME): LIME whose sample size is chosen by a CLT test at each
  LARS step, so that repeated explanations select the same features.
- :class:`VForestRegressor` / :class:`VForestClassifier`: forests of with-replacement subsamples
  (V-statistics) with bias-corrected variance estimates and confidence intervals.

Names import lazily so that ``winnow explain --help`` does not load scikit-learn.
"""

from importlib import import_module

__all__ = ["StableLimeExplainer", "VForestClassifier", "VForestRegressor"]

_HOMES = {
    "StableLimeExplainer": "winnow.explain.slime",
    "VForestRegressor": "winnow.explain.vforest",
    "VForestClassifier": "winnow.explain.vforest",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'winnow.explain' has no attribute {name!r}")
