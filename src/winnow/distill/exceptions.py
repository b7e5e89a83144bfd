"""Errors of the distill capability; each is also the built-in error it refines."""

from winnow.common.exceptions import WinnowError


class DistillInputError(WinnowError, ValueError):
    """Data, parameters or tensors given to a distill function are invalid; the message says how."""


class TokenizerMismatchError(DistillInputError):
    """Teacher and student tokenizers differ, so token-level supervision would be misaligned."""


class BackendUnavailableError(WinnowError, ImportError):
    """An optional sampling backend (vLLM) is not installed; the message names the install."""
