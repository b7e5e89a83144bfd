"""``winnow search train``: every reranker cross-validated, then trained on all judged queries.

For each of ``train.cv.folds`` folds over the judged queries (:mod:`winnow.search.folds`), with
the fold's ``fit`` queries as the train split and its ``inner`` queries as the dev split:

1. The dense first stage retrieves the top ``train.candidates`` of every query.
2. The **relevance teacher** trains on the judge's grades of the train-split candidates
   (``judge.kind: qrels`` reads the qrels; ``chat`` asks an LLM with the written policy,
   ``causal_lm`` reads a local LM's P(yes)). A model judge is first scored against the qrels of
   the train split (:mod:`winnow.search.judge_check`).
   With ``train.llm_teacher``, a causal-LM teacher (:mod:`winnow.search.llm_teacher`) trains on
   the same lists, and students may weight it as ``llm``.
3. The **engagement teacher** trains on IPS-debiased click-through rates from a real log
   (``clicks.log``) or, when none is given, from SIMULATED clicks over the train-split queries
   (:mod:`winnow.search.click_simulator`), labelled as simulated in every output.
4. Each **student** (``train.students``: name -> teacher weights; by default relevance only,
   engagement only, and both) distils the teachers' scores on the train-split candidates, plus the
   unjudged queries when ``distill_unjudged`` (a teacher can label any query).
5. Settings listed in ``train.cv.choices`` are chosen by nDCG@10 on the inner split.
6. Every reranker reorders the dense top-k of the fold's held-out queries
   (:mod:`winnow.search.crossval`).

The pooled held-out rankings give each system's nDCG@10 (raw and ``2^g - 1`` gains), MRR@10 and
recall@100 with paired bootstrap intervals against dense (:mod:`winnow.search.train_report`).
Then the same pipeline runs once on all judged queries and saves every model under
``train.output_dir``, where ``winnow search eval`` and ``winnow search serve`` find them. Each
model folder gets a manifest (:mod:`winnow.common.provenance`): the teachers are saved first, so
each student's manifest names the very teachers beside it, and loading refuses a student whose
teachers were replaced since. Saving over earlier models needs ``overwrite``, checked before any
training. Every optimiser step of every model goes to the run's metrics.jsonl as it is taken.
Each finished fold is saved in the run's checkpoints/, so ``--resume RUN_DIR`` continues a
stopped run from its first unfinished fold (:mod:`winnow.search.fold_checkpoints`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from winnow.common.causal_lm import bundled_smollm2
from winnow.common.provenance import Provenance
from winnow.common.report import ReportSection
from winnow.common.runs import RunDir, run_section
from winnow.search.click_simulator import ClickModel, simulate_clicks
from winnow.search.clicks import ClickJudge, ClickLog, ips_ctr, load_click_log
from winnow.search.config import ClicksConfig, JudgeConfig, SearchConfig
from winnow.search.cross_encoder import CandidateList, CrossEncoderTeacher, build_candidate_lists
from winnow.search.crossval import Rankings, choose_on_inner, cross_validate
from winnow.search.datasets import BeirDataset, QuerySplit, load_beir
from winnow.search.fold_checkpoints import FoldCheckpoints
from winnow.search.folds import make_folds
from winnow.search.jobs import FirstStage, first_stage
from winnow.search.judge_check import judge_agreement
from winnow.search.llm_teacher import LLMRelevanceTeacher
from winnow.search.query_filters import generated_candidate_lists, read_generated
from winnow.search.ranker import StudentRanker, precompute_teacher_scores
from winnow.search.rerank_stack import quantize_int8
from winnow.search.saved_rankers import (
    check_output_dir,
    resumed_runs,
    save_rankers,
    training_data_identity,
)
from winnow.search.teachers import CausalLMJudge, ChatJudge, QrelsJudge

__all__ = [
    "METRICS",
    "StepLog",
    "TrainingData",
    "check_output_dir",
    "distillation_lists",
    "engagement_judge",
    "final_training",
    "fold_rankers",
    "generated_training_lists",
    "judged_lists",
    "prepare_training",
    "relevance_judge",
    "run_search_train",
    "save_rankers",
    "train_llm_teacher",
    "train_section",
    "train_students",
    "train_teacher",
    "unlabelled_lists",
]

METRICS = ("ndcg@10", "ndcg_burges@10", "mrr@10", "recall@100")

StepLog = Callable[[dict], None]
"""Receives one row per optimiser step: ``{"model", "choice", "step", "loss", "lr"}``."""


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
    """Load the collection and retrieve the dense top-k of every query; the split is left
    empty, each fold (or the final training) sets its own."""
    data = load_beir(config.data.name)
    split = QuerySplit([], [], [])
    stage = first_stage(config, data, data.judged_query_ids, quiet)
    ids, _ = stage.retrievers["dense"].search(data.query_texts, config.train.candidates)
    return TrainingData(data, split, stage, dict(zip(data.query_ids, ids, strict=True)))


def relevance_judge(config: JudgeConfig, data: BeirDataset):
    """The relevance teacher's labeller: the qrels, or an LLM following the TREC policy (a
    chat endpoint, or a local causal LM: the bundled SmolLM2 when ``model`` is null)."""
    if config.kind == "qrels":
        return QrelsJudge(data.qrels)
    if config.kind == "causal_lm":
        location, gguf_file = (
            (config.model, config.gguf_file) if config.model else bundled_smollm2()
        )
        return CausalLMJudge.from_pretrained(location, gguf_file, yes=config.yes, no=config.no)
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
            text_weights=config.text_weights,
            noise_scale=config.noise_scale,
            sessions=config.sessions,
            seed=seed,
        )
        ranked = training.run_of(train)
        shown = {doc for doc in ranked.ravel().tolist() if doc}
        log = simulate_clicks(
            train,
            ranked,
            data.qrels,
            model,
            query_texts={qid: data.query_text(qid) for qid in train},
            doc_texts={p.id: p.text for p in data.passages_of(sorted(shown))},
        ).log
    return ClickJudge(ips_ctr(log, eta=config.eta)), log


def judged_lists(training: TrainingData, judge) -> list[CandidateList]:
    """The judge's labels of the train split's candidate lists: what a teacher learns from."""
    train = training.split.train
    return build_candidate_lists(training.data, train, judge, training.run_of(train))


def train_teacher(
    config: SearchConfig,
    lists: list[CandidateList],
    name: str,
    overrides: dict | None = None,
    quiet: bool = False,
    on_step: StepLog | None = None,
) -> CrossEncoderTeacher:
    """One cross-encoder teacher on labelled ``lists`` (:func:`judged_lists`), with
    ``train.teacher`` settings updated by ``overrides``; ``on_step`` gets each step's row."""
    settings = {**config.train.teacher.model_dump(), **(overrides or {})}
    teacher = CrossEncoderTeacher(
        name=name, seed=config.seed, num_threads=config.train.num_threads, quiet=quiet, **settings
    )
    return teacher.fit(lists, on_step)


