"""Memory and time of one on-policy distillation step: TRL's GKD loss on full logits vs winnow's
``opd_loss`` on hidden states, keeping every response token or a TIP selection of them.

A step is the student's forward and backward, the teacher's forward (no grad) and the loss, on
one fixed rollout batch; there is no optimizer step, so every repeat sees the same input and
gives the same loss. Models are random-init Qwen2 decoders built from config with Qwen's
vocabulary of 151,936 tokens and tied embeddings: student d = 64, teacher d = 128, 2 layers
each. The batch is 16 sequences of 16 prompt + 128 response random token ids (2,048 response
tokens, no padding), the same in every arm. Each arm runs in a fresh process (this script with
``--arm NAME``), in float32 on one thread:

- ``trl``: ``GKDTrainer.generalized_jsd_loss`` (``trl.experimental.gkd``) at beta = 0, forward
  KL averaged over label tokens ("batchmean"), on the full ``model(...).logits`` of student and
  teacher, shifted as ``GKDTrainer.compute_loss`` shifts them (logits[:, :-1], labels[:, 1:];
  labels are -100 on the prompt, as ``generate_on_policy_outputs`` sets them).
- ``trl_chunked``: the chunked loss of TRL's maintained ``DistillationTrainer``
  (``trl.trainer.distillation_trainer._chunked_divergence_loss``, the one its ``compute_loss``
  calls) at beta = 0 on the backbones' hidden states: vocabulary tiles, never full logits. Off
  CUDA/XPU (no Triton) it projects every position, prompt included, and masks afterwards. TRL's
  other memory option, Liger's fused JSD (``use_liger_kernel``), is a Triton kernel and does not
  run on CPU.
- ``winnow_all``, ``winnow_entropy50``, ``winnow_q3``: :func:`winnow.distill.objectives.opd_loss`
  as the trainer calls it, forward KL chunked over ``--chunk-size`` rows, keeping every response
  row, half of them drawn by student entropy (``entropy_sample``, p = 0.5), or quadrant 3 only
  (low entropy, high divergence).

Per arm: the peak resident set size during a step above the RSS once models and batch are
loaded (the kernel's VmHWM, reset before each step by writing 5 to /proc/self/clear_refs; where
that file is not writable, the largest RSS a thread reads from /proc/self/statm every
millisecond); the bytes autograd saves for backward (distinct storages a saved_tensors_hooks pack
hook sees during the forward, in total and without parameters); the step's wall time. Peaks and
times are medians over ``--repeats`` steps after one warm-up step. ``winnow_all`` and ``trl``
compute the same mean forward KL; the summary records their relative difference. Linux only.

    .venv/bin/python benchmarks/distill/bench_memory.py [--repeats 3] [--chunk-size 256] [--quick]
    .venv/bin/python benchmarks/distill/bench_memory.py --shape smollm2 --repeats 2

``--shape smollm2`` uses SmolLM2-135M's shapes instead (Llama, vocabulary 49,152, d = 576,
9 heads of which 3 key/value, MLP 1,536, tied embeddings): the teacher with its 30 layers and
the student with the 10 that ``winnow distill prune --layers 10`` keeps, random init.

Writes benchmarks/results/distill_memory.json (``--shape smollm2``: distill_memory_smollm2.json).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
import transformers
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
)

from winnow.common.progress import track_progress
from winnow.common.runs import atomic_write_text
from winnow.distill.models import hidden_states, output_weight
from winnow.distill.objectives import opd_loss
from winnow.distill.rollout import RolloutBatch
from winnow.distill.tokens import SelectorConfig
from winnow.distill.trainer import StudentBody

RESULTS = Path(__file__).resolve().parents[1] / "results"
VOCAB = 151_936  # Qwen2 / Qwen3
SMOLLM2_VOCAB = 49_152
MIB = 2**20
LOSS_TOLERANCE = 1e-4  # relative; float32 sums of the same terms in two orders
GOALS = {
    "peak_ratio_entropy50_vs_trl": 0.40,
    "peak_ratio_all_vs_trl": 0.70,
    "step_time_ratio_entropy50_vs_trl": 1.0,
}
SELECTORS = {
    "winnow_all": SelectorConfig(name="all"),
    "winnow_entropy50": SelectorConfig(name="entropy_sample", p=0.5),
    "winnow_q3": SelectorConfig(name="quadrants", keep_quadrants=[3]),
}
ARMS = ("trl", "trl_chunked", *SELECTORS)
LossFn = Callable[[PreTrainedModel, PreTrainedModel, RolloutBatch], tuple[Tensor, int]]


# -- models and batch -----------------------------------------------------------------------------


def qwen2_config(hidden: int, layers: int, vocab: int, positions: int) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 16,
        num_key_value_heads=hidden // 16,
        max_position_embeddings=positions,
        tie_word_embeddings=True,
    )


def smollm2_config(layers: int, positions: int) -> LlamaConfig:
    """SmolLM2-135M-Instruct's shapes with ``layers`` decoder layers."""
    return LlamaConfig(
        vocab_size=SMOLLM2_VOCAB,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=layers,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=max(positions, 2048),
        rope_theta=100_000.0,
        tie_word_embeddings=True,
    )


