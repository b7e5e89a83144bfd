"""Errors of the route capability; each is also the built-in error it refines."""

from winnow.common.exceptions import WinnowError


class RouteInputError(WinnowError, ValueError):
    """Routing data or parameters are invalid; the message names the field and the fix."""


class InfeasibleBatchError(WinnowError, ValueError):
    """No assignment of the batch meets the budget and capacities; the message says by how much."""
