"""``winnow search train``: two teachers, then students distilled from them, then held-out nDCG.

1. The dense first stage retrieves the top ``train.candidates`` of every query.
2. The **relevance teacher** trains on the judge's grades of the train-split candidates
   (``judge.kind: qrels`` reads the qrels; ``chat`` asks an LLM with the written policy).
3. The **engagement teacher** trains on IPS-debiased click-through rates from a real log
   (``clicks.log``) or, when none is given, from SIMULATED clicks (position-based model over the
   qrels, :mod:`winnow.search.click_simulator`), labelled as simulated in every output.
4. Each **student** (``train.students``: name -> teacher weights; by default relevance only,
   engagement only, and both) distils the teachers' scores on the train-split candidates, plus the
   unjudged queries when ``distill_unjudged`` (a teacher can label any query).
5. Dense, both teachers and every student rerank the dense top-k of the dev and test queries;
   nDCG@10 and MRR@10 go into the report with loss curves and bar plots.

Teachers and students are saved under ``train.output_dir``, where ``winnow search eval`` and
``winnow search serve`` find them. Nothing here reads the test queries before step 5.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from winnow.common.report import ReportSection, markdown_table
from winnow.common.runs import RunDir, run_section
from winnow.search.click_simulator import ClickModel, simulate_clicks
from winnow.search.clicks import ClickJudge, ClickLog, ips_ctr, load_click_log
from winnow.search.config import ClicksConfig, JudgeConfig, SearchConfig
from winnow.search.cross_encoder import (
    TEACHER_FILE,
    CandidateList,
    CrossEncoderTeacher,
    build_candidate_lists,
)
from winnow.search.datasets import BeirDataset, QuerySplit, load_beir, split_queries
from winnow.search.jobs import FirstStage, first_stage
from winnow.search.ranker import StudentRanker, precompute_teacher_scores
from winnow.search.reranking import RerankTiming, rerank_depth
from winnow.search.teachers import ChatJudge, QrelsJudge

__all__ = [
    "TrainingData",
    "distillation_lists",
    "engagement_judge",
    "evaluate_rerankers",
    "prepare_training",
    "relevance_judge",
    "run_search_train",
    "saved_teachers",
    "train_and_save",
    "train_section",
    "train_students",
    "train_teachers",
    "unlabelled_lists",
]

METRICS = ("ndcg@10", "mrr@10")


@dataclass(frozen=True)
class TrainingData:
    """The collection, its query split, the fitted first stage, and each query's dense
    candidates ``{qid: [k] ids}``."""

    data: BeirDataset
    split: QuerySplit
    stage: FirstStage
    candidates: dict[str, np.ndarray]

    def run_of(self, query_ids: list[str]) -> np.ndarray:
        """``[q, k]`` candidate ids of ``query_ids``, best first."""
        return np.stack([self.candidates[qid] for qid in query_ids])


def prepare_training(config: SearchConfig, quiet: bool = False) -> TrainingData:
    """Load and split the collection, and retrieve the dense top-k of every query."""
    data = load_beir(config.data.name)
    split = split_queries(data.judged_query_ids, config.data.split, seed=config.seed)
    stage = first_stage(config, data, data.judged_query_ids, quiet)
    ids, _ = stage.retrievers["dense"].search(data.query_texts, config.train.candidates)
    return TrainingData(data, split, stage, dict(zip(data.query_ids, ids, strict=True)))


def relevance_judge(config: JudgeConfig, data: BeirDataset):
    """The relevance teacher's labeller: the qrels, or a chat LLM following the TREC policy."""
    if config.kind == "qrels":
        return QrelsJudge(data.qrels)
    api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
    return ChatJudge(
        config.model, base_url=config.base_url, api_key=api_key, on_bad_reply=config.on_bad_reply
    )


def engagement_judge(
    config: ClicksConfig, training: TrainingData, seed: int
) -> tuple[ClickJudge, ClickLog]:
    """Position-debiased CTR labels from the real log, or from SIMULATED train-split sessions."""
    data = training.data
    if config.log is not None:
        by_text = dict(zip(data.query_texts, data.query_ids, strict=True))
        log = load_click_log(config.log, query_ids_by_text=by_text)
    else:
        train = training.split.train
        model = ClickModel(
            eta=config.eta,
            clickbait_scale=config.clickbait_scale,
            sessions=config.sessions,
            seed=seed,
        )
        log = simulate_clicks(train, training.run_of(train), data.qrels, model).log
    return ClickJudge(ips_ctr(log, eta=config.eta)), log