def build_model(
    config: PretrainedConfig, seed: int, dtype: torch.dtype, device: str
) -> PreTrainedModel:
    """A random-init causal LM of ``config``, built directly on ``device``."""
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def build_batch(
    sequences: int, prompt_tokens: int, response_tokens: int, vocab: int, seed: int, device: str
) -> RolloutBatch:
    """Random token ids, every sequence ``prompt_tokens + response_tokens`` long (no padding)."""
    length = prompt_tokens + response_tokens
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (sequences, length), generator=generator)
    response_mask = torch.zeros(sequences, length, dtype=torch.bool)
    response_mask[:, prompt_tokens:] = True
    batch = RolloutBatch(
        input_ids=input_ids,
        attention_mask=torch.ones(sequences, length, dtype=torch.long),
        position_ids=torch.arange(length).expand(sequences, length).contiguous(),
        response_mask=response_mask,
        problem_index=torch.arange(sequences),
        responses=[""] * sequences,
    )
    return batch.to(device)


# -- the losses -----------------------------------------------------------------------------------


def trl_loss(prompt_tokens: int) -> LossFn:
    """TRL's GKD step at beta = 0, as ``GKDTrainer.compute_loss`` runs it."""
    from trl.experimental.gkd import GKDTrainer

    def loss(student, teacher, batch):
        labels = batch.input_ids.clone()
        labels[batch.attention_mask == 0] = -100
        labels[:, :prompt_tokens] = -100
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        student_logits = student(**inputs).logits
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits
        value = GKDTrainer.generalized_jsd_loss(
            student_logits=student_logits[:, :-1, :],
            teacher_logits=teacher_logits[:, :-1, :],
            labels=labels[:, 1:],
            beta=0.0,
            temperature=1.0,
            reduction="batchmean",
        )
        return value, int((labels[:, 1:] != -100).sum())

    return loss


def trl_chunked_loss(prompt_tokens: int) -> LossFn:
    """TRL's ``DistillationTrainer`` chunked loss at beta = 0 (forward KL), token mean."""
    from trl.trainer.distillation_trainer import _chunked_divergence_loss

    def loss(student, teacher, batch):
        inputs = (batch.input_ids, batch.attention_mask, batch.position_ids)
        student_hidden = StudentBody(student)(*inputs)[:, :-1]
        with torch.no_grad():
            teacher_hidden = hidden_states(teacher, *inputs)[:, :-1]
        mask = batch.response_mask[:, 1:].long()
        value, _, count = _chunked_divergence_loss(
            student_hidden,
            teacher_hidden,
            output_weight(student),
            output_weight(teacher),
            mask,
            beta=0.0,
        )
        return value, int(count)

    return loss


def winnow_loss(selector: SelectorConfig, chunk_size: int, seed: int) -> LossFn:
    """winnow's OPD loss with ``selector``, as ``OnPolicyDistiller`` calls it."""
    divergence = {"kind": "forward_kl", "beta": 0.5, "temperature": 1.0, "chunk_size": chunk_size}

    def loss(student, teacher, batch):
        step = opd_loss(
            StudentBody(student),
            output_weight(student),
            partial(hidden_states, teacher),
            output_weight(teacher),
            batch,
            selector,
            torch.Generator().manual_seed(seed),
            divergence=divergence,
        )
        return step.loss, int(step.kept.numel())

    return loss


def make_loss(arm: str, args: argparse.Namespace) -> LossFn:
    if arm == "trl":
        return trl_loss(args.prompt_tokens)
    if arm == "trl_chunked":
        return trl_chunked_loss(args.prompt_tokens)
    return winnow_loss(SELECTORS[arm], args.chunk_size, args.seed)


# -- what is measured -----------------------------------------------------------------------------


