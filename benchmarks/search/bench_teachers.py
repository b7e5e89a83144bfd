"""Teacher rerankers on the shipped MS MARCO / TREC DL 2019 subset: nDCG@10 on held-out queries.

1. Relevance teacher: a cross-encoder from all-MiniLM-L6-v2 (fresh 1-output head), trained with
   the listwise softmax loss on the qrels grades of the top-k dense candidates of the train-split
   queries (unjudged candidates = grade 0); it reranks the dense top-k of the test queries.
2. Engagement teacher: the same network trained on IPS-debiased SIMULATED clicks (position-based
   model over the qrels, per-document clickbait noise) of the train-split queries. It is scored
   against the qrels and against the simulator's true attractiveness.

Splits: ``split_queries(judged, (0.6, 0.2, 0.2), seed)``: 26 train, 9 dev, 8 test queries.
Only the learning rate was chosen on dev (1e-4 over 3e-4, relevance teacher, 2 epochs at
max_length 256); nothing on test. ``heldout`` = dev + test (unseen in training) is reported for
a less noisy mean.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search/bench_teachers.py \
        [--candidates 30] [--max-length 128] [--epochs 4] [--learning-rate 1e-4] \
        [--sessions 1000] [--teachers relevance,engagement] [--trainable-layers N] [--quick]

Writes benchmarks/results/search_teachers.json (``summary``: nDCG@10 per system on the test
split, ``heldout`` the same on dev + test) and saves both teachers under
.cache/winnow/search/teachers/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from winnow.common.runs import atomic_write_text
from winnow.search.click_simulator import ClickModel, SimulatedClicks, simulate_clicks
from winnow.search.clicks import ClickJudge, ips_ctr
from winnow.search.cross_encoder import CrossEncoderTeacher, build_candidate_lists, rerank
from winnow.search.datasets import BeirDataset, QuerySplit, load_beir, split_queries
from winnow.search.embed import Encoder, encode_cached
from winnow.search.metrics import evaluate_run, run_from_arrays
from winnow.search.retrieve import DenseRetriever
from winnow.search.teachers import QrelsJudge

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "search_teachers.json"
TEACHERS = ROOT / ".cache" / "winnow" / "search" / "teachers"
METRICS = ("ndcg@10", "mrr@10")


@dataclass(frozen=True)
class Setup:
    data: BeirDataset
    split: QuerySplit
    candidates: dict[str, np.ndarray]  # query id -> [k] dense candidate ids, best first


def prepare(k: int, seed: int) -> Setup:
    """Load the subset, split the judged queries, and take the dense top-``k`` of each."""
    data = load_beir("search/msmarco_trecdl19_subset")
    split = split_queries(data.judged_query_ids, (0.6, 0.2, 0.2), seed=seed)
    dense = DenseRetriever().fit(data.doc_ids, encode_cached(Encoder(), data.passages))
    judged = data.with_queries(data.judged_query_ids)
    ids, _ = dense.search(judged.query_texts, k)
    return Setup(data, split, dict(zip(judged.query_ids, ids, strict=True)))


def run_of(setup: Setup, query_ids: list[str]) -> np.ndarray:
    return np.stack([setup.candidates[qid] for qid in query_ids])


def quality(qrels, query_ids, ranked_ids) -> dict[str, float]:
    result = evaluate_run(qrels, run_from_arrays(query_ids, ranked_ids), METRICS)
    return {metric: round(value, 4) for metric, value in result.mean.items()}


def train_teacher(setup: Setup, judge, settings: dict, name: str, save_dir: Path, quiet: bool):
    """Fit a teacher on the train split's candidate lists; returns it and the seconds taken."""
    train = setup.split.train
    lists = build_candidate_lists(setup.data, train, judge, run_of(setup, train))
    start = time.perf_counter()
    teacher = CrossEncoderTeacher(name=name, quiet=quiet, **settings).fit(lists)
    seconds = time.perf_counter() - start
    teacher.save(save_dir / name)
    return teacher, seconds, sum(len(entry.docs) for entry in lists)


def reranked_runs(setup: Setup, teachers: dict, query_ids: list[str]) -> tuple[dict, float]:
    """``{system: {qid: [k] ids}}`` for dense and dense + each teacher, and the rerank seconds."""
    dense = run_of(setup, query_ids)
    runs = {"dense": dict(zip(query_ids, dense, strict=True))}
    start = time.perf_counter()
    for name, teacher in teachers.items():
        reranked, _ = rerank(teacher, setup.data, query_ids, dense)
        runs[f"dense+{name}_teacher"] = dict(zip(query_ids, reranked, strict=True))
    return runs, time.perf_counter() - start