def train_llm_teacher(
    config: SearchConfig,
    lists: list[CandidateList],
    overrides: dict | None = None,
    quiet: bool = False,
    on_step: StepLog | None = None,
) -> LLMRelevanceTeacher:
    """The causal-LM relevance teacher on ``lists``, with ``train.llm_teacher`` settings updated
    by ``overrides``; ``on_step`` gets each step's row."""
    settings = {**config.train.llm_teacher.model_dump(), **(overrides or {})}
    teacher = LLMRelevanceTeacher(
        name="llm", seed=config.seed, num_threads=config.train.num_threads, quiet=quiet, **settings
    )
    return teacher.fit(lists, on_step)


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


def generated_training_lists(config: SearchConfig, training: TrainingData) -> list[CandidateList]:
    """Lists of the generated queries in ``train.generated.train_on`` (source grade 3, hard
    negatives 0), without those whose source passage is judged for a dev (inner) or test query
    of this split: what the models may not learn about. ``[]`` when none is configured."""
    settings = config.train.generated
    if settings.train_on is None:
        return []
    held = {
        doc
        for qid in (*training.split.dev, *training.split.test)
        for doc in training.data.qrels.get(qid, {})
    }
    generated = read_generated(settings.train_on)
    return generated_candidate_lists(
        training.data, generated, held, settings.train_lists, config.seed
    )


