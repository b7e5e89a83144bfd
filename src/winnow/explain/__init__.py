"""explain: statistically sound explanation and inference for black-box models.

- :class:`StableLimeExplainer` (S-LIME): LIME whose sample size is chosen by a CLT test at each
  LARS step, so that repeated explanations select the same features;
  :class:`LimeTabularExplainer` is the same behind ``lime``'s arguments and result methods.
- :class:`VForestRegressor` / :class:`VForestClassifier`: forests of with-replacement subsamples
  (V-statistics) with bias-corrected (optionally calibrated) variance estimates and confidence
  intervals; :class:`CoverageJobConfig` and :func:`run_coverage` check their coverage by
  simulation.
- Ridesourcing demand: :func:`aggregate_trips` (raw portal trips -> counts, DuckDB),
  :func:`build_demand_table` and :func:`analyse_demand` (SHAP family shares and effect curves
  per spatial context, with bootstrap intervals).

Names import lazily so that ``winnow explain --help`` does not load scikit-learn.
"""

from importlib import import_module

__all__ = [
    "CoverageJobConfig",
    "DemandJobConfig",
    "LimeTabularExplainer",
    "StableLimeExplainer",
    "TripSource",
    "VForestClassifier",
    "VForestRegressor",
    "aggregate_trips",
    "analyse_demand",
    "build_demand_table",
    "run_coverage",
]

_HOMES = {
    "StableLimeExplainer": "winnow.explain.slime",
    "LimeTabularExplainer": "winnow.explain.lime_compat",
    "CoverageJobConfig": "winnow.explain.coverage",
    "run_coverage": "winnow.explain.coverage",
    "VForestRegressor": "winnow.explain.vforest",
    "VForestClassifier": "winnow.explain.vforest",
    "TripSource": "winnow.explain.trips",
    "aggregate_trips": "winnow.explain.trips",
    "DemandJobConfig": "winnow.explain.demand",
    "build_demand_table": "winnow.explain.demand",
    "analyse_demand": "winnow.explain.demand_models",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'winnow.explain' has no attribute {name!r}")
