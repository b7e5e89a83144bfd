"""A task's prompts sent to a chat model: each one a user message through the tokenizer's chat
template, ending with the assistant's turn.

Instruct models answer inside their template; fed a bare ``"37+45="`` they continue it as text.
Wrapping keeps the task's problems, answers and verifier unchanged (the answer ends at the
template's end-of-turn token, one of :data:`~winnow.distill.tasks.base.STOP_MARKERS`).
"""

from __future__ import annotations

from dataclasses import replace

from transformers import PreTrainedTokenizerBase

from winnow.distill.exceptions import DistillInputError
from winnow.distill.tasks.base import Problem, Split, Task

__all__ = ["ChatTask"]


class ChatTask:
    """``task`` with every prompt rendered as one user message by ``tokenizer``'s template."""

    alphabet = None  # the rendered prompts need the model's own tokenizer

    def __init__(self, task: Task, tokenizer: PreTrainedTokenizerBase) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise DistillInputError(
                f"task.chat renders prompts with the tokenizer's chat template, and this "
                f"tokenizer ({type(tokenizer).__name__}) has none; fix: set task.chat to false, "
                "or use an instruct model's tokenizer"
            )
        self.task, self.tokenizer = task, tokenizer
        self.name = f"chat {task.name}"

    def render(self, prompt: str) -> str:
        """``prompt`` as the user's message, followed by the opening of the assistant's turn."""
        message = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(
            message, tokenize=False, add_generation_prompt=True
        )

    def problems(self, split: Split, count: int, seed: int) -> list[Problem]:
        """The wrapped task's problems, prompts rendered."""
        problems = self.task.problems(split, count, seed)
        return [replace(problem, prompt=self.render(problem.prompt)) for problem in problems]

    def verify(self, problem: Problem, response: str) -> bool:
        return self.task.verify(problem, response)