class RssMeter:
    """Peak resident set size of this process between ``start`` and ``stop``, in bytes."""

    def __init__(self, interval_s: float = 1e-3):
        self.interval_s = interval_s
        self.kernel_reset = _can_reset_peak_rss()
        self.name = (
            "VmHWM after writing 5 to /proc/self/clear_refs"
            if self.kernel_reset
            else f"largest RSS read from /proc/self/statm every {interval_s * 1e3:g} ms"
        )
        self._peak = 0
        self._sampler: threading.Thread | None = None
        self._running = threading.Event()

    def current(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def start(self) -> None:
        if self.kernel_reset:
            _reset_peak_rss()
            return
        self._peak = self.current()
        self._running.set()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def stop(self) -> int:
        if self.kernel_reset:
            return _status_kib("VmHWM") * 1024
        self._running.clear()
        self._sampler.join()
        return max(self._peak, self.current())

    def _sample(self) -> None:
        while self._running.is_set():
            self._peak = max(self._peak, self.current())
            time.sleep(self.interval_s)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(f"{field}:"))
    return int(line.split()[1])


def _reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _can_reset_peak_rss() -> bool:
    try:
        _reset_peak_rss()
    except OSError:
        return False
    return True


@contextmanager
def saved_storages() -> Iterator[dict[int, int]]:
    """``{storage address: bytes}`` of every tensor autograd saves for backward in the block.

    Packed tensors stay alive until backward, so an address cannot be reused within the block.
    """
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield storages


def timed_step(loss_fn: LossFn, student, teacher, batch, meter, parameters: set[int]) -> dict:
    """One step from freed gradients to filled ones: its peak, saved bytes, time and loss."""
    for parameter in student.parameters():
        parameter.grad = None
    gc.collect()
    meter.start()
    started = time.perf_counter()
    with saved_storages() as storages:
        loss, kept = loss_fn(student, teacher, batch)
    loss.backward()
    peak = meter.stop()  # synchronises an accelerator before the clock stops
    seconds = time.perf_counter() - started
    return {
        "peak_bytes": peak,
        "saved_bytes": sum(storages.values()),
        "saved_activation_bytes": sum(
            size for address, size in storages.items() if address not in parameters
        ),
        "seconds": seconds,
        "loss": float(loss.detach()),
        "kept_tokens": kept,
    }


def measure_arm(arm: str, student, teacher, batch, args, meter) -> dict:
    """Warm-up plus ``args.repeats`` steps of ``arm``; medians over the repeats."""
    student.train()
    teacher.eval().requires_grad_(False)
    loss_fn = make_loss(arm, args)
    parameters = {
        parameter.untyped_storage().data_ptr()
        for model in (student, teacher)
        for parameter in model.parameters()
    }
    gc.collect()
    baseline = meter.current()
    steps = [
        timed_step(loss_fn, student, teacher, batch, meter, parameters)
        for _ in range(args.repeats + 1)
    ]
    timed = steps[1:]
    return {
        "arm": arm,
        "meter": meter.name,
        "loss": timed[-1]["loss"],
        "kept_tokens": timed[-1]["kept_tokens"],
        "response_tokens": int(batch.response_mask[:, 1:].sum()),
        "baseline_bytes": baseline,
        "peak_bytes_above_baseline": statistics.median(s["peak_bytes"] - baseline for s in timed),
        "saved_bytes": timed[-1]["saved_bytes"],
        "saved_activation_bytes": timed[-1]["saved_activation_bytes"],
        "step_seconds": statistics.median(s["seconds"] for s in timed),
        "steps": steps,
    }


# -- one process per arm --------------------------------------------------------------------------