def click_signal_runs(sim: SimulatedClicks, setup: Setup, query_ids: list[str]) -> dict:
    """Reference runs: each query's candidates ordered by its own SIMULATED raw or IPS CTR."""
    runs = {}
    for label, values in (("raw_ctr", sim.log.ctr()), ("ips_ctr", ips_ctr(sim.log))):
        runs[f"own_clicks_{label}"] = {
            qid: np.array(
                sorted(setup.candidates[qid], key=lambda d, v=values[qid]: -v.get(d, 0.0))
            )
            for qid in query_ids
        }
    return runs


def score_runs(runs: dict, query_ids: list[str], qrels) -> dict:
    return {
        name: quality(qrels, query_ids, np.stack([run[qid] for qid in query_ids]))
        for name, run in runs.items()
    }


def evaluate(setup: Setup, teachers: dict, sim: SimulatedClicks) -> tuple[dict, float]:
    """nDCG@10 and MRR@10 per system on dev, test and held-out (dev + test) queries, against the
    qrels and against the simulator's true attractiveness; and the rerank seconds."""
    parts = {
        "dev": setup.split.dev,
        "test": setup.split.test,
        "heldout": setup.split.dev + setup.split.test,
    }
    runs, seconds = reranked_runs(setup, teachers, parts["heldout"])
    runs.update(click_signal_runs(sim, setup, parts["heldout"]))
    truth = sim.attractiveness_qrels()
    evaluations = {
        part: {
            "queries": len(query_ids),
            "qrels": score_runs(runs, query_ids, setup.data.qrels),
            "simulated_attractiveness": score_runs(runs, query_ids, truth),
        }
        for part, query_ids in parts.items()
    }
    return evaluations, seconds


def ndcg_table(evaluation: dict) -> dict:
    return {
        "queries": evaluation["queries"],
        "ndcg10_vs_qrels": {name: row["ndcg@10"] for name, row in evaluation["qrels"].items()},
        "ndcg10_vs_simulated_attractiveness": {
            name: row["ndcg@10"] for name, row in evaluation["simulated_attractiveness"].items()
        },
    }


def run(args: argparse.Namespace) -> dict:
    """Train the chosen teachers on the train split and score them; returns the result record."""
    began = time.perf_counter()
    k = 10 if args.quick else args.candidates
    setup = prepare(k, args.seed)
    if args.quick:
        split = QuerySplit(*[part[:3] for part in asdict(setup.split).values()])
        setup = Setup(setup.data, split, setup.candidates)
    settings = {
        "max_length": args.max_length,
        "epochs": 1 if args.quick else args.epochs,
        "learning_rate": args.learning_rate,
        "temperature": args.temperature,
        "trainable_layers": args.trainable_layers,
        "seed": args.seed,
        "num_threads": 1,
    }
    judged = setup.data.judged_query_ids
    click_model = ClickModel(sessions=args.sessions, seed=args.seed)
    sim = simulate_clicks(judged, run_of(setup, judged), setup.data.qrels, click_model)
    judges = {
        "relevance": QrelsJudge(setup.data.qrels),
        "engagement": ClickJudge(ips_ctr(sim.log)),
    }
    teachers, seconds, pairs = {}, {}, {}
    for name in args.teachers.split(","):
        teachers[name], seconds[f"train_{name}"], pairs[name] = train_teacher(
            setup, judges[name], settings, name, args.save_dir, args.quiet
        )
    evaluations, seconds["rerank_heldout"] = evaluate(setup, teachers, sim)
    seconds = {key: round(value, 1) for key, value in seconds.items()}
    seconds["total"] = round(time.perf_counter() - began, 1)
    return {
        "summary": {
            **ndcg_table(evaluations["test"]),
            "heldout": ndcg_table(evaluations["heldout"]),
            "dev": ndcg_table(evaluations["dev"]),
            "simulated_clicks": True,
        },
        "evaluations": evaluations,
        "settings": {
            **settings,
            "candidates": k,
            "loss": "listwise",
            "split_seed": args.seed,
            "train_queries": len(setup.split.train),
            "train_pairs_per_epoch": pairs,
            "quick": args.quick,
        },
        "click_simulation": sim.summary(),
        "seconds": seconds,
        "loss_history": {name: teacher.history_ for name, teacher in teachers.items()},
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(), "torch_threads": 1},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=1 / 3)
    parser.add_argument(
        "--trainable-layers", type=int, default=None, help="top layers trained; default all"
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teachers", default="relevance,engagement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--save-dir", type=Path, default=TEACHERS)
    parser.add_argument("--quick", action="store_true", help="3 train queries, 1 epoch, k=10")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    result = run(args)
    atomic_write_text(args.out, json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(json.dumps(result["seconds"], indent=2))


if __name__ == "__main__":
    main()
