"""The routing proxy's configuration and the quality model it routes by.

Kept apart from :mod:`winnow.route.server` so that a pool and its budgets can be written,
validated and saved, and a quality model built, without fastapi or httpx installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field, SecretStr, field_validator, model_validator

from winnow.common.config import Config
from winnow.route.exceptions import RouteInputError

__all__ = [
    "PROMPT_TOKEN_BOUNDS",
    "ConstantQuality",
    "LedgerConfig",
    "PoolModel",
    "ProxyConfig",
    "QualityModel",
    "Robustness",
    "ServeConfig",
]

PROMPT_TOKEN_BOUNDS: dict[str, Callable[[str], int]] = {
    "utf8_bytes": lambda text: len(text.encode("utf-8")),
    "chars_over_4": lambda text: -(-len(text) // 4),
}
"""Prompt tokens from the prompt fields' JSON text: a bound (``utf8_bytes``) or an estimate."""

MIN_KEY_CHARS = 16
PLACEHOLDER_KEYS = frozenset({"change-me", "changeme", "secret", "password", "test", "key"})
NEW_KEY_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def _from_environment(data: Any, field: str, env_field: str, split: bool) -> Any:
    """``data`` with ``field`` filled from the environment variable named by ``env_field``
    (comma-separated keys when ``split``); the variable must be set and the two exclusive."""
    if not isinstance(data, dict) or data.get(env_field) is None:
        return data
    name = data[env_field]
    if data.get(field):
        raise ValueError(f"give {field} or {env_field}, not both")
    value = os.environ.get(str(name))
    if not value:
        raise ValueError(f"{env_field}: the environment variable {name} is not set or empty")
    keys = [part.strip() for part in value.split(",") if part.strip()] if split else value
    return {**data, field: keys}


# -- configuration ----------------------------------------------------------------------------


class Robustness(Config):
    """How a window's plan treats the quality model's uncertainty ``sigma``."""

    kind: Literal["none", "box", "budgeted"] = Field(
        "none", description="none: plan on p_hat; box: on p_hat - kappa sigma; budgeted: Gamma"
    )
    kappa: float = Field(1.0, ge=0, description="box: standard errors taken off each estimate")
    gamma: float = Field(5.0, ge=0, description="budgeted: requests that may take their worst case")


class PoolModel(Config):
    """One upstream model: where it is, what it costs, how many calls it takes at once."""

    name: str = Field(min_length=1, description="the name clients use and /v1/models lists")
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    upstream_model: str | None = Field(None, description="the upstream's name for it; default name")
    upstream_api_key: SecretStr | None = Field(None, description="sent as Bearer to the upstream")
    upstream_api_key_env: str | None = Field(
        None, description="environment variable holding upstream_api_key (instead of the YAML)"
    )
    input_price_per_token: float = Field(ge=0, description="USD per prompt token")
    output_price_per_token: float = Field(ge=0, description="USD per completion token")
    capacity: int = Field(ge=1, description="calls in flight at once: instances x concurrency")
    quality_name: str | None = Field(
        None, description="this model's name in proxy.quality_model (default: name)"
    )

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any) -> Any:
        return _from_environment(data, "upstream_api_key", "upstream_api_key_env", split=False)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class LedgerConfig(Config):
    """Where the budgets are kept: in this process, or in Redis shared by every replica."""

    backend: Literal["local", "redis"] = Field(
        "local", description="local: one replica; redis: replicas share budgets and capacity"
    )
    url: str = Field("redis://127.0.0.1:6379/0", description="redis: the server (redis-py URL)")
    key_prefix: str = Field(
        "winnow", min_length=1, description="redis: replicas sharing a budget share the prefix"
    )
    reservation_ttl_seconds: float | None = Field(
        None,
        gt=0,
        description="redis: how long an unsettled reservation of a crashed replica holds its "
        "slot before it is charged in full; null = 2 x upstream_timeout_seconds + 30",
    )


