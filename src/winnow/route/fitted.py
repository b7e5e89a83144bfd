"""A quality model fitted on routing data, saved with its features, and served by the proxy.

``winnow route fit`` fits one (:func:`fit_quality_model`): prompt features (TF-IDF + SVD fitted
on the training prompts, or a sentence-transformers encoder such as the bundled MiniLM) and an
estimator of ``route/estimators.py`` (kNN, logistic or matrix factorisation), then saves both
with a manifest: the models it knows, the feature and estimator settings, a SHA-256 of the
training data, and its calibration and routing accuracy on a validation split it never saw.
The proxy loads it once (``proxy.quality_model``) and scores each window's prompts in one batch
(:class:`PoolQuality`); pool models the estimator does not know keep their constant prior.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from winnow.common.config import Config
from winnow.common.runs import atomic_path, atomic_write_text
from winnow.route.config import DataConfig, EstimatorConfig, FeatureConfig
from winnow.route.datasets import RoutingData, shared_prefixes, split_queries
from winnow.route.exceptions import RouteInputError

__all__ = [
    "FittedQuality",
    "PoolQuality",
    "RouteFitConfig",
    "fit_quality_model",
    "load_quality_model",
    "save_quality_model",
]

MODEL_FILE, MANIFEST_FILE = "quality_model.joblib", "manifest.json"


class RouteFitConfig(Config):
    """``winnow route fit``: which data, features and estimator, and where to save."""

    seed: int = 0
    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    validation_fraction: float = Field(0.25, gt=0, lt=1, description="held out for the manifest")
    output_dir: str = Field("models/route/quality", description="folder the model is saved in")


@dataclass
class FittedQuality:
    """Prompt features and a fitted estimator over ``models``: ``predict(prompts)`` gives
    ``(p_hat, sigma)``, each ``[len(prompts), len(models)]``."""

    models: tuple[str, ...]
    backend: str  # "tfidf", or a sentence-transformers model ("minilm" = bundled)
    prefixes: tuple[str, ...]  # shared task prefixes, cut from prompts that start with one
    tfidf: object | None
    estimator: object
    encoder: object | None = dataclasses.field(default=None, repr=False, compare=False)

    def features(self, prompts: Sequence[str]) -> np.ndarray:
        texts = [_strip_known_prefix(str(p), self.prefixes) for p in prompts]
        if self.backend == "tfidf":
            return self.tfidf.transform(texts)
        if self.encoder is None:  # loaded once, on first use
            from winnow.common.embeddings import SentenceEncoder

            self.encoder = SentenceEncoder(self.backend)
        return self.encoder.encode(texts)

    def predict(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        p_hat, sigma = self.estimator.predict(self.features(prompts))
        return np.clip(np.asarray(p_hat, float), 0, 1), np.asarray(sigma, float)


class PoolQuality:
    """The proxy's quality model: the fitted model's columns for the pool models it knows
    (by ``names``, in pool order), the constant ``prior`` for the others."""

    def __init__(
        self, fitted: FittedQuality, names: Sequence[str], prior: Mapping[str, float]
    ) -> None:
        self.fitted = fitted
        self.names = list(names)
        self.prior = np.array([prior[name] for name in self.names], dtype=float)
        self.columns = [
            fitted.models.index(name) if name in fitted.models else -1 for name in self.names
        ]
        if all(column < 0 for column in self.columns):
            raise RouteInputError(
                f"the quality model knows {list(fitted.models)} but the pool is {self.names}; "
                "set each pool model's quality_name to the name the quality model uses"
            )

    def predict(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        n = len(prompts)
        p_hat, sigma = np.tile(self.prior, (n, 1)), np.zeros((n, len(self.names)))
        known = [j for j, column in enumerate(self.columns) if column >= 0]
        fitted_p, fitted_sigma = self.fitted.predict(prompts)
        chosen = [self.columns[j] for j in known]
        p_hat[:, known], sigma[:, known] = fitted_p[:, chosen], fitted_sigma[:, chosen]
        return p_hat, sigma


def fit_quality_model(config: RouteFitConfig, quiet: bool = False) -> tuple[FittedQuality, dict]:
    """Fit on the training part of ``config.data`` less a validation split; the manifest dict
    records the settings, the data hash and the validation metrics."""
    from winnow.route.estimators import calibration_report
    from winnow.route.jobs import load_data, make_estimator

    data, _ = load_data(config.data, config.seed)  # the test part is never read
    train, val = split_queries(
        data, (1 - config.validation_fraction, config.validation_fraction), config.seed
    )
    prefixes = (
        shared_prefixes(train.prompts, train.tasks) if config.features.strip_shared_prefix else {}
    )
    fitted = FittedQuality(
        models=tuple(train.models),
        backend=config.features.backend,
        prefixes=tuple(sorted(set(prefixes.values()), key=len, reverse=True)),
        tfidf=None,
        estimator=None,
    )
    if fitted.backend == "tfidf":
        from winnow.route.embeddings import TfidfEmbedder

        texts = [_strip_known_prefix(p, fitted.prefixes) for p in train.prompts]
        fitted.tfidf = TfidfEmbedder().fit(texts)
    fitted.estimator = make_estimator(config.estimator, config.seed).fit(
        fitted.features(train.prompts), train.quality
    )
    p_hat, _ = fitted.predict(val.prompts)
    calibration = calibration_report(p_hat, val.quality, val.models)
    rows = np.arange(len(val.prompts))
    manifest = {
        "models": list(fitted.models),
        "features": config.features.model_dump(),
        "estimator": config.estimator.model_dump(),
        "data": {
            "source": config.data.source,
            "sha256": _data_hash(train),
            "train_queries": len(train.prompts),
            "validation_queries": len(val.prompts),
        },
        "validation": {
            "mean_brier": float(np.mean([c["brier"] for c in calibration])),
            "mean_ece": float(np.mean([c["ece"] for c in calibration])),
            "argmax_accuracy": float(val.quality[rows, p_hat.argmax(axis=1)].mean()),
            "best_single_model_accuracy": float(val.quality.mean(axis=0).max()),
            "oracle_accuracy": float(val.quality.max(axis=1).mean()),
            "per_model": calibration,
        },
    }
    return fitted, manifest


def save_quality_model(fitted: FittedQuality, manifest: dict, folder: str | Path) -> Path:
    """Write the model and its manifest into ``folder`` (each file atomically)."""
    import joblib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_FILE) as tmp:
        joblib.dump(dataclasses.replace(fitted, encoder=None), tmp)
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return folder


def load_quality_model(folder: str | Path) -> FittedQuality:
    """The model ``save_quality_model`` wrote; one-line errors naming the file otherwise."""
    import joblib

    folder = Path(folder)
    model_file, manifest_file = folder / MODEL_FILE, folder / MANIFEST_FILE
    for path in (model_file, manifest_file):
        if not path.is_file():
            raise RouteInputError(
                f"{path} is missing; make the folder with `winnow route fit --config ...`"
            )
    try:
        manifest = json.loads(manifest_file.read_text())
        fitted = joblib.load(model_file)
    except Exception as exc:  # a corrupt or foreign file: one line, never a traceback
        raise RouteInputError(f"{folder} holds no readable quality model ({exc})") from None
    if not isinstance(fitted, FittedQuality) or list(fitted.models) != manifest.get("models"):
        raise RouteInputError(f"{model_file} does not match {manifest_file}; fit it again")
    return fitted


def _strip_known_prefix(prompt: str, prefixes: Sequence[str]) -> str:
    """``prompt`` without the longest known prefix it starts with (kept whole if then blank)."""
    for prefix in prefixes:  # longest first
        if prompt.startswith(prefix) and prompt[len(prefix) :].strip():
            return prompt[len(prefix) :]
    return prompt


def _data_hash(data: RoutingData) -> str:
    digest = hashlib.sha256()
    for prompt in data.prompts:
        digest.update(prompt.encode("utf-8") + b"\0")
    digest.update(np.ascontiguousarray(data.quality, dtype=np.float64).tobytes())
    digest.update("|".join(data.models).encode())
    return digest.hexdigest()
