"""Pre-flight checks on crafted pairs: tiny Llamas that speak SmolLM2's real tokenizer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from winnow.cli import app
from winnow.distill.exceptions import (
    ChatTemplateMismatchError,
    OutputLayerError,
    PreflightError,
    StopTokenMismatchError,
    TokenizerMismatchError,
)
from winnow.distill.models import TinyModelConfig, build_tiny_model, char_tokenizer
from winnow.distill.preflight import preflight

SMOLLM2_TOKENIZER = Path(__file__).parents[1] / "fixtures" / "smollm2_tokenizer"
PROMPTS = ["What is 12 + 7?", "Add 305 and 18."]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(SMOLLM2_TOKENIZER)


def tiny(tokenizer, seed=0):
    config = TinyModelConfig(family="llama", hidden_size=16, num_layers=1, num_heads=2)
    return build_tiny_model(config, tokenizer, seed=seed)


@pytest.fixture(scope="module")
def pair(tokenizer):
    return tiny(tokenizer, 0), tiny(tokenizer, 1)


def test_a_matching_pair_passes_and_states_the_direction(pair, tokenizer):
    student, teacher = pair
    lines = preflight(student, tokenizer, teacher, tokenizer, PROMPTS, "forward_kl")
    assert lines[0].startswith("tokenizers: identical, 49,152 tokens; eos '<|im_end|>'")
    assert lines[-2] == "chat template: shared"
    assert lines[-1] == "signal: forward KL: KL(teacher || student), mode-covering"
    reverse = preflight(student, tokenizer, teacher, tokenizer, PROMPTS, "reverse_kl")
    assert reverse[-1] == "signal: reverse KL: KL(student || teacher), mode-seeking"


def test_a_different_vocabulary_is_refused_with_both_sizes(pair, tokenizer):
    student, _ = pair
    other = char_tokenizer("0123456789+=")
    teacher = tiny(other)
    with pytest.raises(TokenizerMismatchError, match="49152 tokens, teacher tokenizer 16"):
        preflight(student, tokenizer, teacher, other, PROMPTS, "forward_kl")


def test_the_same_vocabulary_encoding_prompts_differently_is_refused():
    ours = char_tokenizer("0123456789+=")
    theirs = copy.deepcopy(ours)
    theirs.backend_tokenizer.post_processor = None  # no <bos> before the prompt
    student, teacher = tiny(ours), tiny(theirs)
    with pytest.raises(TokenizerMismatchError, match=r"'1\+2=' encodes to \[1, 5, 14, 6, 15\]"):
        preflight(student, ours, teacher, theirs, ["1+2="], "forward_kl")


def test_an_output_layer_smaller_than_the_tokenizer_is_refused(pair, tokenizer):
    student, teacher = pair
    small = copy.deepcopy(teacher)
    small.resize_token_embeddings(49_000)
    with pytest.raises(OutputLayerError, match="teacher's output layer has 49,000 rows"):
        preflight(student, tokenizer, small, tokenizer, PROMPTS, "forward_kl")


def test_a_student_that_cannot_stop_where_the_teacher_ends_is_refused(pair, tokenizer):
    student, teacher = pair
    chatty = copy.deepcopy(teacher)
    chatty.generation_config.eos_token_id = [tokenizer.eos_token_id, 0]  # also <|endoftext|>
    with pytest.raises(StopTokenMismatchError, match=r"'<\|endoftext\|>' \(0\)"):
        preflight(student, tokenizer, chatty, tokenizer, PROMPTS, "forward_kl")
    # The other way round is fine: the student may stop at more ids than the teacher.
    preflight(chatty, tokenizer, student, tokenizer, PROMPTS, "forward_kl")


def test_different_chat_templates_are_refused(pair, tokenizer):
    student, teacher = pair
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ChatTemplateMismatchError, match="chat templates differ"):
        preflight(student, tokenizer, teacher, plain, PROMPTS, "reverse_kl")
    assert issubclass(ChatTemplateMismatchError, PreflightError)


def test_the_check_command_prints_every_check_or_one_error(pair, tokenizer, tmp_path):
    student, teacher = pair
    for role, model in (("student", student), ("teacher", teacher)):
        model.save_pretrained(tmp_path / role)
        tokenizer.save_pretrained(tmp_path / role)
    runner = CliRunner()
    args = ["distill", "check", "--student", str(tmp_path / "student")]
    result = runner.invoke(app, [*args, "--teacher", str(tmp_path / "teacher")])
    assert result.exit_code == 0, result.output
    assert "ok  signal: forward KL: KL(teacher || student)" in result.output
    other = char_tokenizer("0123456789+=")
    tiny(other).save_pretrained(tmp_path / "char")
    other.save_pretrained(tmp_path / "char")
    result = runner.invoke(app, [*args, "--teacher", str(tmp_path / "char")])
    assert result.exit_code == 2 and "teacher tokenizer 16" in result.output