class ProxyConfig(Config):
    """Everything the routing proxy needs; secrets are ``SecretStr`` and dump masked."""

    models: list[PoolModel] = Field(min_length=1, description="the pool, in quality-model order")
    api_keys: list[SecretStr] = Field(
        min_length=1, description=f"client keys accepted as Bearer, {MIN_KEY_CHARS}+ characters"
    )
    api_keys_env: str | None = Field(
        None, description="environment variable holding the client keys, comma-separated"
    )
    budget_per_window: float = Field(gt=0, description="USD one window may reserve and spend")
    budget_per_day: float = Field(gt=0, description="USD one UTC day may reserve and spend")
    ledger: LedgerConfig = LedgerConfig()
    window_seconds: float = Field(0.5, ge=0.05, le=5.0, description="longest wait of a window")
    max_batch: int = Field(64, ge=1, le=1024, description="requests that close a window early")
    max_request_bytes: int = Field(1_000_000, ge=1024, description="larger bodies get a 413")
    max_tokens_cap: int = Field(4096, ge=1, description="completion tokens: default and ceiling")
    upstream_timeout_seconds: float = Field(60.0, gt=0, le=600, description="per call phase")
    prompt_token_bound: Literal["utf8_bytes", "chars_over_4"] = Field(
        "utf8_bytes", description="how prompt tokens are bounded, see PROMPT_TOKEN_BOUNDS"
    )
    charge_failed_requests: bool = Field(False, description="charge calls that returned an error")
    metrics_history: int = Field(100, ge=1, le=10_000, description="windows and days in /metrics")
    quality_model: str | None = Field(
        None, description="folder of `winnow route fit`; null = the constant prior_quality"
    )
    robust: Robustness = Robustness()
    plan_mip_gap: float = Field(
        1e-2,
        ge=0,
        le=0.1,
        description="relative optimality gap of each window's plan; on 50 x 11 windows 1e-2 took "
        "10 ms against 58 ms at 1e-3, for 0.015 expected correct answers (docs/route.md)",
    )
    max_waiting: int = Field(1024, ge=1, description="requests queued at once; more get a 429")
    max_wait_seconds: float = Field(
        5.0, ge=0, le=600, description="how long an unplaced request waits for later windows"
    )
    breaker_failures: int = Field(3, ge=1, description="consecutive upstream failures that rest it")
    breaker_cooldown_seconds: float = Field(
        30.0, gt=0, description="first rest of a failing upstream; doubles per failed trial"
    )

    @model_validator(mode="before")
    @classmethod
    def _keys_from_environment(cls, data: Any) -> Any:
        return _from_environment(data, "api_keys", "api_keys_env", split=True)

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, keys: list[SecretStr]) -> list[SecretStr]:
        """Refuse keys anyone could guess; the message never shows a key."""
        for index, key in enumerate(keys):
            value = key.get_secret_value()
            if value.strip().lower() in PLACEHOLDER_KEYS:
                raise ValueError(f"key {index} is a placeholder; replace it ({NEW_KEY_HINT})")
            if len(value) < MIN_KEY_CHARS:
                raise ValueError(
                    f"key {index} has {len(value)} characters, fewer than {MIN_KEY_CHARS}; "
                    f"{NEW_KEY_HINT}"
                )
        return keys

    @model_validator(mode="after")
    def _distinct_names(self) -> ProxyConfig:
        names = [model.name for model in self.models]
        if "auto" in names or len(set(names)) < len(names):
            raise ValueError(f"models need distinct names other than 'auto', got {names}")
        return self


# -- quality ----------------------------------------------------------------------------------


@runtime_checkable
class QualityModel(Protocol):
    """Predicts each pool model's quality on prompts: ``(p_hat, sigma)``, both ``[n, m]``.

    ``p_hat`` in ``[0, 1]`` is the chance of a good answer, ``sigma >= 0`` its standard error;
    columns follow ``ProxyConfig.models``.
    """

    def predict(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]: ...


class ConstantQuality:
    """The same prior for every prompt, one value per pool model (e.g. offline accuracy).

    Parameters
    ----------
    quality : sequence of float, ``[m]`` in ``[0, 1]``, in pool order
    sigma : sequence of float, ``[m]`` ``>= 0``, optional
        The priors' standard errors; zeros when omitted.
    """

    def __init__(self, quality: Sequence[float], sigma: Sequence[float] | None = None) -> None:
        self.quality = np.asarray(quality, dtype=float)
        self.sigma = np.zeros_like(self.quality) if sigma is None else np.asarray(sigma, float)
        if self.quality.ndim != 1 or self.quality.size == 0:
            raise RouteInputError(f"quality must be a non-empty 1-D sequence, got {quality!r}")
        if not np.all((self.quality >= 0) & (self.quality <= 1)):
            raise RouteInputError(f"quality values must lie in [0, 1], got {quality!r}")
        if self.sigma.shape != self.quality.shape or not np.all(self.sigma >= 0):
            raise RouteInputError(f"sigma must be {self.quality.size} values >= 0, got {sigma!r}")

    def predict(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(p_hat, sigma)``, each ``[len(prompts), m]``: the priors repeated."""
        n = len(prompts)
        return np.tile(self.quality, (n, 1)), np.tile(self.sigma, (n, 1))


class ServeConfig(Config):
    """``winnow route serve``: the proxy, a quality prior per pool model, and where to listen."""

    proxy: ProxyConfig
    prior_quality: dict[str, float] = Field(
        description="pool model name -> P(good answer), e.g. its offline accuracy"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _prior_per_model(self) -> ServeConfig:
        names = [model.name for model in self.proxy.models]
        if sorted(self.prior_quality) != sorted(names):
            raise ValueError(f"prior_quality needs exactly the pool models {names}")
        if not all(0 <= value <= 1 for value in self.prior_quality.values()):
            raise ValueError("prior_quality values must lie in [0, 1]")
        return self

    def quality_model(self) -> QualityModel:
        """The fitted model of ``proxy.quality_model`` (the priors for the pool models it does
        not know), or the priors alone, in pool order."""
        models = self.proxy.models
        if self.proxy.quality_model is None:
            return ConstantQuality([self.prior_quality[model.name] for model in models])
        from winnow.route.fitted import PoolQuality, load_quality_model

        fitted = load_quality_model(self.proxy.quality_model)
        names = [model.quality_name or model.name for model in models]
        prior = {
            (model.quality_name or model.name): self.prior_quality[model.name] for model in models
        }
        return PoolQuality(fitted, names, prior)
