"""A task's prompts through a chat template: SmolLM2's real tokenizer, and a refusal without one."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from winnow.distill.exceptions import DistillInputError
from winnow.distill.models import char_tokenizer
from winnow.distill.tasks import AdditionTask
from winnow.distill.tasks.chat import ChatTask

SMOLLM2_TOKENIZER = Path(__file__).parents[1] / "fixtures" / "smollm2_tokenizer"


def test_prompts_become_a_user_turn_and_answers_end_at_the_turn_end():
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2_TOKENIZER)
    plain = AdditionTask(digits=(2,), reverse_answer=False)
    chat = ChatTask(plain, tokenizer)
    (problem,) = chat.problems("test", 1, seed=3)
    (bare,) = plain.problems("test", 1, seed=3)
    assert problem.answer == bare.answer and problem.difficulty == bare.difficulty
    assert problem.prompt.endswith(
        f"<|im_start|>user\n{bare.prompt}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat.verify(problem, f"{bare.answer}<|im_end|>")
    assert not chat.verify(problem, f"The answer is {bare.answer}.")
    # The rendered special tokens encode as single ids, not as text.
    ids = tokenizer(problem.prompt)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3


def test_a_tokenizer_without_a_chat_template_is_refused():
    with pytest.raises(DistillInputError, match=r"set task\.chat to false"):
        ChatTask(AdditionTask(), char_tokenizer(AdditionTask.alphabet))
