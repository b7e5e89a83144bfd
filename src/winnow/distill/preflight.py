"""The checks a student/teacher pair must pass before token-level distillation means anything.

The failures are silent otherwise: two tokenizers that differ feed one model's ids to the other
(TRL #4562); an output layer smaller than the tokenizer makes some sampled ids unscorable; a base
student that stops only at ``<|endoftext|>`` under an instruct teacher that ends with
``<|im_end|>`` writes rollouts that run to ``max_new_tokens``; different chat templates give the
two models different prompts. :func:`preflight` runs them all (``winnow distill check``, and the
start of every ``winnow distill train``), raises a :class:`PreflightError` naming both values
and the fix, and otherwise returns one line per check for the log and the report.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from winnow.distill.exceptions import (
    ChatTemplateMismatchError,
    OutputLayerError,
    StopTokenMismatchError,
    TokenizerMismatchError,
)
from winnow.distill.models import check_same_tokenizer, output_weight, stop_token_ids

__all__ = ["DIRECTIONS", "preflight"]

DIRECTIONS = {
    "forward_kl": "forward KL: KL(teacher || student), mode-covering",
    "reverse_kl": "reverse KL: KL(student || teacher), mode-seeking",
    "jsd": "generalized JSD(beta): beta KL(teacher || m) + (1 - beta) KL(student || m), "
    "m = beta teacher + (1 - beta) student",
    "grpo": "no divergence: GRPO on the verifier's rewards (the teacher is the frozen reference)",
    "opsa": "no divergence: the OPSA control, a fixed negative advantage on every sampled "
    "token (the teacher is unused)",
}
"""What each training signal minimises, in words, for the log."""


def preflight(
    student: PreTrainedModel,
    student_tokenizer: PreTrainedTokenizerBase,
    teacher: PreTrainedModel,
    teacher_tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    signal: str,
) -> list[str]:
    """Check the pair; one line per passed check, or a :class:`PreflightError` subclass.

    ``prompts``: sample prompts both tokenizers must encode to the same ids (the task's);
    ``signal``: a key of :data:`DIRECTIONS` (the divergence kind, ``"grpo"`` or ``"opsa"``).
    """
    check_same_tokenizer(student_tokenizer, teacher_tokenizer)
    vocab = len(student_tokenizer)
    lines = [
        f"tokenizers: identical, {vocab:,} tokens; eos {student_tokenizer.eos_token!r}, pad "
        f"{student_tokenizer.pad_token!r}, bos {student_tokenizer.bos_token!r}"
    ]
    for prompt in prompts:
        ours = student_tokenizer(prompt)["input_ids"]
        theirs = teacher_tokenizer(prompt)["input_ids"]
        if ours != theirs:
            raise TokenizerMismatchError(
                f"the prompt {prompt!r} encodes to {ours} for the student and {theirs} for the "
                "teacher; fix: save one tokenizer with both models (same special-token settings)"
            )
    lines.append(f"sample prompts: {len(prompts)} encode to the same ids for both")
    rows = {}
    for role, model in (("student", student), ("teacher", teacher)):
        rows[role] = output_weight(model).shape[0]
        if rows[role] < vocab:
            raise OutputLayerError(
                f"the {role}'s output layer has {rows[role]:,} rows, fewer than the tokenizer's "
                f"{vocab:,} tokens, so sampled ids past {rows[role] - 1} have no logit; fix: "
                f"resize its embeddings (model.resize_token_embeddings({vocab}))"
            )
    lines.append(
        f"output layers: student {rows['student']:,} rows, teacher {rows['teacher']:,}, the first "
        f"{vocab:,} compared"
    )
    student_stops = stop_token_ids(student, student_tokenizer)
    teacher_stops = stop_token_ids(teacher, teacher_tokenizer)
    missing = sorted(teacher_stops - student_stops)
    if missing:
        raise StopTokenMismatchError(
            f"the teacher ends responses with {_names(teacher_tokenizer, missing)} but the "
            f"student's rollouts stop only at {_names(student_tokenizer, student_stops)}, so they "
            "would run to max_new_tokens; fix: add those ids to the student's "
            "generation_config.eos_token_id and save it"
        )
    lines.append(
        f"stop tokens: the student stops at {_names(student_tokenizer, student_stops)}, "
        "every end the teacher uses"
    )
    templates = (student_tokenizer.chat_template, teacher_tokenizer.chat_template)
    if templates[0] != templates[1]:
        raise ChatTemplateMismatchError(
            f"the chat templates differ (student {_short(templates[0])}, teacher "
            f"{_short(templates[1])}), so the two models would read different prompts; fix: "
            "save the teacher's tokenizer with the student"
        )
    lines.append(f"chat template: {'shared' if templates[0] else 'none on either'}")
    lines.append(f"signal: {DIRECTIONS[signal]}")
    return lines


def _names(tokenizer: PreTrainedTokenizerBase, ids) -> str:
    return ", ".join(f"{tokenizer.convert_ids_to_tokens(i)!r} ({i})" for i in sorted(ids))


def _short(template: str | None) -> str:
    return "none" if template is None else f"{template[:40]!r}..."
