"""Rollouts: sampled responses in one padded batch that every loss indexes the same way.

On-policy methods score the student's own samples, so the layout of a batch is a contract
between sampling and every loss: prompts are left-padded, responses follow at a common offset and
are right-padded, and :meth:`RolloutBatch.loss_rows` names the hidden-state rows whose next token is
a response token. No other module re-derives those positions.

Sampling is reproducible from ``seed`` alone (the global RNG is forked and restored), so a resumed
run re-draws the same rollouts. Two backends share one interface: transformers ``generate``
(always available, used on CPU and in tests) and vLLM (optional, GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from winnow.distill.exceptions import BackendUnavailableError, DistillInputError
from winnow.distill.models import encode_prompts, stop_token_ids

__all__ = [
    "BACKENDS",
    "RolloutBatch",
    "SamplingBackend",
    "TransformersBackend",
    "VLLMBackend",
    "assemble_batch",
    "build_backend",
    "with_prompts",
]


@dataclass
class RolloutBatch:
    """``B`` sampled sequences: left-padded prompt, then response, then right padding.

    Shape:
        ``input_ids, attention_mask, position_ids, response_mask: [B, T]``;
        ``problem_index: [B]``; ``responses``: ``B`` strings.

    ``attention_mask`` is 1 on prompt and response tokens, 0 on padding; ``position_ids`` is
    ``cumsum(attention_mask) - 1`` clamped at 0; ``response_mask`` is True on generated tokens up
    to and including the first EOS (tokens after it are padding). ``problem_index[b]`` indexes the
    prompt list given to ``sample``; ``responses[b]`` is the response text, special tokens removed.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_mask: torch.Tensor
    problem_index: torch.Tensor
    responses: list[str]

    def loss_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch_idx [K], pos_idx [K])`` of hidden rows ``t`` whose next token ``t + 1`` is a
        response token, in row-major order: ``hidden[batch_idx, pos_idx]`` predicts
        ``input_ids[batch_idx, pos_idx + 1]``."""
        return self.response_mask[:, 1:].nonzero(as_tuple=True)

    def sequence_and_offset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """For each loss row: its sequence ``[K]`` (batch row) and offset ``[K]`` within the
        response (0 = the row predicting the first response token)."""
        batch_idx, pos_idx = self.loss_rows()
        offsets = self.response_mask.long().cumsum(dim=1) - 1
        return batch_idx, offsets[batch_idx, pos_idx + 1]

    def response_lengths(self) -> torch.Tensor:
        """Response tokens per sequence ``[B]``, EOS included when generated."""
        return self.response_mask.sum(dim=1)

    def to(self, device: str | torch.device) -> RolloutBatch:
        """The same batch with every tensor on ``device``."""
        moved = {
            field.name: getattr(self, field.name).to(device)
            for field in dataclasses.fields(self)
            if isinstance(getattr(self, field.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def select(self, rows: torch.Tensor) -> RolloutBatch:
        """The sequences ``rows`` (``[b]`` long indices) only, in that order; columns unchanged."""
        picked = {
            field.name: getattr(self, field.name)[rows.to(self.input_ids.device)]
            for field in dataclasses.fields(self)
            if isinstance(getattr(self, field.name), torch.Tensor)
        }
        return dataclasses.replace(self, **picked, responses=[self.responses[int(i)] for i in rows])


def with_prompts(
    batch: RolloutBatch, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> RolloutBatch:
    """The same responses after other prompts: ``prompts[b]`` replaces row ``b``'s prompt.

    OPSDC's teacher reads each student response after an instruction-bearing prompt. Responses
    keep their tokens and lengths, so the ``loss_rows`` of the two batches correspond one to one
    in row-major order (same ``sequence_and_offset``); only the positions move.
    """
    if len(prompts) != len(batch.responses):
        raise DistillInputError(
            f"prompts has {len(prompts)} entries for a batch of {len(batch.responses)} rollouts; "
            "fix: pass one prompt per rollout (repeat each prompt n times)"
        )
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    responses = [
        row[mask].tolist() for row, mask in zip(batch.input_ids, batch.response_mask, strict=True)
    ]
    rebuilt = assemble_batch(
        tokenizer, prompt_ids, prompt_mask, responses, batch.problem_index, eos_token_ids=()
    )
    return rebuilt.to(batch.input_ids.device)


class SamplingBackend(Protocol):
    """What a trainer needs from a sampler; tests may pass any object with this method."""

    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        seed: int = 0,
    ) -> RolloutBatch: ...


def assemble_batch(
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    generated: Sequence[Sequence[int]],
    problem_index: torch.Tensor,
    eos_token_ids: Collection[int],
) -> RolloutBatch:
    """A :class:`RolloutBatch` from left-padded prompts and the tokens generated after each.

    ``prompt_ids, prompt_mask: [B, P]`` (left-padded); ``generated``: ``B`` token lists, each
    cut after its first token in ``eos_token_ids`` (anything later, e.g. ``generate``'s padding,
    is dropped, so a pad id equal to EOS is harmless); ``problem_index: [B]``.
    """
    eos = set(eos_token_ids)
    responses = [_through_first_eos(list(row), eos) for row in generated]
    width = max(1, max(len(row) for row in responses))
    batch = len(responses)
    response_ids = torch.full((batch, width), tokenizer.pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((batch, width), dtype=torch.bool)
    for i, row in enumerate(responses):
        response_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        response_mask[i, : len(row)] = True
    attention_mask = torch.cat([prompt_mask.long().cpu(), response_mask.long()], dim=1)
    return RolloutBatch(
        input_ids=torch.cat([prompt_ids.cpu(), response_ids], dim=1),
        attention_mask=attention_mask,
        position_ids=(attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        response_mask=torch.cat(
            [torch.zeros(prompt_mask.shape, dtype=torch.bool), response_mask], 1
        ),
        problem_index=problem_index.cpu(),
        responses=tokenizer.batch_decode(responses, skip_special_tokens=True),
    )


class TransformersBackend:
    """Samples with ``model.generate`` on the model's own device.

    Only the arguments of :meth:`sample` shape the distribution: sampling knobs stored in the
    model's ``generation_config`` (a hub model's top-k, repetition penalty) are ignored, so the
    samples come from the policy itself, as on-policy losses assume.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        seed: int = 0,
    ) -> RolloutBatch:
        """``n`` responses per prompt (rows ``i * n ... i * n + n - 1`` answer ``prompts[i]``).

        ``temperature = 0`` decodes greedily; otherwise tokens are sampled at ``temperature``
        from the nucleus ``top_p``. The same arguments give the same batch.
        """
        _check_sampling(n, temperature, top_p, max_new_tokens)
        prompt_ids, prompt_mask = encode_prompts(self.tokenizer, prompts)
        prompt_ids = prompt_ids.repeat_interleave(n, dim=0)
        prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
        eos = stop_token_ids(self.model, self.tokenizer)
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(eos),
            **_decoding(temperature, top_p),
        )
        device = self.model.device
        with _seeded(seed, device), _eval_mode(self.model), _plain_generation_config(self.model):
            sequences = self.model.generate(
                input_ids=prompt_ids.to(device),
                attention_mask=prompt_mask.to(device),
                generation_config=config,
            )
        return assemble_batch(
            self.tokenizer,
            prompt_ids,
            prompt_mask,
            sequences[:, prompt_ids.shape[1] :].tolist(),
            torch.arange(len(prompts)).repeat_interleave(n),
            eos,
        )


