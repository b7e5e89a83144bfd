"""Figures of distill runs: learning curves per arm and TIP's entropy x divergence map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from winnow.distill.tokens import TokenStats, quadrants

__all__ = ["accuracy_curves", "selection_scatter", "training_curves"]

QUADRANT_COLOURS = {1: "#d62728", 2: "#ff7f0e", 3: "#9467bd", 4: "#7f7f7f"}
QUADRANT_NAMES = {
    1: "Q1 high H, high D",
    2: "Q2 high H, low D",
    3: "Q3 low H, high D (overconfident)",
    4: "Q4 low H, low D",
}


def _series(rows: Sequence[Mapping], key: str) -> tuple[list, list]:
    points = [(row["step"], row[key]) for row in rows if key in row]
    return [p[0] for p in points], [p[1] for p in points]


def accuracy_curves(histories: Mapping[str, Sequence[Mapping]], title: str = "") -> object:
    """Greedy held-out accuracy against optimizer step, one line per arm."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for arm, rows in histories.items():
        steps, accuracy = _series(rows, "eval_accuracy")
        axis.plot(steps, accuracy, marker="o", markersize=3, label=arm)
    axis.set(xlabel="optimizer step", ylabel="held-out accuracy (greedy)", ylim=(-0.02, 1.02))
    axis.set_title(title or "accuracy vs step per arm")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return figure


def training_curves(histories: Mapping[str, Sequence[Mapping]]) -> object:
    """Loss on kept tokens, rollout reward and kept fraction against step, one line per arm."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, axis, label in zip(
        ("loss", "train_reward", "kept_fraction"),
        axes,
        ("loss on kept tokens (nats)", "reward of the rollouts", "kept fraction of tokens"),
        strict=True,
    ):
        for arm, rows in histories.items():
            axis.plot(*_series(rows, key), label=arm, linewidth=1)
        axis.set(xlabel="optimizer step", ylabel=label)
        axis.grid(alpha=0.3)
    losses = [value for rows in histories.values() for value in _series(rows, "loss")[1]]
    if losses and min(losses) > 0:  # policy-gradient losses can be 0 or negative
        axes[0].set_yscale("log")
    axes[-1].legend(fontsize=7)
    figure.tight_layout()
    return figure


def selection_scatter(
    stats: TokenStats,
    kept,
    entropy_quantile: float = 0.5,
    divergence_quantile: float = 0.5,
    title: str = "",
) -> object:
    """Every response position of one batch: student entropy x teacher divergence.

    Colour is the quadrant (split at the per-batch quantiles, dashed lines); filled markers are
    kept positions, hollow ones dropped.
    """
    import matplotlib.pyplot as plt

    entropy = stats.entropy.float().numpy()
    divergence = stats.divergence.float().numpy()
    quadrant = quadrants(
        stats.entropy, stats.divergence, entropy_quantile, divergence_quantile
    ).numpy()
    is_kept = np.zeros(len(entropy), dtype=bool)
    is_kept[np.asarray(kept, dtype=int)] = True
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for q, colour in QUADRANT_COLOURS.items():
        for kept_here, face in ((True, colour), (False, "none")):
            mask = (quadrant == q) & (is_kept == kept_here)
            axis.scatter(
                entropy[mask],
                np.maximum(divergence[mask], 1e-6),
                s=12,
                facecolors=face,
                edgecolors=colour,
                linewidths=0.7,
                label=f"{QUADRANT_NAMES[q]}, {'kept' if kept_here else 'dropped'}",
            )
    axis.axvline(np.quantile(entropy, entropy_quantile), color="k", linestyle="--", lw=0.8)
    axis.axhline(
        max(np.quantile(divergence, divergence_quantile), 1e-6), color="k", linestyle="--", lw=0.8
    )
    axis.set(
        xlabel="student entropy (nats)", ylabel="teacher-student divergence (nats)", yscale="log"
    )
    axis.set_title(title or f"one rollout batch: {is_kept.sum()} of {len(entropy)} kept")
    axis.legend(fontsize=6, loc="lower right", ncol=2)
    return figure
