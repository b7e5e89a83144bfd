"""Errors of the distill capability; each is also the built-in error it refines."""

from winnow.common.exceptions import WinnowError


class DistillInputError(WinnowError, ValueError):
    """Data, parameters or tensors given to a distill function are invalid; the message says how."""


class PreflightError(DistillInputError):
    """A student/teacher pair fails a pre-flight check (:mod:`winnow.distill.preflight`)."""


class TokenizerMismatchError(PreflightError):
    """Teacher and student tokenizers differ, so token-level supervision would be misaligned."""


class OutputLayerError(PreflightError):
    """A model's output layer has fewer rows than its tokenizer has tokens."""


class StopTokenMismatchError(PreflightError):
    """The student's rollouts cannot stop where the teacher's responses end."""


class ChatTemplateMismatchError(PreflightError):
    """Student and teacher would format chat prompts differently."""


class BackendUnavailableError(WinnowError, ImportError):
    """An optional sampling backend (vLLM) is not installed; the message names the install."""