def distillation_lists(
    config: SearchConfig, training: TrainingData, generated: list[CandidateList] = ()
) -> list[CandidateList]:
    """The students' lists: train-split candidates, the unjudged queries' if configured, and
    ``generated`` lists (the teachers score them all)."""
    query_ids = list(training.split.train)
    if config.train.distill_unjudged:
        query_ids += training.data.unjudged_query_ids
    return unlabelled_lists(training, query_ids) + list(generated)


def train_students(
    config: SearchConfig,
    lists: list[CandidateList],
    teacher_scores: dict,
    quiet: bool = False,
    overrides: dict | None = None,
    log: StepLog | None = None,
) -> dict[str, StudentRanker]:
    """One student per ``train.students`` weighting, all on the same teacher scores, with
    ``train.student`` settings updated by ``overrides``; ``log`` gets each step's row."""
    settings = {**config.train.student.model_dump(), **(overrides or {})}
    students = {}
    for name, weights in config.train.students.items():
        student = StudentRanker(
            teacher_weights=weights,
            seed=config.seed,
            num_threads=config.train.num_threads,
            quiet=quiet,
            **settings,
        )
        students[name] = student.fit(lists, teacher_scores, _tagged(log, model=f"student_{name}"))
    return students


def fold_rankers(
    config: SearchConfig,
    training: TrainingData,
    dense: Rankings,
    quiet: bool = False,
    log: StepLog | None = None,
) -> tuple[dict, dict]:
    """Train one fold's rerankers on ``training.split.train``, choosing each setting listed in
    ``train.cv.choices`` by nDCG@10 on ``training.split.dev`` (the inner split). ``log`` gets
    every optimiser step of every model (its name and the index of its setting in ``choices``).

    Returns ``({system: ranker}, {system: choice record})``: both teachers (and
    ``llm_teacher`` when configured), one student per ``train.students`` weighting, and
    ``student_both+int8`` (the served student, when a ``both`` student is configured).
    """
    judges = {
        "relevance": relevance_judge(config.train.judge, training.data),
        "engagement": engagement_judge(config.train.clicks, training, config.seed)[0],
    }
    options = config.train.cv.choices
    generated = generated_training_lists(config, training)
    graded = judged_lists(training, judges["relevance"])  # each judge grades once
    labelled = {  # generated queries have no clicks
        "relevance": graded + generated,
        "engagement": judged_lists(training, judges["engagement"]),
    }
    chosen = {}
    if config.train.judge.kind != "qrels":  # a model judge is measured before it teaches
        agreement = judge_agreement(graded, training.data.qrels)
        chosen["relevance_judge"] = {"options": [], "agreement_with_qrels": agreement}
    teachers = {}
    for name in judges:
        settings = options.get(f"{name}_teacher", [{}])
        candidates = [
            train_teacher(
                config,
                labelled[name],
                name,
                override,
                quiet,
                _tagged(log, model=f"{name}_teacher", choice=i),
            )
            for i, override in enumerate(settings)
        ]
        teachers[name], chosen[f"{name}_teacher"] = _choose(
            candidates, settings, config, training, dense
        )
    if config.train.llm_teacher is not None:
        settings = options.get("llm_teacher", [{}])
        candidates = [
            train_llm_teacher(
                config,
                labelled["relevance"],
                override,
                quiet,
                _tagged(log, model="llm_teacher", choice=i),
            )
            for i, override in enumerate(settings)
        ]
        teachers["llm"], chosen["llm_teacher"] = _choose(
            candidates, settings, config, training, dense
        )
    lists = distillation_lists(config, training, generated)
    weighted = {name for w in config.train.students.values() for name, v in w.items() if v > 0}
    scores = precompute_teacher_scores({n: teachers[n] for n in weighted}, lists)
    trained = [
        train_students(config, lists, scores, quiet, override, _tagged(log, choice=i))
        for i, override in enumerate(options.get("student", [{}]))
    ]
    rankers = {f"{name}_teacher": teacher for name, teacher in teachers.items()}
    for name in config.train.students:
        rankers[f"student_{name}"], chosen[f"student_{name}"] = _choose(
            [found[name] for found in trained],
            options.get("student", [{}]),
            config,
            training,
            dense,
        )
    if "student_both" in rankers:
        rankers["student_both+int8"] = quantize_int8(rankers["student_both"])
    return rankers, chosen


