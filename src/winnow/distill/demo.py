"""The distill step of ``winnow demo``: make a teacher/student pair, then a short TIP run.

Two-digit addition keeps it within about three minutes on two cores: a d=64 teacher learns it
from scratch in 1,000 steps, a d=32 student stopped after 300 steps is weak, and on-policy
distillation then trains two copies of that student, one on all tokens and one on half of them
sampled by entropy (TIP).
"""

from __future__ import annotations

from winnow.common.config import load_config
from winnow.common.report import ReportSection
from winnow.common.runs import RunDir
from winnow.distill.config import SftConfig, TrainConfig
from winnow.distill.jobs import train_section
from winnow.distill.sft_job import sft_section

__all__ = ["run_demo"]

TASK = {"name": "addition", "digits": [2], "train_problems": 5000, "test_problems": 256}


def run_demo(run: RunDir, quiet: bool = False) -> ReportSection:
    """SFT of the pair into ``run/models``, then OPD with two selectors; one report section."""
    models = run.path / "models"
    sft = load_config(
        SftConfig,
        {
            "task": TASK,
            "output_dir": str(models),
            "teacher": {
                "architecture": {"hidden_size": 64, "num_layers": 2, "num_heads": 4},
                "steps": 1000,
            },
            "student": {
                "architecture": {"hidden_size": 32, "num_layers": 2, "num_heads": 2},
                "steps": 300,
            },
            "eval": {"max_new_tokens": 4},
        },
    )
    train = load_config(
        TrainConfig,
        {
            "student": {"path": str(models / "student")},
            "teacher": {"path": str(models / "teacher")},
            "task": TASK,
            "rollout": {"max_new_tokens": 4},
            "eval": {"every": 50, "max_new_tokens": 4},
            "optim": {"lr": 3e-3},
            "steps": 300,
            "arms": {
                "all": {"name": "all"},
                "entropy_sample_50": {"name": "entropy_sample", "p": 0.5},
            },
        },
    )
    pair = sft_section(sft, run, quiet)
    opd = train_section(train, run, quiet)
    markdown = (
        "### Teacher and student (supervised fine-tuning)\n\n"
        f"{pair.markdown}\n\n### On-policy distillation with TIP\n\n{opd.markdown}"
    )
    return ReportSection(markdown, {"sft": pair.summary, "opd": opd.summary})
