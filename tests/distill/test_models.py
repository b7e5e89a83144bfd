"""Tests of winnow.distill.models: char tokenizer, tiny models, loading, tokenizer checks, hidden
states."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from winnow.common.config import load_config
from winnow.common.exceptions import ConfigError
from winnow.distill.exceptions import DistillInputError, TokenizerMismatchError
from winnow.distill.models import (
    SPECIAL_TOKENS,
    TinyModelConfig,
    build_tiny_model,
    char_tokenizer,
    check_same_tokenizer,
    encode_prompts,
    hidden_states,
    load_model,
    output_weight,
)

ALPHABET = "0123456789+="
TINY = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, max_positions=32)


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer(ALPHABET)


# -- char tokenizer ----------------------------------------------------------------------------


def test_char_tokenizer_layout(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert len(tokenizer) == 4 + len(ALPHABET)
    assert tokenizer("12+3=")["input_ids"] == [1, 5, 6, 14, 7, 15]
    assert tokenizer("1", add_special_tokens=False)["input_ids"] == [5]
    assert tokenizer("1x")["input_ids"] == [1, 5, 3]  # unknown character
    assert tokenizer.decode([1, 5, 6, 2], skip_special_tokens=True) == "12"
    assert tokenizer.padding_side == "left"


def test_char_tokenizer_keeps_whitespace():
    tokenizer = char_tokenizer("ab \n")
    ids = tokenizer("a b\n", add_special_tokens=False)["input_ids"]
    assert len(ids) == 4
    assert tokenizer.decode(ids) == "a b\n"


def test_char_tokenizer_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = ALPHABET + "x" + ALPHABET[::-1]
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.padding_side == "left"
    check_same_tokenizer(tokenizer, loaded)


@pytest.mark.parametrize("alphabet", ["", "aa", None])
def test_char_tokenizer_rejects_bad_alphabet(alphabet):
    with pytest.raises(DistillInputError, match="alphabet must be a non-empty string"):
        char_tokenizer(alphabet)


# -- tokenizer mismatch ------------------------------------------------------------------------


def test_same_tokenizer_passes(tokenizer):
    check_same_tokenizer(tokenizer, char_tokenizer(ALPHABET))


def test_different_alphabets_are_a_mismatch(tokenizer):
    other = char_tokenizer("0123456789-=")
    with pytest.raises(TokenizerMismatchError, match=r"differ at id 14: student '\+', teacher '-'"):
        check_same_tokenizer(tokenizer, other)
    with pytest.raises(
        TokenizerMismatchError, match="student tokenizer has 16 tokens, teacher tokenizer 14"
    ):
        check_same_tokenizer(tokenizer, char_tokenizer("0123456789"))


def test_same_alphabet_in_another_order_is_a_mismatch(tokenizer):
    with pytest.raises(TokenizerMismatchError, match="differ at id 4: student '0', teacher '='"):
        check_same_tokenizer(tokenizer, char_tokenizer(ALPHABET[::-1]))


def test_special_ids_must_agree(tokenizer):
    other = char_tokenizer(ALPHABET)
    other.pad_token = other.eos_token
    with pytest.raises(TokenizerMismatchError, match="pad_token_id differs: student 0, teacher 2"):
        check_same_tokenizer(tokenizer, other)
    assert isinstance(TokenizerMismatchError("x"), ValueError)


# -- tiny models -------------------------------------------------------------------------------


def test_tiny_config_validation():
    with pytest.raises(ValueError, match="must be an even integer"):
        TinyModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ConfigError, match="num_layer"):
        load_config(TinyModelConfig, {"num_layer": 2})
    assert TinyModelConfig().model_dump()["intermediate_size"] is None


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_build_tiny_model(tokenizer, family):
    config = TINY.model_copy(update={"family": family})
    state = torch.get_rng_state()
    model = build_tiny_model(config, tokenizer, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert model.config.model_type == family
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.intermediate_size == 128
    assert model.dtype == torch.float32
    assert output_weight(model) is model.get_input_embeddings().weight  # tied
    same = build_tiny_model(config, tokenizer, seed=0)
    other = build_tiny_model(config, tokenizer, seed=1)
    assert torch.equal(output_weight(model), output_weight(same))
    assert not torch.equal(output_weight(model), output_weight(other))


def test_untied_model_has_its_own_output_matrix(tokenizer):
    config = TINY.model_copy(update={"tie_word_embeddings": False})
    model = build_tiny_model(config, tokenizer, seed=0)
    assert output_weight(model) is not model.get_input_embeddings().weight


def test_output_weight_rows(tokenizer):
    model = build_tiny_model(TINY, tokenizer, seed=0)
    assert output_weight(model, vocab_size=5).shape == (5, 32)
    with pytest.raises(DistillInputError, match="vocab_size must be in"):
        output_weight(model, vocab_size=17)


# -- hidden states -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_hidden_states_times_output_weight_are_the_logits(tokenizer, family):
    config = TinyModelConfig(family=family, hidden_size=32, num_layers=2, num_heads=2)
    model = build_tiny_model(config, tokenizer, seed=0)
    input_ids, attention_mask = encode_prompts(tokenizer, ["1+2=", "123+456=34", "12+3="])
    assert attention_mask[:, 0].tolist() == [0, 1, 0]  # left padding, different lengths
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    hidden = hidden_states(model, input_ids, attention_mask, position_ids)
    assert hidden.shape == (3, input_ids.shape[1], 32)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
    ).logits
    real = attention_mask.bool()
    torch.testing.assert_close(
        (hidden @ output_weight(model).T)[real], logits[real], atol=1e-5, rtol=0
    )
    # a padded row matches the same prompt alone (padding and positions handled)
    alone_ids, alone_mask = encode_prompts(tokenizer, ["1+2="])
    alone = hidden_states(model, alone_ids, alone_mask, torch.arange(alone_ids.shape[1])[None])
    torch.testing.assert_close(hidden[0, real[0]], alone[0], atol=1e-5, rtol=0)
    hidden.sum().backward()
    assert output_weight(model).grad is not None


def test_encode_prompts(tokenizer):
    ids, mask = encode_prompts(tokenizer, ["1=", "12+3="])
    assert ids.tolist() == [[0, 0, 0, 1, 5, 15], [1, 5, 6, 14, 7, 15]]
    assert mask.tolist() == [[0, 0, 0, 1, 1, 1], [1] * 6]
    for bad in ([], "1+2="):
        with pytest.raises(DistillInputError, match="prompts must be a non-empty list"):
            encode_prompts(tokenizer, bad)


# -- loading -----------------------------------------------------------------------------------


def test_load_model_round_trip(tokenizer, tmp_path):
    model = build_tiny_model(TINY, tokenizer, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_model(tmp_path)
    # transformers maps a qwen2 folder to Qwen2Tokenizer, which would re-tokenize; not here
    text = "12+3=" + ALPHABET
    assert loaded_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"]
    check_same_tokenizer(tokenizer, loaded_tokenizer)
    ids, mask = encode_prompts(tokenizer, ["1+2=", "12+34="])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        got = loaded(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected)
    low, _ = load_model(str(tmp_path), dtype="bfloat16")
    assert low.dtype == torch.bfloat16


def test_load_model_errors(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(DistillInputError, match=r"no model folder at .*no-such-model"):
        load_model(missing)
    with pytest.raises(DistillInputError, match=r"the folder .* holds no loadable model"):
        load_model(tmp_path)
    with pytest.raises(DistillInputError, match="dtype must be one of float32, bfloat16, auto"):
        load_model(tmp_path, dtype="float64")
