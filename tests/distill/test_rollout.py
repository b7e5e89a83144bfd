"""Tests of winnow.distill.rollout: batch layout and loss rows, EOS handling, seeding, backends."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from winnow.distill.exceptions import BackendUnavailableError, DistillInputError
from winnow.distill.models import (
    TinyModelConfig,
    build_tiny_model,
    char_tokenizer,
    encode_prompts,
)
from winnow.distill.rollout import (
    BACKENDS,
    RolloutBatch,
    TransformersBackend,
    VLLMBackend,
    assemble_batch,
    build_backend,
    with_prompts,
)

PROMPTS = ["1+2=", "12+34=", "123+456="]  # different lengths, so prompts are left-padded
EOS, PAD = 2, 0


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer("0123456789+=")


@pytest.fixture(scope="module")
def model(tokenizer):
    config = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, max_positions=32)
    return build_tiny_model(config, tokenizer, seed=0)


@pytest.fixture(scope="module")
def backend(model, tokenizer):
    return TransformersBackend(model, tokenizer)


@pytest.fixture(scope="module")
def sampled(backend):
    return backend.sample(PROMPTS * 8, n=2, temperature=1.0, max_new_tokens=8, seed=0)


def test_layout_and_loss_rows(sampled, tokenizer):
    prompt_ids, prompt_mask = encode_prompts(tokenizer, PROMPTS * 8)
    width = prompt_ids.shape[1]
    rows = torch.arange(48) // 2
    assert torch.equal(sampled.input_ids[:, :width], prompt_ids[rows])
    assert torch.equal(sampled.attention_mask[:, :width], prompt_mask[rows])
    assert not sampled.response_mask[:, :width].any()
    expected_positions = (sampled.attention_mask.cumsum(1) - 1).clamp(min=0)
    assert torch.equal(sampled.position_ids, expected_positions)
    assert torch.equal(sampled.attention_mask.bool()[:, width:], sampled.response_mask[:, width:])
    batch_idx, pos_idx = sampled.loss_rows()
    assert len(batch_idx) == int(sampled.response_mask.sum())
    assert sampled.response_mask[batch_idx, pos_idx + 1].all()
    assert pos_idx.min() == width - 1  # the last prompt token predicts the first response token
    # every response token is predicted by exactly one loss row
    hit = torch.zeros_like(sampled.response_mask)
    hit[batch_idx, pos_idx + 1] = True
    assert torch.equal(hit, sampled.response_mask)


def test_sequence_offset_and_lengths(sampled):
    sequence, offset = sampled.sequence_and_offset()
    lengths = sampled.response_lengths()
    assert lengths.shape == (48,) and lengths.min() >= 1 and lengths.max() <= 8
    assert torch.equal(torch.bincount(sequence, minlength=48), lengths)
    for b in range(48):
        assert offset[sequence == b].tolist() == list(range(int(lengths[b])))


def test_eos_ends_a_response(sampled, tokenizer):
    ended = 0
    for b in range(48):
        tokens = sampled.input_ids[b][sampled.response_mask[b]].tolist()
        assert EOS not in tokens[:-1]
        after = ~sampled.response_mask[b]
        after[: sampled.response_mask[b].nonzero().max() + 1] = False
        assert (sampled.input_ids[b][after] == PAD).all()
        assert not sampled.attention_mask[b][after].any()
        ended += tokens[-1] == EOS
        assert sampled.responses[b] == tokenizer.decode(tokens, skip_special_tokens=True)
    assert 0 < ended < 48  # some responses stopped at EOS, some ran to max_new_tokens


def test_assemble_batch_cuts_at_the_first_eos(tokenizer):
    prompt_ids, prompt_mask = encode_prompts(tokenizer, ["1=", "12+3="])
    generated = [[5, EOS, 7, EOS], [6, 6, 6]]
    batch = assemble_batch(
        tokenizer, prompt_ids, prompt_mask, generated, torch.tensor([0, 1]), {EOS}
    )
    assert batch.input_ids[:, 6:].tolist() == [[5, EOS, PAD], [6, 6, 6]]
    assert batch.response_mask[:, 6:].tolist() == [[True, True, False], [True] * 3]
    assert batch.responses == ["1", "222"]
    assert batch.response_lengths().tolist() == [2, 3]
    # a pad id equal to EOS (common for hub models) changes nothing
    batch = assemble_batch(tokenizer, prompt_ids, prompt_mask, [[5, 7], [6]], torch.arange(2), {7})
    assert batch.response_lengths().tolist() == [2, 1]


def test_same_seed_same_batch_other_seed_other_samples(backend, sampled):
    state = torch.get_rng_state()
    again = backend.sample(PROMPTS * 8, n=2, temperature=1.0, max_new_tokens=8, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert torch.equal(again.input_ids, sampled.input_ids)
    assert again.responses == sampled.responses
    other = backend.sample(PROMPTS * 8, n=2, temperature=1.0, max_new_tokens=8, seed=1)
    assert other.responses != sampled.responses


def test_greedy_is_deterministic_and_argmax(backend, model, tokenizer):
    first = backend.sample(PROMPTS, temperature=0.0, max_new_tokens=5, seed=0)
    second = backend.sample(PROMPTS, temperature=0.0, max_new_tokens=5, seed=123)
    assert torch.equal(first.input_ids, second.input_ids)
    ids, mask = encode_prompts(tokenizer, PROMPTS)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -1]
    assert torch.equal(first.input_ids[:, ids.shape[1]], logits.argmax(-1))


def test_n_samples_per_prompt(backend):
    batch = backend.sample(PROMPTS, n=3, temperature=1.0, max_new_tokens=4, seed=0)
    assert batch.problem_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert len(batch.responses) == 9
    prompt_part = batch.input_ids[:, : batch.input_ids.shape[1] - 4]
    for i in range(3):
        assert (prompt_part[3 * i : 3 * i + 3] == prompt_part[3 * i]).all()


def test_stored_generation_options_are_ignored(model, tokenizer):
    stored, was_training = model.generation_config, model.training
    model.generation_config.top_k = 1  # would make sampling greedy if generate() applied it
    model.train()
    try:
        batch = TransformersBackend(model, tokenizer).sample(
            ["1+2="], n=16, temperature=1.0, max_new_tokens=4, seed=0
        )
        assert len(set(batch.responses)) > 1
        assert model.generation_config is stored and model.training
    finally:
        model.generation_config.top_k = None
        model.train(was_training)


def test_to_device_keeps_values(sampled):
    moved = sampled.to("cpu")
    assert isinstance(moved, RolloutBatch) and torch.equal(moved.input_ids, sampled.input_ids)
    assert moved.responses == sampled.responses


@pytest.mark.parametrize(
    ("argument", "value"),
    [("n", 0), ("temperature", -0.5), ("top_p", 0.0), ("top_p", 1.5), ("max_new_tokens", 0)],
)
def test_sampling_arguments_are_validated(backend, argument, value):
    with pytest.raises(DistillInputError, match=f"{argument} must be"):
        backend.sample(PROMPTS, **{argument: value})


def test_build_backend(model, tokenizer):
    assert isinstance(build_backend("transformers", model, tokenizer), TransformersBackend)
    assert set(BACKENDS) == {"transformers", "vllm"}
    with pytest.raises(DistillInputError, match="backend must be one of transformers, vllm"):
        build_backend("sglang", model, tokenizer)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_names_the_install(model, tokenizer):
    with pytest.raises(BackendUnavailableError, match="pip install vllm") as raised:
        VLLMBackend(model, tokenizer)
    assert isinstance(raised.value, ImportError)
    with pytest.raises(BackendUnavailableError, match="pip install vllm"):
        build_backend("vllm", model, tokenizer)


def test_with_prompts_keeps_responses_aligned(sampled, tokenizer):
    """Longer prompts (OPSDC's instruction) move the responses, not their loss rows' targets."""
    longer = ["99+" + PROMPTS[int(i) % 3] for i in sampled.problem_index]
    moved = with_prompts(sampled, tokenizer, longer)
    for batch in (sampled, moved):
        assert len(batch.loss_rows()[0]) == len(sampled.loss_rows()[0])
    targets = [
        b.input_ids[r[0], r[1] + 1]
        for b, r in ((sampled, sampled.loss_rows()), (moved, moved.loss_rows()))
    ]
    torch.testing.assert_close(targets[0], targets[1])
    for a, b in zip(sampled.sequence_and_offset(), moved.sequence_and_offset(), strict=True):
        torch.testing.assert_close(a, b)
    assert moved.responses == sampled.responses
    assert moved.input_ids.shape[1] > sampled.input_ids.shape[1]


def test_opd_loss_reads_the_teacher_batch(sampled, model, tokenizer):
    """A teacher batch rebuilt with the same prompts gives exactly the default loss."""
    from functools import partial

    from winnow.distill.models import hidden_states, output_weight
    from winnow.distill.objectives import opd_loss
    from winnow.distill.tokens import SelectorConfig

    prompts = [PROMPTS[int(i) % 3] for i in sampled.problem_index]
    same = with_prompts(sampled, tokenizer, prompts)
    hidden, weight = partial(hidden_states, model), output_weight(model)
    divergence = {"kind": "reverse_kl"}
    losses = [
        opd_loss(
            hidden,
            weight,
            hidden,
            weight,
            sampled,
            SelectorConfig(),
            torch.Generator().manual_seed(0),
            divergence,
            teacher_batch=teacher,
        ).loss
        for teacher in (None, same)
    ]
    torch.testing.assert_close(losses[0], losses[1])


def test_with_prompts_needs_one_prompt_per_rollout(sampled, tokenizer):
    with pytest.raises(DistillInputError, match="one prompt per rollout"):
        with_prompts(sampled, tokenizer, PROMPTS)


def test_opd_loss_applies_the_selectors_token_weights(sampled, model, tokenizer):
    """With IW-OPD weights the loss is the mean of the per-token divergences times
    token_weights of the kept rows (computed from the sampled tokens' log-ratios)."""
    from functools import partial

    from winnow.distill.models import hidden_states, output_weight
    from winnow.distill.objectives import opd_loss
    from winnow.distill.tokens import SelectorConfig, token_weights

    teacher = build_tiny_model(TinyModelConfig(), tokenizer, seed=5)
    selector = SelectorConfig(name="first_fraction", p=0.6, weighting="iw_opd")
    result = opd_loss(
        partial(hidden_states, model),
        output_weight(model),
        partial(hidden_states, teacher),
        output_weight(teacher),
        sampled,
        selector,
        torch.Generator().manual_seed(0),
        {"kind": "forward_kl"},
    )
    weights = token_weights(result.stats, result.kept, selector).to(result.per_token)
    assert not torch.allclose(weights, torch.ones_like(weights))
    torch.testing.assert_close(result.loss, (weights * result.per_token).mean())
