"""route fit: the fit/save/load round trip, the manifest, and the proxy routing by the model."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from winnow.cli import app
from winnow.common.config import load_config
from winnow.route.exceptions import RouteInputError
from winnow.route.fitted import (
    PoolQuality,
    RouteFitConfig,
    fit_quality_model,
    load_quality_model,
    save_quality_model,
)
from winnow.route.proxy_config import ServeConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def fitted_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quality")
    result = runner.invoke(
        app, ["route", "fit", "--quiet", "--set", f"output_dir={folder}", "--set", "estimator.k=15"]
    )
    assert result.exit_code == 0, result.output
    assert "validation: mean Brier" in result.output
    return folder


def test_fit_save_load_round_trip_predicts_the_same(fitted_folder, tmp_path):
    config = load_config(RouteFitConfig, {"estimator": {"k": 15}})
    fitted, manifest = fit_quality_model(config, quiet=True)
    loaded = load_quality_model(fitted_folder)
    prompts = ["What is the capital of France?", "Solve 12 * 13.", "Write a haiku about rain."]
    p_fit, s_fit = fitted.predict(prompts)
    p_load, s_load = loaded.predict(prompts)
    np.testing.assert_allclose(p_fit, p_load)
    np.testing.assert_allclose(s_fit, s_load)
    assert p_fit.shape == (3, len(fitted.models)) and np.all((p_fit >= 0) & (p_fit <= 1))
    assert not np.allclose(p_fit[0], p_fit[1])  # the scores differ by prompt
    saved = json.loads((fitted_folder / "manifest.json").read_text())
    assert saved["data"]["sha256"] == manifest["data"]["sha256"]  # same data, same hash
    assert saved["models"] == list(fitted.models)
    assert 0 < saved["validation"]["mean_brier"] < 0.25
    # A different training set hashes differently.
    other, other_manifest = fit_quality_model(
        load_config(RouteFitConfig, {"seed": 1, "estimator": {"k": 15}}), quiet=True
    )
    assert other_manifest["data"]["sha256"] != manifest["data"]["sha256"]
    save_quality_model(other, other_manifest, tmp_path / "other")
    assert load_quality_model(tmp_path / "other").models == other.models


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(RouteInputError, match=r"quality_model\.joblib is missing"):
        load_quality_model(tmp_path)
    (tmp_path / "quality_model.joblib").write_bytes(b"not a model")
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(RouteInputError, match="no readable quality model"):
        load_quality_model(tmp_path)


def test_the_proxy_routes_by_the_fitted_model_and_keeps_the_prior_for_unknown_models(
    fitted_folder, monkeypatch
):
    fitted = load_quality_model(fitted_folder)
    known = fitted.models[:2]
    monkeypatch.setenv("KEYS_FOR_TEST", "0123456789abcdef-key")
    pool = [
        {"name": "a", "quality_name": known[0], "base_url": "http://127.0.0.1:9/v1",
         "input_price_per_token": 1e-6, "output_price_per_token": 1e-6, "capacity": 4},
        {"name": "b", "quality_name": known[1], "base_url": "http://127.0.0.1:9/v1",
         "input_price_per_token": 1e-7, "output_price_per_token": 1e-7, "capacity": 4},
        {"name": "local", "base_url": "http://127.0.0.1:9/v1",
         "input_price_per_token": 0, "output_price_per_token": 0, "capacity": 4},
    ]  # fmt: skip
    settings = load_config(
        ServeConfig,
        {
            "proxy": {
                "models": pool,
                "api_keys_env": "KEYS_FOR_TEST",
                "budget_per_window": 1,
                "budget_per_day": 2,
                "quality_model": str(fitted_folder),
            },
            "prior_quality": {"a": 0.5, "b": 0.5, "local": 0.3},
        },
    )
    quality = settings.quality_model()
    assert isinstance(quality, PoolQuality)
    prompts = ["What is the capital of France?", "Prove that sqrt(2) is irrational."]
    p_hat, sigma = quality.predict(prompts)
    expected, _ = fitted.predict(prompts)
    np.testing.assert_allclose(p_hat[:, :2], expected[:, :2])
    assert np.all(p_hat[:, 2] == 0.3) and np.all(sigma[:, 2] == 0)  # the prior, for 'local'
    assert not np.allclose(p_hat[0, :2], p_hat[1, :2])
    with pytest.raises(RouteInputError, match="quality_name"):
        PoolQuality(fitted, ["x", "y"], {"x": 0.5, "y": 0.5})