def train_teachers(
    config: SearchConfig, training: TrainingData, judges: dict, quiet: bool = False
) -> dict[str, CrossEncoderTeacher]:
    """One cross-encoder teacher per judge, on the train split's candidate lists."""
    train = training.split.train
    settings = config.train.teacher.model_dump()
    teachers = {}
    for name, judge in judges.items():
        lists = build_candidate_lists(training.data, train, judge, training.run_of(train))
        teacher = CrossEncoderTeacher(
            name=name,
            seed=config.seed,
            num_threads=config.train.num_threads,
            quiet=quiet,
            **settings,
        )
        teachers[name] = teacher.fit(lists)
    return teachers


def saved_teachers(config: SearchConfig) -> dict[str, CrossEncoderTeacher]:
    """With ``train.reuse_teachers``, both teachers loaded from ``train.output_dir``, so
    students can be retrained without retraining them; otherwise (or if one is missing) ``{}``."""
    folder = Path(config.train.output_dir)
    names = ("relevance", "engagement")
    if not config.train.reuse_teachers or not all(
        (folder / f"{name}_teacher" / TEACHER_FILE).is_file() for name in names
    ):
        return {}
    threads = config.train.num_threads
    return {
        name: CrossEncoderTeacher.load(folder / f"{name}_teacher", num_threads=threads)
        for name in names
    }


def unlabelled_lists(training: TrainingData, query_ids: list[str]) -> list[CandidateList]:
    """Candidate lists with no labels: what a student distils on (the teachers score them)."""
    data = training.data
    lists = []
    for qid in query_ids:
        passages = data.passages_of(doc for doc in training.candidates[qid].tolist() if doc)
        lists.append(
            CandidateList(
                query_id=qid,
                query=data.query_text(qid),
                doc_ids=tuple(p.id for p in passages),
                docs=tuple(p.text for p in passages),
                labels=np.full(len(passages), np.nan),
            )
        )
    return lists


def distillation_lists(config: SearchConfig, training: TrainingData) -> list[CandidateList]:
    """The students' lists: train-split candidates, plus the unjudged queries' if configured."""
    query_ids = list(training.split.train)
    if config.train.distill_unjudged:
        query_ids += training.data.unjudged_query_ids
    return unlabelled_lists(training, query_ids)


def train_students(
    config: SearchConfig, lists: list[CandidateList], teacher_scores: dict, quiet: bool = False
) -> dict[str, StudentRanker]:
    """One student per ``train.students`` weighting, all on the same teacher scores."""
    settings = config.train.student.model_dump()
    students = {}
    for name, weights in config.train.students.items():
        student = StudentRanker(
            teacher_weights=weights,
            seed=config.seed,
            num_threads=config.train.num_threads,
            quiet=quiet,
            **settings,
        )
        students[name] = student.fit(lists, teacher_scores)
    return students


def evaluate_rerankers(
    training: TrainingData, rankers: dict, parts: dict[str, list[str]], depth: int
) -> tuple[dict, dict[str, RerankTiming]]:
    """``{part: {system: Evaluation}}`` (means and per-query values) for dense and each
    reranker over the dense top ``depth``, and each reranker's timing."""
    from winnow.search.metrics import evaluate_run, run_from_arrays

    held_out = [qid for ids in parts.values() for qid in ids]
    runs = {"dense": training.run_of(held_out)}
    timings = {}
    for name, ranker in rankers.items():
        runs[name], timings[name] = rerank_depth(
            ranker, training.data, held_out, runs["dense"], depth
        )
    by_query = {name: dict(zip(held_out, ids, strict=True)) for name, ids in runs.items()}
    results = {}
    for part, query_ids in parts.items():
        results[part] = {
            name: evaluate_run(
                training.data.qrels,
                run_from_arrays(query_ids, np.stack([rows[q] for q in query_ids])),
                METRICS,
            )
            for name, rows in by_query.items()
        }
    return results, timings


