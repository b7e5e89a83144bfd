"""The typed config of ``winnow route eval`` (and of the quality benchmark that reuses it)."""

from __future__ import annotations

from pydantic import Field

from winnow.common.config import Config

__all__ = ["DataConfig", "EstimatorConfig", "FeatureConfig", "RouteEvalConfig"]


class DataConfig(Config):
    """RouterBench from the shipped data, or any table in its column convention."""

    source: str = Field("routerbench", description="'routerbench' or a CSV/Parquet path")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="for a table without a test split")


class FeatureConfig(Config):
    backend: str = Field("tfidf", description="'tfidf', 'minilm' or a sentence-transformers id")
    strip_shared_prefix: bool = True
    cache_dir: str = ".cache/winnow/embeddings"


class EstimatorConfig(Config):
    kind: str = Field("knn", pattern="^(constant|knn|logistic|mf)$")
    k: int = Field(25, ge=1, description="neighbours, for kind=knn")


class RouteEvalConfig(Config):
    """Everything ``winnow route eval`` needs; defaults reproduce the documented table."""

    seed: int = 0
    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    validation_fraction: float = Field(0.25, gt=0, lt=1)
    batch_size: int = Field(50, ge=2)
    capacity_share: float = Field(
        0.25, gt=0, le=1, description="each model serves at most this share of a batch"
    )
    budget_levels: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 0.75],
        min_length=1,
        description="per-query budgets, as fractions from the cheapest to the best-quality cost",
    )
    streams: list[str] = Field(default_factory=lambda: ["random", "task", "adversarial"])
    kappa_grid: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])
    gamma_grid: list[float] = Field(default_factory=lambda: [0.0, 2.0, 5.0, 10.0])
    pacing_steps: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0, 4.0],
        min_length=1,
        description="per-query paced: step sizes of the price update, chosen on validation",
    )
    constrained_prices: list[float] = Field(
        default_factory=lambda: [0.0, 0.03, 0.1, 0.3, 1.0, 3.0],
        min_length=1,
        description="per-query constrained: lam x budget per query, chosen on validation "
        "(the calibrated lam is always a candidate)",
    )
