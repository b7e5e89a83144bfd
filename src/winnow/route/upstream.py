"""One upstream call of the routing proxy, and how its outcome is read.

What a call is charged, and whether the request moves on:

==================================================  ==========================  ==========
upstream outcome                                    charged                     fails over
==================================================  ==========================  ==========
2xx with JSON and ``usage``                         the usage's cost [1]_       no
2xx with ``usage`` missing                          the whole reservation       no
400, 413, 422 (the request itself is invalid)       0, answer passed through    no
other status (401, 403, 404, 408, 429, 5xx)         0 [2]_                      yes
connection refused or not established               0                           yes
timeout or broken connection after sending, or a    the whole reservation [3]_  yes
2xx whose body is not a JSON object
==================================================  ==========================  ==========

.. [1] above the reservation it is charged as reported (the money was spent), counted in
   ``/metrics`` (``usage_over_reservation``, ``overage_usd``), and the upstream is rested.
.. [2] OpenAI-style APIs do not bill failed requests; ``charge_failed_requests=True`` charges
   the whole reservation instead.
.. [3] the upstream may have finished, and billed, the call; the proxy cannot know.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from winnow.common.extras import require
from winnow.route.chat_requests import is_int
from winnow.route.proxy_config import PoolModel

aiohttp = require("aiohttp", "serve")

__all__ = ["PASSED_THROUGH", "Failure", "Reply", "post_chat", "read_reply", "usage_tokens"]

PASSED_THROUGH = frozenset({400, 413, 422})
# Raised before the request left: no connection (refused, unresolvable) or none in time.
_UNSENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


@dataclass(frozen=True)
class Reply:
    """An upstream answer given to the client: a 2xx, or a 4xx about the request itself."""

    status: int
    payload: dict[str, Any]
    usage: tuple[int, int] | None = None


@dataclass(frozen=True)
class Failure:
    """An upstream call that failed; ``billed``: whether the upstream may have charged it."""

    reason: str
    billed: bool


def read_reply(status: int, body: bytes, charge_failed: bool) -> Reply | Failure:
    """An upstream response (its status and raw body) as a :class:`Reply` to relay or a
    :class:`Failure` to fail over from (the table in the module docstring)."""
    try:
        payload = json.loads(body)
    except ValueError:  # not UTF-8 or not JSON
        payload = None
    if status in PASSED_THROUGH:
        if not isinstance(payload, dict):
            text = body[:1000].decode("utf-8", errors="replace")
            payload = {"error": {"message": text, "type": "upstream_error"}}
        return Reply(status, payload)
    if not 200 <= status < 300:
        return Failure(f"HTTP {status}", billed=charge_failed)
    if not isinstance(payload, dict):
        return Failure("a 2xx answer that is not a JSON object", billed=True)
    return Reply(status, payload, usage_tokens(payload.get("usage")))


def usage_tokens(usage: object) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` of an OpenAI ``usage`` object, or None."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if is_int(prompt) and is_int(completion) and prompt >= 0 and completion >= 0:
        return prompt, completion
    return None


async def post_chat(
    client: aiohttp.ClientSession, spec: PoolModel, body: dict[str, Any], charge_failed: bool
) -> Reply | Failure:
    """POST ``body`` to ``spec``'s chat completions endpoint, as its upstream model name and
    with its key; connection errors become failures (billed once the request was sent).

    aiohttp, not httpx: at 200 requests/s on loopback httpx's ``AsyncClient`` took most of the
    proxy's event loop (docs/route.md)."""
    headers = {}
    if spec.upstream_api_key is not None:
        headers["Authorization"] = f"Bearer {spec.upstream_api_key.get_secret_value()}"
    body = {**body, "model": spec.upstream_model or spec.name}
    try:
        async with client.post(
            f"{spec.base_url}/chat/completions", json=body, headers=headers
        ) as response:
            return read_reply(response.status, await response.read(), charge_failed)
    except _UNSENT as exc:
        return Failure(f"connection failed ({type(exc).__name__})", billed=False)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return Failure(f"{type(exc).__name__} after sending", billed=True)
