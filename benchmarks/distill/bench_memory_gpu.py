"""GPU memory and time of one on-policy distillation step at Qwen3-0.6B size: TRL's GKD loss on
full logits vs winnow's ``opd_loss``, the arms of bench_memory.py.

Student and teacher are random-init Qwen3 decoders built from Qwen3-0.6B's config (d = 1024,
28 layers, 16 query / 8 key-value heads of width 128, MLP 3072, vocabulary 151,936, tied
embeddings), the teacher with another seed, in bfloat16 with the student's gradient
checkpointing on (TRL's GKDConfig default). The batch is 8 sequences of 256 prompt + 1,024
response random token ids (8,192 response tokens, no padding). Each arm runs in a fresh process
(this script with ``--arm NAME``); its peak is ``torch.cuda.max_memory_allocated`` during a step
(``reset_peak_memory_stats`` before it) above ``memory_allocated`` once models and batch are on
the device. Saved-for-backward bytes, warm-up, medians and the loss check are as in
bench_memory.py, except that the saved bytes miss the layer inputs that (non-reentrant)
checkpointing keeps outside autograd's hooks, the same in every arm. In bfloat16, TRL's
log-softmax returns bfloat16 while winnow's runs in float32, so the two losses are recorded,
not required to agree.

    .venv/bin/python benchmarks/distill/bench_memory_gpu.py [--repeats 3] [--chunk-size 1024]
    .venv/bin/python benchmarks/distill/bench_memory_gpu.py --dry-run   # tiny, on CPU, no file

Writes benchmarks/results/distill_memory_gpu.json (``--out`` to change; a dry run writes only
when given ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from bench_memory import (
    ARMS,
    LOSS_TOLERANCE,
    RssMeter,
    build_batch,
    build_model,
    machine,
    measure_arm,
    spawn_arms,
    summarize,
)
from transformers import Qwen3Config

from winnow.common.runs import atomic_write_text

RESULTS = Path(__file__).resolve().parents[1] / "results" / "distill_memory_gpu.json"
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
QWEN3_06B = {
    "vocab_size": 151_936,
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "max_position_embeddings": 40_960,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
DRY_RUN = {
    "vocab_size": 4096,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}


class CudaMeter:
    """Peak bytes allocated by torch on the current CUDA device between ``start`` and ``stop``."""

    name = "torch.cuda.max_memory_allocated after reset_peak_memory_stats"

    def current(self) -> int:
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()

    def start(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def stop(self) -> int:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()


def run_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    sizes = DRY_RUN if args.dry_run else QWEN3_06B
    config = Qwen3Config(**sizes)
    dtype = DTYPES[args.dtype]
    student = build_model(config, args.seed, dtype, args.device)
    teacher = build_model(config, args.teacher_seed, dtype, args.device)
    if args.gradient_checkpointing:  # transformers 5 renamed it; non-reentrant by default
        getattr(student, "activation_checkpointing_enable", student.gradient_checkpointing_enable)()
    batch = build_batch(
        args.sequences,
        args.prompt_tokens,
        args.response_tokens,
        sizes["vocab_size"],
        args.seed,
        args.device,
    )
    meter = CudaMeter() if args.device.startswith("cuda") else RssMeter()
    result = measure_arm(args.arm, student, teacher, batch, args, meter)
    if isinstance(meter, CudaMeter):
        result["max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved()
        result["device_name"] = torch.cuda.get_device_name()
    print(json.dumps(result))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--response-tokens", type=int, default=1024)
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument(
        "--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True
    )
    parser.add_argument("--chunk-size", type=int, default=1024, help="winnow's rows per chunk")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=4, help="CPU threads per arm process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-seed", type=int, default=1)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS}")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny Qwen3 (d = 64, 2 layers, vocabulary 4,096), 2 x (4 + 8) tokens, 1 repeat, CPU",
    )
    parser.add_argument("--arm", choices=ARMS, help="run one arm in this process (internal)")
    args = parser.parse_args()
    if args.dry_run:
        args.sequences, args.prompt_tokens, args.response_tokens = 2, 4, 8
        args.repeats, args.device, args.threads = 1, "cpu", 1
    return args


def main() -> None:
    args = parse_args()
    if args.arm:
        run_child(args)
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run to test on CPU")
    load_at_start = os.getloadavg()[0]
    results = spawn_arms(Path(__file__).resolve(), sys.argv[1:], ARMS, args.threads)
    sizes = DRY_RUN if args.dry_run else QWEN3_06B
    config = {key: value for key, value in vars(args).items() if key not in ("arm", "out")}
    payload = {
        "benchmark": "distill_memory_gpu",
        "machine": machine(args.threads, args.device, load_at_start)
        | ({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {}),
        "config": config | {"model": sizes, "arms": list(ARMS)},
        "results": results,
        "summary": summarize(results, LOSS_TOLERANCE if args.dtype == "float32" else None),
    }
    out = args.out or (None if args.dry_run else RESULTS)
    if out is not None:
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["summary"], indent=2))


if __name__ == "__main__":
    main()