class VLLMBackend:
    """EXPERIMENTAL (never run by this project, which had no GPU with vLLM): samples with vLLM
    (``LLM.generate`` with ``SamplingParams``); needs ``pip install vllm``.

    vLLM loads the weights from ``model.name_or_path`` into the same GPU as training, taking
    ``gpu_memory_utilization`` of its memory (``rollout.vllm_gpu_memory_utilization``); after
    each optimizer step :meth:`sync_weights` copies the policy in, so it samples from the
    current policy. ``llm_kwargs`` go to ``vllm.LLM``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        gpu_memory_utilization: float = 0.3,
        **llm_kwargs: Any,
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise BackendUnavailableError(
                "the 'vllm' sampling backend needs vLLM, which is not installed; fix: "
                "pip install vllm (CUDA machines), or use backend 'transformers'"
            ) from exc
        if not model.name_or_path:
            raise DistillInputError(
                "the 'vllm' backend loads the policy from model.name_or_path, which is empty for "
                "a model built in memory; fix: save_pretrained it and pass load_model(folder)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=model.name_or_path,
            dtype=str(model.dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            **llm_kwargs,
        )

    def sync_weights(self) -> None:
        """Copy the current weights of ``model`` into the vLLM engine and drop its prefix cache.

        ``LLM.apply_model`` (vLLM >= 0.9) runs a function on the model inside each worker; the
        function carries the weights, so with vLLM's multiprocessing engine they are pickled
        across (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` keeps the engine in this process).
        """
        weights = [(name, p.detach()) for name, p in self.model.named_parameters()]
        self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights))
        self.llm.reset_prefix_cache()

    def sample(
        self,
        prompts: Sequence[str],
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 16,
        seed: int = 0,
    ) -> RolloutBatch:
        """Same contract as :meth:`TransformersBackend.sample` (the samples themselves differ)."""
        _check_sampling(n, temperature, top_p, max_new_tokens)
        prompt_ids, prompt_mask = encode_prompts(self.tokenizer, prompts)
        # One seed per prompt, drawn from ``seed``: prompts must not share one random stream.
        seeds = torch.randint(2**62, (len(prompts),), generator=torch.Generator().manual_seed(seed))
        params = [
            self._vllm.SamplingParams(
                n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=s
            )
            for s in seeds.tolist()
        ]
        requests = [
            {"prompt_token_ids": row[mask.bool()].tolist()}
            for row, mask in zip(prompt_ids, prompt_mask, strict=True)
        ]
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        generated = [list(sample.token_ids) for output in outputs for sample in output.outputs]
        return assemble_batch(
            self.tokenizer,
            prompt_ids.repeat_interleave(n, dim=0),
            prompt_mask.repeat_interleave(n, dim=0),
            generated,
            torch.arange(len(prompts)).repeat_interleave(n),
            stop_token_ids(self.model, self.tokenizer),
        )


BACKENDS: dict[str, Callable[[PreTrainedModel, PreTrainedTokenizerBase], SamplingBackend]] = {
    "transformers": TransformersBackend,
    "vllm": VLLMBackend,
}


def build_backend(
    name: Literal["transformers", "vllm"],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    **options: Any,
) -> SamplingBackend:
    """The backend registered as ``name`` in :data:`BACKENDS`, sampling from ``model``;
    ``options`` go to its constructor (vLLM: ``gpu_memory_utilization``)."""
    if name not in BACKENDS:
        raise DistillInputError(
            f"backend must be one of {', '.join(BACKENDS)}, got {name!r}; fix: use 'transformers'"
        )
    return BACKENDS[name](model, tokenizer, **options)


def _check_sampling(n: int, temperature: float, top_p: float, max_new_tokens: int) -> None:
    checks = (
        ("n", n, n >= 1, "an integer >= 1"),
        ("temperature", temperature, temperature >= 0, ">= 0 (0 = greedy)"),
        ("top_p", top_p, 0 < top_p <= 1, "in (0, 1]"),
        ("max_new_tokens", max_new_tokens, max_new_tokens >= 1, "an integer >= 1"),
    )
    for name, value, valid, allowed in checks:
        if not valid:
            raise DistillInputError(f"{name} must be {allowed}, got {value!r}")


def _decoding(temperature: float, top_p: float) -> dict[str, Any]:
    if temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}


def _through_first_eos(tokens: list[int], eos: set[int]) -> list[int]:
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1]
    return tokens


@contextmanager
def _seeded(seed: int, device: torch.device):
    accelerated = device.type != "cpu"
    devices = [device.index or 0] if accelerated else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if accelerated else None):
        torch.manual_seed(seed)
        yield


@contextmanager
def _eval_mode(model: PreTrainedModel):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def _plain_generation_config(model: PreTrainedModel):
    # generate() fills every unset option from model.generation_config; swap in an empty one so
    # only the options of the call apply.
    stored = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = stored
