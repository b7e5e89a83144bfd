import json

import pytest

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.common.resume import resumed_config
from winnow.common.runs import RunDir
from winnow.distill.checkpoints import (
    STATE_FILE,
    latest_checkpoint,
    resume_checkpoint,
    train_with_checkpoints,
)
from winnow.distill.config import SftConfig, TrainConfig
from winnow.distill.exceptions import DistillInputError


def checkpoint(run_path, arm, step, complete=True):
    folder = run_path / "checkpoints" / arm / f"step-{step:06d}"
    folder.mkdir(parents=True)
    if complete:
        (folder / STATE_FILE).write_text(json.dumps({"step": step, "history": []}))
    return folder


def train_run(root, name="distill-train", resume_from=None, arms=("a", "b")):
    run = RunDir(name, root=root)
    config = {"arms": {arm: {"name": "all"} for arm in arms}, "resume_from": resume_from}
    run.write_config(TrainConfig.model_validate(config))
    return run.path


def test_latest_complete_checkpoint_wins(tmp_path):
    run = train_run(tmp_path)
    checkpoint(run, "a", 50)
    newest = checkpoint(run, "a", 100)
    checkpoint(run, "a", 150, complete=False)  # a save cut short
    (run / "checkpoints" / "a" / "notes").mkdir()
    assert latest_checkpoint(run / "checkpoints" / "a") == newest
    assert latest_checkpoint(run / "checkpoints" / "b") is None


def test_each_arm_resumes_from_its_own_run_or_the_run_that_one_resumed(tmp_path):
    first = train_run(tmp_path)
    a_done = checkpoint(first, "a", 100)
    checkpoint(first, "b", 50)
    second = train_run(tmp_path, resume_from=str(first))
    b_later = checkpoint(second, "b", 100)
    assert resume_checkpoint(second, "a") == a_done  # never reached in the second run
    assert resume_checkpoint(second, "b") == b_later
    assert resume_checkpoint(second, "c") is None  # a new arm starts fresh
    assert resume_checkpoint(a_done, "b") == a_done  # a checkpoint is taken as it is


def test_resume_from_something_else_is_refused(tmp_path):
    with pytest.raises(DistillInputError, match="neither a checkpoint"):
        resume_checkpoint(tmp_path, "a")
    with pytest.raises(ConfigError, match="not a run folder"):
        resumed_config(TrainConfig, tmp_path)


def test_resumed_config_is_the_runs_own_with_overrides(tmp_path):
    run = train_run(tmp_path)
    config = resumed_config(TrainConfig, run, ["steps=7"])
    assert list(config.arms) == ["a", "b"] and config.steps == 7
    assert config.resume_from == str(run)


def test_a_checkpoint_continues_one_arm_only(tmp_path):
    step = checkpoint(tmp_path, "a", 2)
    with pytest.raises(ConfigError, match="run folder to continue every arm"):
        load_config(TrainConfig, {"arms": {"a": {}, "b": {}}, "resume_from": str(step)})


def test_checkpoints_are_on_by_default():
    assert TrainConfig().checkpoint_every == SftConfig().checkpoint_every == 50
    assert TrainConfig().keep_checkpoints == SftConfig().keep_checkpoints == 1


class CountingTrainer:
    """Counts steps; each checkpoint is a folder with the state file (as the real trainers)."""

    is_main_process = True

    def __init__(self) -> None:
        self.step, self.seen = 0, []

    def train(self, until, on_step=None):
        while self.step < until:
            self.step += 1
            on_step({"step": self.step})

    def save_checkpoint(self, path):
        path.mkdir(parents=True)
        (path / STATE_FILE).write_text(json.dumps({"step": self.step}))
        return path


@pytest.mark.parametrize(
    ("every", "keep", "kept"),
    [(2, 1, [5]), (2, 2, [4, 5]), (2, None, [2, 4, 5]), (0, 1, [5]), (10, 3, [5])],
)
def test_checkpoints_every_n_steps_and_at_the_end_keeping_the_newest(tmp_path, every, keep, kept):
    trainer, rows = CountingTrainer(), []
    (tmp_path / "checkpoints" / "step-000001").mkdir(parents=True)  # a save cut short
    train_with_checkpoints(trainer, 5, every, tmp_path / "checkpoints", rows.append, keep)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5]
    folders = sorted((tmp_path / "checkpoints").iterdir())
    complete = [f for f in folders if (f / STATE_FILE).is_file()]
    assert [int(f.name.removeprefix("step-")) for f in complete] == kept