def final_training(config: SearchConfig, training: TrainingData) -> TrainingData:
    """All judged queries for the saved models: a seeded ``train.cv.inner_fraction`` of them
    chooses settings, the rest train (no query is held out: cross-validation measured it)."""
    judged = sorted(training.data.judged_query_ids)
    order = np.random.default_rng([config.seed, 1_000]).permutation(len(judged))
    n_inner = max(1, round(config.train.cv.inner_fraction * len(judged)))
    inner = sorted(judged[i] for i in order[:n_inner])
    fit = sorted(judged[i] for i in order[n_inner:])
    return dataclasses.replace(training, split=QuerySplit(fit, inner, []))


def train_section(
    config: SearchConfig, run: RunDir, quiet: bool = False, overwrite: bool = False
) -> ReportSection:
    """Cross-validate every system, then train and save the models on all judged queries
    (refused before any training when earlier models are in the way and not ``overwrite``)."""
    from winnow.search.metrics import cross_validated
    from winnow.search.train_report import cross_validation_section

    check_output_dir(config, overwrite)
    training = prepare_training(config, quiet)
    cv = config.train.cv
    folds = make_folds(training.data.judged_query_ids, cv.folds, cv.inner_fraction, config.seed)
    fold_of = {tuple(fold.test): fold.index for fold in folds}

    def train_fold(config, view, dense, quiet):
        log = _run_log(run, fold_of[tuple(view.split.test)])
        return fold_rankers(config, view, dense, quiet, log)

    checkpoints = FoldCheckpoints(run.path, resumed_runs(config))
    rankings, results = cross_validate(config, training, folds, train_fold, quiet, checkpoints)
    scores = cross_validated(
        training.data.qrels,
        rankings,
        [fold.test for fold in folds],
        METRICS,
        resamples=cv.bootstrap_resamples,
        seed=config.seed,
    )
    final = final_training(config, training)
    rankers, chosen = fold_rankers(config, final, rankings["dense"], quiet, _run_log(run, "all"))
    made = Provenance(config, run, data=training_data_identity(config, final))
    replace = overwrite or bool(config.train.resume_from)  # others' folders: refused above
    saved = save_rankers(rankers, Path(config.train.output_dir), made, replace)
    log = engagement_judge(config.train.clicks, final, config.seed)[1]
    return cross_validation_section(config, run, scores, results, rankers, chosen, saved, log)


def run_search_train(
    config: SearchConfig, root: str | Path = "runs", quiet=False, overwrite: bool = False
) -> Path:
    """``winnow search train`` into a new run folder; returns the path of ``report.html``.

    Saved rerankers in the way are refused before the run folder is made."""
    check_output_dir(config, overwrite)
    return run_section(
        "search-train",
        config,
        partial(train_section, overwrite=overwrite),
        "Search train",
        root,
        quiet,
        heading="Search: teachers and distilled students",
    )


def _tagged(log: StepLog | None, **fields) -> StepLog | None:
    """``log`` with ``fields`` (which model, which setting) added to every row."""
    return None if log is None else lambda row: log({**fields, **row})


def _run_log(run: RunDir, fold: int | str) -> StepLog:
    """Rows into ``run``'s metrics.jsonl, with the fold (``"all"``: the saved models)."""
    return lambda row: run.log_step(
        row["step"], fold=fold, **{k: v for k, v in row.items() if k != "step"}
    )


def _choose(candidates: list, options: list[dict], config, training, dense) -> tuple:
    """The candidate best on the inner split (the only one when there is one) and a record."""
    if len(candidates) == 1:
        return candidates[0], {"options": options, "chosen": 0}
    index, values = choose_on_inner(
        candidates, training, training.split.dev, dense, config.train.candidates
    )
    return candidates[index], {"options": options, "chosen": index, "inner_ndcg@10": values}
