"""Errors of the explain capability; each is also the built-in error it refines."""

from winnow.common.exceptions import WinnowError


class ExplainInputError(WinnowError, ValueError):
    """Data or parameters given to an explainer or estimator are invalid; the message says how."""


class NoLocalSignalError(ExplainInputError):
    """The model's output does not vary around the instance, so there is nothing to explain."""
