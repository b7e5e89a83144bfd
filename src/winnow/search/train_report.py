"""The report of ``winnow search train``: the cross-validated table, intervals and plots."""

from __future__ import annotations

from pathlib import Path

from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir

__all__ = ["cross_validation_rows", "cross_validation_section"]

FIRST_STAGES = ("bm25", "dense", "hybrid_rrf", "hybrid_interpolate")


def cross_validation_rows(scores) -> list[dict]:
    """One row per system: pooled metrics, nDCG@10 minus dense with its 95% interval, and the
    per-fold nDCG@10 values."""
    rows = []
    for system, pooled in scores.pooled.items():
        gap = scores.versus.get(system, {}).get("ndcg@10")
        interval = "" if gap is None else _interval(gap)
        folds = " ".join(f"{v:.2f}" for v in scores.per_fold[system]["ndcg@10"])
        rows.append(
            {
                "system": system,
                **{metric: round(value, 4) for metric, value in pooled.items()},
                f"nDCG@10 - {scores.baseline} [95% CI]": interval,
                "per fold nDCG@10": folds,
            }
        )
    return rows


def cross_validation_section(
    config, run: RunDir, scores, results, rankers: dict, chosen: dict, saved: dict, log
) -> ReportSection:
    """Tables of pooled metrics and per-fold choices, two plots, and the summary JSON."""
    from winnow.search.plots import plot_fold_values, plot_interval_forest, plot_loss_curves

    rows = cross_validation_rows(scores)
    forest = run.save_plot(
        plot_interval_forest(scores.versus, "ndcg@10", scores.baseline), "cv_ndcg"
    )
    folds = run.save_plot(plot_fold_values(scores.per_fold, "ndcg@10"), "cv_folds")
    histories = {name: r.history_ for name, r in rankers.items() if hasattr(r, "history_")}
    curves = run.save_plot(plot_loss_curves(histories), "training_loss")
    speed = {
        name: round(sum(r.items_per_s[name] for r in results) / len(results), 1)
        for name in results[0].items_per_s
    }
    choice_rows = [
        {"fold": r.fold.index, "system": name, **record}
        for r in results
        for name, record in r.chosen.items()
        if len(record["options"]) > 1
    ]
    summary = {
        "folds": len(results),
        "queries": len(scores.query_ids),
        "pooled": scores.pooled,
        "per_fold": scores.per_fold,
        "versus_dense": scores.versus,
        "per_query": scores.per_query,
        "fold_queries": [
            {"fit": r.fold.fit, "inner": r.fold.inner, "test": r.fold.test} for r in results
        ],
        "chosen_per_fold": [r.chosen for r in results],
        "chosen_final": chosen,
        "train_seconds_per_fold": [round(r.train_seconds, 1) for r in results],
        "rerank_items_per_s": speed,
        "clicks": {**log.summary(), "simulated": log.simulated},
        "saved": saved,
        "loss_history_final": histories,
    }
    click_note = (
        "**The engagement teacher learns from SIMULATED clicks** (no real interaction log "
        "ships); its numbers say what a text model can learn from the simulator, nothing about "
        "real users."
        if log.simulated
        else f"The engagement teacher learns from the click log `{config.train.clicks.log}`."
    )
    output = Path(config.train.output_dir)
    markdown = (
        f"**{len(results)}-fold cross-validation over {len(scores.query_ids)} judged queries** "
        f"(seed {config.seed}): each query is scored once, by models trained without its "
        f"labels; each fold's settings are chosen on an inner {config.train.cv.inner_fraction:.0%}"
        f" of its training queries. Rerankers reorder the dense top {config.train.candidates}; "
        "first stages rank 100. nDCG uses raw grades as gains (trec_eval) and `ndcg_burges` "
        "2^g - 1; MRR and recall count grade >= 2 as relevant. Intervals: paired bootstrap over "
        f"queries, {config.train.cv.bootstrap_resamples:,} resamples. {click_note}\n\n"
        + markdown_table(rows, digits=3)
        + f"\n![nDCG@10 minus dense](plots/{forest.name})\n\n![per fold](plots/{folds.name})\n\n"
        + "Rerank items/s (mean over folds, this machine): "
        + ", ".join(f"`{name}` {value}" for name, value in speed.items())
        + ".\n\n"
        + (markdown_table(choice_rows) if choice_rows else "No setting was chosen per fold.\n")
        + _judge_agreement_text(results)
        + f"\nThen every model was trained once more on all judged queries and saved in "
        f"`{output}`: "
        + ", ".join(f"`{name}`" for name in saved)
        + ". Their loss curves:\n\n"
        + f"![loss](plots/{curves.name})\n"
    )
    return ReportSection(markdown, summary)


def _judge_agreement_text(results) -> str:
    """The model judge's agreement with the qrels of each fold's training queries, if any."""
    rows = [
        {"fold": r.fold.index, **r.chosen["relevance_judge"]["agreement_with_qrels"]}
        for r in results
        if "relevance_judge" in r.chosen
    ]
    if not rows:
        return ""
    return (
        "\nThe relevance judge against the qrels of each fold's training queries, before its "
        "labels trained anything (AUC of its grade for grade >= 2; nDCG@10 of the candidates "
        "in its order):\n\n" + markdown_table(rows, digits=3)
    )


def _interval(gap: dict) -> str:
    return f"{gap['difference']:+.3f} [{gap['low']:+.3f}, {gap['high']:+.3f}]"
