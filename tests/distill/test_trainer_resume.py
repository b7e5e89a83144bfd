"""``winnow distill train --resume RUN_DIR``: a stopped run continues exactly where it stopped."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from tests.distill.test_trainer import model_dir, train_config  # noqa: F401 (fixture)
from winnow.cli import app
from winnow.common.config import config_to_yaml
from winnow.common.runs import read_step_metrics

runner = CliRunner()


def summary(run_path) -> dict:
    return json.loads((run_path / "metrics.json").read_text())["summary"]


def test_resume_continues_each_arm_from_its_latest_checkpoint(model_dir, tmp_path):  # noqa: F811
    arms = {"all": {"name": "all"}, "sampled": {"name": "entropy_sample", "p": 0.5}}
    config = train_config(model_dir, arms=arms, steps=4, checkpoint_every=2, keep_checkpoints=2)
    path = tmp_path / "train.yaml"
    path.write_text(config_to_yaml(config))
    first = runner.invoke(
        app, ["distill", "train", "--config", str(path), "--out", str(tmp_path / "a"), "-q"]
    )
    assert first.exit_code == 0, first.output
    (stopped,) = (tmp_path / "a").iterdir()
    # as if stopped during the second arm, after its step-2 checkpoint
    shutil.rmtree(stopped / "checkpoints" / "sampled" / "step-000004")

    args = ["distill", "train", "--resume", str(stopped), "--out", str(tmp_path / "b"), "-q"]
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    (run,) = (tmp_path / "b").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert summary(run) == summary(stopped)  # the same rollouts, updates and evaluations
    rows = read_step_metrics(run / "metrics.jsonl")
    assert [(row["arm"], row["step"]) for row in rows] == [("sampled", 3), ("sampled", 4)]
    assert (run / "checkpoints" / "sampled" / "step-000004" / "trainer_state.json").is_file()


def test_resume_refuses_a_second_config(tmp_path):
    (tmp_path / "config.yaml").write_text("steps: 3\n")
    args = ["distill", "train", "--resume", str(tmp_path), "--config", str(tmp_path / "c.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "drop --config" in result.output
    assert "Traceback" not in result.output