def train_and_save(config: SearchConfig, training: TrainingData, quiet: bool = False):
    """Teachers (trained, or reused with ``train.reuse_teachers``), then the students; each
    saved under ``train.output_dir``. Returns ``({name: ranker}, click log, reused)``."""
    output = Path(config.train.output_dir)
    relevance = relevance_judge(config.train.judge, training.data)
    engagement, log = engagement_judge(config.train.clicks, training, config.seed)
    teachers = saved_teachers(config)
    reused = bool(teachers)
    if not reused:
        judges = {"relevance": relevance, "engagement": engagement}
        teachers = train_teachers(config, training, judges, quiet)
        for name, teacher in teachers.items():
            teacher.save(output / f"{name}_teacher")
    lists = distillation_lists(config, training)
    scores = precompute_teacher_scores(teachers, lists)
    students = train_students(config, lists, scores, quiet)
    for name, student in students.items():
        student.save(output / f"student_{name}")
    rankers = {f"{name}_teacher": teacher for name, teacher in teachers.items()}
    rankers.update({f"student_{name}": student for name, student in students.items()})
    return rankers, log, reused


def train_section(config: SearchConfig, run: RunDir, quiet: bool = False) -> ReportSection:
    """Train, save and evaluate the teachers and students; the report's tables and plots."""
    from winnow.search.plots import plot_loss_curves, plot_system_means

    training = prepare_training(config, quiet)
    rankers, log, reused = train_and_save(config, training, quiet)
    output = Path(config.train.output_dir)
    parts = {"dev": training.split.dev, "test": training.split.test}
    results, timings = evaluate_rerankers(training, rankers, parts, config.train.candidates)
    rows = [
        {
            "system": name,
            **{f"{part} {m}": results[part][name].mean[m] for part in parts for m in METRICS},
            "rerank items/s": round(timings[name].items_per_s, 1) if name in timings else "",
        }
        for name in results["test"]
    ]
    ndcg_columns = [f"{part} ndcg@10" for part in parts]
    bars = run.save_plot(plot_system_means(rows, ndcg_columns), "rerank_ndcg")
    histories = {name: ranker.history_ for name, ranker in rankers.items()}
    curves = run.save_plot(plot_loss_curves(histories), "training_loss")
    summary = {
        "results": {part: {k: v.mean for k, v in found.items()} for part, found in results.items()},
        "rerank_items_per_s": {name: t.items_per_s for name, t in timings.items()},
        "ndcg10_student_both_over_relevance_teacher": _ratio(results, "student_both"),
        "queries": {name: len(ids) for name, ids in dataclasses.asdict(training.split).items()},
        "distilled_unjudged_queries": len(training.data.unjudged_query_ids)
        if config.train.distill_unjudged
        else 0,
        "teachers_reused": reused,
        "clicks": {**log.summary(), "simulated": log.simulated},
        "saved": {name: str(output / name) for name in rankers},
        "loss_history": histories,
    }
    click_note = (
        "**The engagement teacher learns from SIMULATED clicks** (position-based model over the "
        "qrels; no real interaction log ships)."
        if log.simulated
        else f"The engagement teacher learns from the click log `{config.train.clicks.log}`."
    )
    teachers_note = "reused from" if reused else "trained and saved in"
    markdown = (
        f"Queries: {len(training.split.train)} train, {len(training.split.dev)} dev, "
        f"{len(training.split.test)} test (split by query, seed {config.seed}); every system "
        f"reranks the dense top {config.train.candidates}. Relevance labels: "
        f"`{config.train.judge.kind}`. {click_note} Students: "
        f"{config.train.student.num_layers} layers, {config.train.student.max_length} word "
        f"pieces; teachers: 6 layers, {config.train.teacher.max_length}, {teachers_note} "
        f"`{output}`.\n\n"
        + markdown_table(rows, digits=3)
        + f"\n![nDCG@10](plots/{bars.name})\n\n![loss](plots/{curves.name})\n"
    )
    return ReportSection(markdown, summary)


def run_search_train(config: SearchConfig, root: str | Path = "runs", quiet=False) -> Path:
    """``winnow search train`` into a new run folder; returns the path of ``report.html``."""
    return run_section(
        "search-train",
        config,
        train_section,
        "Search train",
        root,
        quiet,
        heading="Search: teachers and distilled students",
    )


def _ratio(results: dict, student: str) -> float | None:
    """Test nDCG@10 of ``student`` over the relevance teacher's (``None`` if either is absent)."""
    test = results["test"]
    if student not in test or "relevance_teacher" not in test:
        return None
    teacher = test["relevance_teacher"].mean["ndcg@10"]
    return test[student].mean["ndcg@10"] / teacher if teacher > 0 else None
