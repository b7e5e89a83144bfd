"""The train report names only plots it has: GRPO (no token selector) announces no selection map."""

import re

import pytest

from winnow.common.config import load_config
from winnow.common.runs import RunDir
from winnow.distill.config import TrainConfig
from winnow.distill.jobs import train_section
from winnow.distill.models import TinyModelConfig, build_tiny_model, char_tokenizer
from winnow.distill.tasks import AdditionTask


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """An untrained tiny policy for 1-digit addition, saved with its tokenizer."""
    folder = tmp_path_factory.mktemp("policy")
    tokenizer = char_tokenizer(AdditionTask(digits=(1,)).alphabet)
    config = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, max_positions=16)
    build_tiny_model(config, tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _report(policy_dir, tmp_path, **overrides):
    data = {
        "student": {"path": str(policy_dir)},
        "teacher": {"path": str(policy_dir)},
        "task": {"digits": [1], "train_problems": 32, "test_problems": 8},
        "rollout": {"max_new_tokens": 3, "samples_per_prompt": 2},
        "eval": {"every": 1, "max_new_tokens": 3},
        "prompts_per_step": 4,
        "steps": 1,
        "cpu": True,
        **overrides,
    }
    run = RunDir("report", root=tmp_path, seed=0)
    return run, train_section(load_config(TrainConfig, data), run, quiet=True).markdown


def _named_plots(markdown: str) -> list[str]:
    return re.findall(r"\]\(plots/([^)]+)\)", markdown)


def test_grpo_report_announces_no_selection_plots(policy_dir, tmp_path):
    run, markdown = _report(policy_dir, tmp_path, objective="grpo", grpo={"alpha_ace": 1.0})
    assert "Entropy x divergence" not in markdown and "selection" not in markdown.lower()
    assert not list(run.plots.glob("selection_*"))
    assert all((run.plots / name).is_file() for name in _named_plots(markdown))


def test_opd_report_shows_the_selection_plot_it_announces(policy_dir, tmp_path):
    run, markdown = _report(policy_dir, tmp_path)
    named = _named_plots(markdown)
    assert "Entropy x divergence" in markdown and any(n.startswith("selection_") for n in named)
    assert all((run.plots / name).is_file() for name in named)


def test_a_failed_eval_called_from_python_records_failed(tmp_path):
    import json

    from winnow.distill.config import EvalJobConfig
    from winnow.distill.jobs import run_eval

    config = load_config(EvalJobConfig, overrides=[f"model.path={tmp_path / 'no_model'}"])
    with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises for a missing folder
        run_eval(config, root=tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and record["error"]