def spawn_arms(script: Path, argv: list[str], arms: tuple[str, ...], threads: int) -> dict:
    """Run each arm as ``python script *argv --arm NAME``, one at a time; its last stdout line is
    its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    results = {}
    with track_progress("arms", total=len(arms)) as bar:
        for arm in arms:
            done = subprocess.run(
                [sys.executable, str(script), *argv, "--arm", arm],
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode:
                raise SystemExit(f"arm {arm} failed ({done.returncode}):\n{done.stderr[-4000:]}")
            results[arm] = json.loads(done.stdout.strip().splitlines()[-1])
            peak = results[arm]["peak_bytes_above_baseline"] / MIB
            print(
                f"{arm}: peak {peak:.0f} MiB, step {results[arm]['step_seconds']:.2f} s",
                file=sys.stderr,
            )
            bar.advance(1)
    return results


def summarize(results: dict, loss_tolerance: float | None) -> dict:
    """Per-arm figures in MiB and seconds, ratios to ``trl``, and whether the goals hold."""
    trl = results["trl"]
    summary: dict = {
        "peak_mib": {arm: r["peak_bytes_above_baseline"] / MIB for arm, r in results.items()},
        "saved_mib": {arm: r["saved_bytes"] / MIB for arm, r in results.items()},
        "saved_activation_mib": {
            arm: r["saved_activation_bytes"] / MIB for arm, r in results.items()
        },
        "step_seconds": {arm: r["step_seconds"] for arm, r in results.items()},
        "loss": {arm: r["loss"] for arm, r in results.items()},
        "kept_tokens": {arm: r["kept_tokens"] for arm, r in results.items()},
    }
    for peer in ("trl", "trl_chunked"):
        for arm in (*SELECTORS, "trl_chunked"):
            if arm == peer:
                continue
            short = arm.removeprefix("winnow_")
            summary[f"peak_ratio_{short}_vs_{peer}"] = (
                results[arm]["peak_bytes_above_baseline"]
                / results[peer]["peak_bytes_above_baseline"]
            )
            summary[f"step_time_ratio_{short}_vs_{peer}"] = (
                results[arm]["step_seconds"] / results[peer]["step_seconds"]
            )
    difference = abs(results["winnow_all"]["loss"] - trl["loss"]) / abs(trl["loss"])
    summary["loss_relative_difference_all_vs_trl"] = difference
    chunked = results["trl_chunked"]["loss"]
    summary["loss_relative_difference_trl_chunked_vs_trl"] = abs(chunked - trl["loss"]) / abs(
        trl["loss"]
    )
    summary["loss_agrees"] = None if loss_tolerance is None else difference <= loss_tolerance
    summary["goals"] = {
        f"{name} <= {bound:g}": summary[name] <= bound for name, bound in GOALS.items()
    }
    return summary


def machine(threads: int, device: str, load_at_start: float) -> dict:
    """Where the arms ran; the load averages tell whether other work shared the cores."""
    import trl

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "device": device,
        "load_average_1m_at_start": load_at_start,
        "load_average_1m_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


# -- entry points ---------------------------------------------------------------------------------


def run_child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    positions = args.prompt_tokens + args.response_tokens
    if args.shape == "smollm2":
        vocab, configs = (
            SMOLLM2_VOCAB,
            (smollm2_config(10, positions), smollm2_config(30, positions)),
        )
    else:
        vocab = VOCAB
        configs = (
            qwen2_config(args.student_hidden, args.student_layers, VOCAB, positions),
            qwen2_config(args.teacher_hidden, args.teacher_layers, VOCAB, positions),
        )
    student = build_model(configs[0], args.seed, torch.float32, "cpu")
    teacher = build_model(configs[1], args.seed + 1, torch.float32, "cpu")
    batch = build_batch(
        args.sequences, args.prompt_tokens, args.response_tokens, vocab, args.seed, "cpu"
    )
    print(json.dumps(measure_arm(args.arm, student, teacher, batch, args, RssMeter())))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--response-tokens", type=int, default=128)
    parser.add_argument("--student-hidden", type=int, default=64)
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--teacher-hidden", type=int, default=128)
    parser.add_argument("--teacher-layers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=256, help="winnow's rows per chunk")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="4 x (8 + 32) tokens, 1 repeat, results not written"
    )
    parser.add_argument(
        "--shape", choices=("tiny", "smollm2"), default="tiny", help="model shapes (docstring)"
    )
    parser.add_argument("--arm", choices=ARMS, help="run one arm in this process (internal)")
    args = parser.parse_args()
    if args.quick:
        args.sequences, args.prompt_tokens, args.response_tokens, args.repeats = 4, 8, 32, 1
    return args


def main() -> None:
    args = parse_args()
    if args.arm:
        run_child(args)
        return
    load_at_start = os.getloadavg()[0]
    results = spawn_arms(Path(__file__).resolve(), sys.argv[1:], ARMS, args.threads)
    config = {key: value for key, value in vars(args).items() if key != "arm"}
    payload = {
        "benchmark": "distill_memory",
        "machine": machine(args.threads, "cpu", load_at_start),
        "config": config
        | {
            "vocab": SMOLLM2_VOCAB if args.shape == "smollm2" else VOCAB,
            "dtype": "float32",
            "arms": list(ARMS),
        },
        "results": results,
        "summary": summarize(results, LOSS_TOLERANCE),
    }
    name = "distill_memory_smollm2.json" if args.shape == "smollm2" else "distill_memory.json"
    if not args.quick:  # a smoke test leaves the committed results alone
        atomic_write_text(RESULTS / name, json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["summary"], indent=2))


if __name__ == "__main__":
    main()
