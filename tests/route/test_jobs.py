"""The routing evaluation end to end on RouterBench, small, and the solve command."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from winnow.cli import app
from winnow.route.evaluate import score_batch, score_stream

runner = CliRunner()


def test_score_batch_counts_violations():
    truth = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cost = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    outcome = score_batch(np.array([0, 0, -1]), truth, cost, np.array([1, 5]), budget=1.5)
    assert outcome.correct == 1.0 and outcome.spend == 2.0
    assert outcome.overspend == pytest.approx(0.5) and outcome.capacity_excess == 1
    score = score_stream([outcome], unanswered=1)
    assert score.accuracy == pytest.approx(1 / 3) and score.batches_over_budget == 1


def test_eval_cli_on_routerbench(tmp_path):
    args = ["route", "eval", "--out", str(tmp_path), "--quiet"]
    for override in (
        "budget_levels=[0.3]",
        "streams=[random, adversarial]",
        "kappa_grid=[0, 1]",
        "gamma_grid=[0, 5]",
        "batch_size=60",
    ):
        args += ["--set", override]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "metrics.json").read_text())["summary"]
    rows = {(r["stream"], r["router"]): r for r in summary["rows"]}
    for stream in ("random", "adversarial"):
        for router in ("batch", "batch robust (box)", "batch robust (budgeted)", "oracle"):
            assert rows[(stream, router)]["batches_over_budget"] == 0
            assert rows[(stream, router)]["capacity_violations"] == 0
        assert rows[(stream, "per-query clipped")]["batches_over_budget"] == 0
        constrained = rows[(stream, "per-query constrained")]
        assert constrained["batches_over_budget"] == 0 and constrained["capacity_violations"] == 0
        assert rows[(stream, "oracle")]["accuracy"] >= rows[(stream, "batch")]["accuracy"]
    for row in summary["batch_vs_per_query"]:  # constrained always honours the limits
        assert row["best constrained per-query"] is not None
        assert row["batch - best constrained"] == pytest.approx(
            row["batch"] - row["best constrained accuracy"]
        )
    assert len(summary["calibration"]) == 11
    assert all(0 <= c["ece"] <= 1 and 0 <= c["brier"] <= 1 for c in summary["calibration"])
    assert (run / "plots" / "route_accuracy_vs_budget.png").exists()
    assert (run / "plots" / "route_batch_spend.png").exists()


def test_solve_cli_writes_assignments(tmp_path):
    frame = pd.DataFrame(
        {
            "prompt": ["q1", "q2", "q3"],
            "big": [0.9, 0.8, 0.7],
            "small": [0.5, 0.6, 0.65],
            "big|total_cost": [1.0, 1.0, 1.0],
            "small|total_cost": [0.1, 0.1, 0.1],
        }
    )
    batch = tmp_path / "batch.csv"
    frame.to_csv(batch, index=False)
    out = tmp_path / "assignment.csv"
    result = runner.invoke(
        app,
        ["route", "solve", str(batch), "-o", str(out), "--budget", "1.3", "--capacity", "big=2"],
    )
    assert result.exit_code == 0, result.output
    assigned = pd.read_csv(out)
    assert assigned["cost"].sum() <= 1.3
    assert assigned["model"].tolist() == ["big", "small", "small"]


def test_solve_cli_rejects_bad_capacity(tmp_path):
    frame = pd.DataFrame({"prompt": ["q"], "a": [0.5], "a|total_cost": [1.0]})
    batch = tmp_path / "batch.csv"
    frame.to_csv(batch, index=False)
    result = runner.invoke(
        app, ["route", "solve", str(batch), "-o", str(tmp_path / "o.csv"), "--capacity", "b=1"]
    )
    assert result.exit_code == 2 and "MODEL=COUNT" in result.output


def test_shipped_configs_load(monkeypatch):
    from pathlib import Path

    from winnow.common.config import load_config
    from winnow.route.jobs import RouteEvalConfig
    from winnow.route.proxy_config import ServeConfig

    configs = Path(__file__).resolve().parents[2] / "configs" / "route"
    assert load_config(RouteEvalConfig, configs / "routerbench.yaml").batch_size == 50
    monkeypatch.setenv("WINNOW_PROXY_KEYS", "a-key-of-twenty-chars")
    serve = load_config(ServeConfig, configs / "proxy.yaml")
    assert serve.quality_model().predict(["q"])[0].shape == (1, 2)


def test_serve_cli_rejects_priors_that_miss_a_model(tmp_path):
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "prior_quality: {a: 0.5}\n"
        "proxy:\n  api_keys: [0123456789abcdef]\n  budget_per_window: 1\n  budget_per_day: 2\n"
        "  models:\n"
        "    - {name: a, base_url: 'http://127.0.0.1:9/v1', input_price_per_token: 0,"
        " output_price_per_token: 0, capacity: 1}\n"
        "    - {name: b, base_url: 'http://127.0.0.1:9/v1', input_price_per_token: 0,"
        " output_price_per_token: 0, capacity: 1}\n"
    )
    result = runner.invoke(app, ["route", "serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "prior_quality needs exactly the pool models" in result.output


def hard_batch(tmp_path, n=400, m=8):
    """Quality rising with cost: a correlated knapsack under a budget and capacities."""
    rng = np.random.default_rng(0)
    cost = np.geomspace(1e-4, 5e-3, m) * rng.uniform(0.5, 1.5, (n, m))
    quality = np.clip(0.3 + 0.05 * np.log(cost / 1e-4) + rng.normal(0, 0.01, (n, m)), 0, 1)
    frame = pd.DataFrame({"prompt": [f"q{i}" for i in range(n)]})
    for j in range(m):
        frame[f"m{j}"] = quality[:, j]
        frame[f"m{j}|total_cost"] = cost[:, j]
    batch = tmp_path / "hard.csv"
    frame.to_csv(batch, index=False)
    return batch, float(cost.min(axis=1).sum() * 3)


def test_solve_cli_reports_optimal_or_the_gap_at_its_time_limit(tmp_path):
    batch, budget = hard_batch(tmp_path)
    out = tmp_path / "o.csv"
    args = ["route", "solve", str(batch), "-o", str(out), "--budget", str(budget)]
    result = runner.invoke(app, [*args, "--capacity", "m7=50"])
    assert result.exit_code == 0 and "optimal (proven gap" in result.output, result.output
    # the relaxation always completes; its rounding is short of the optimum asked for here
    stopped = runner.invoke(app, [*args, "--time-limit", "0.001", "--gap", "0"])
    assert stopped.exit_code == 0 and "0.001 s time limit with proven gap" in stopped.output
    assert pd.read_csv(out)["cost"].sum() <= budget * (1 + 1e-9)
    bad = runner.invoke(app, [*args, "--time-limit", "0"])
    assert bad.exit_code == 2 and "--time-limit" in bad.output
    bad = runner.invoke(app, [*args, "--gap", "-1"])
    assert bad.exit_code == 2 and "--gap must be" in bad.output


def test_solve_cli_names_the_defer_flag_when_the_budget_is_short(tmp_path):
    batch, _ = hard_batch(tmp_path, n=20, m=3)
    out = tmp_path / "o.csv"
    result = runner.invoke(app, ["route", "solve", str(batch), "-o", str(out), "--budget", "1e-6"])
    assert result.exit_code == 2 and "--defer" in result.output
    assert "defer_infeasible" not in result.output and not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"prompt,a,a|total_cost\n\xff\xfe,0.5,1\n", "not UTF-8"),
        (b'prompt,a,a|total_cost\n"unclosed,0.5,1\n', "could not be read"),
        (b"prompt,a,b,a|total_cost\nq,0.5,0.7,1\n", "columns ['b'] have no"),
        (b"prompt,a|total_cost\nq,1\n", "no quality column for ['a']"),
        (b"prompt,a,a|total_cost\nq,0.5,1\nr,,1\ns,0.5,x\n", "(lines 3, 4); fix them"),
    ],
)
def test_solve_input_errors_are_one_line_naming_the_fix(tmp_path, content, message):
    batch = tmp_path / "batch.csv"
    batch.write_bytes(content)
    result = runner.invoke(app, ["route", "solve", str(batch), "-o", str(tmp_path / "o.csv")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in " ".join(result.output.split()), result.output


def test_solve_drop_invalid_counts_what_it_left_out(tmp_path):
    batch = tmp_path / "batch.csv"
    batch.write_bytes(b"prompt,a,a|total_cost\nq,0.5,1\nr,,1\ns,0.5,x\n")
    out = tmp_path / "o.csv"
    result = runner.invoke(app, ["route", "solve", str(batch), "-o", str(out), "--drop-invalid"])
    assert result.exit_code == 0 and "dropped 2 invalid rows" in result.output
    assert len(pd.read_csv(out)) == 1
