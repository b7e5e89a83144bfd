"""OpenAI-compatible proxy that routes each time window's batch of chat requests (fastapi).

Endpoints, each behind ``Authorization: Bearer <key>`` with a key of ``ProxyConfig.api_keys``
(401 otherwise):

- ``POST /v1/chat/completions``: an OpenAI chat request, answered whole (``stream: true`` is a
  400). ``model`` absent or ``"auto"`` is routed; a pool model's name goes to that model only,
  never to another one; any other name is a 400 that lists the pool.
- ``GET /v1/models``: the pool, in OpenAI's list format.
- ``GET /metrics``: spend per window and per day (reserved and settled, USD), per-model counts
  (assigned, served, errors, in flight), fallbacks, deferred and rejected requests, windows.

What happens to a request between admission and its answer (windows, the plan, the ledger,
failover, what a call is charged) is :mod:`winnow.route.proxy`.
"""

from __future__ import annotations

import copy
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone

from winnow.common.extras import require
from winnow.route.chat_requests import parse_chat_request
from winnow.route.exceptions import RouteInputError
from winnow.route.proxy import RoutingProxy, error_response
from winnow.route.proxy_config import ProxyConfig, QualityModel

fastapi = require("fastapi", "serve")
aiohttp = require("aiohttp", "serve")

__all__ = ["create_app", "serve"]


# -- the app ----------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_app(
    config: ProxyConfig,
    quality_model: QualityModel,
    *,
    clock: Callable[[], datetime] = _utc_now,
) -> fastapi.FastAPI:
    """The proxy as a FastAPI app; its lifespan runs the window loop and the upstream client.

    Parameters
    ----------
    config : ProxyConfig
    quality_model : QualityModel
        E.g. :class:`~winnow.route.proxy_config.ConstantQuality`; columns in ``config.models``
        order.
    clock : callable returning an aware datetime, default now in UTC
        Decides the day (UTC date) and reset times; tests pass one they can advance.

    The :class:`RoutingProxy` is ``app.state.proxy``.
    """
    proxy = RoutingProxy(config, quality_model, clock)
    keys = [key.get_secret_value().encode() for key in config.api_keys]

    @asynccontextmanager
    async def lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
        slots = sum(model.capacity for model in config.models)
        phase = config.upstream_timeout_seconds  # connecting, and each wait for bytes
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=slots),
                timeout=aiohttp.ClientTimeout(total=None, connect=phase, sock_read=phase),
            ) as client,
            proxy.running(client),
        ):
            yield

    app = fastapi.FastAPI(title="winnow routing proxy", lifespan=lifespan)
    app.state.proxy = proxy

    def authorized(request: fastapi.Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        return scheme.lower() == "bearer" and any(hmac.compare_digest(given, k) for k in keys)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: fastapi.Request) -> fastapi.responses.JSONResponse:
        response = await admit(request)
        proxy.counts.responses[response.status_code] += 1
        return response

    async def admit(request: fastapi.Request) -> fastapi.responses.JSONResponse:
        if not authorized(request):
            proxy.counts.rejected += 1
            return _unauthorized()
        raw = await _read_limited(request, config.max_request_bytes)
        if raw is None:
            proxy.counts.rejected += 1
            return error_response(
                413,
                f"the body is larger than {config.max_request_bytes} bytes; shorten the prompt",
                "request_too_large",
            )
        try:
            return await proxy.submit(parse_chat_request(raw, config), request.is_disconnected)
        except RouteInputError as exc:
            proxy.counts.rejected += 1
            return error_response(400, str(exc), "invalid_request_error")

    @app.get("/v1/models")
    async def list_models(request: fastapi.Request) -> fastapi.responses.JSONResponse:
        if not authorized(request):
            return _unauthorized()
        data = [
            {"id": n, "object": "model", "created": 0, "owned_by": "winnow"} for n in proxy.names
        ]
        return fastapi.responses.JSONResponse({"object": "list", "data": data})

    @app.get("/metrics")
    async def metrics(request: fastapi.Request) -> fastapi.responses.JSONResponse:
        if not authorized(request):
            return _unauthorized()
        return fastapi.responses.JSONResponse(proxy.metrics())

    return app


def _unauthorized() -> fastapi.responses.JSONResponse:
    return error_response(
        401,
        "missing or unknown API key; send Authorization: Bearer <key> with a configured key",
        "authentication_error",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _read_limited(request: fastapi.Request, limit: int) -> bytes | None:
    """The body, or ``None`` as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def serve(
    config: ProxyConfig,
    quality_model: QualityModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Run the proxy with uvicorn in one worker process (the ledger lives in that process)."""
    uvicorn = require("uvicorn", "serve")
    uvicorn.run(
        create_app(config, quality_model),
        host=host,
        port=port,
        workers=1,
        log_level=log_level,
        log_config=access_log_on_stderr(uvicorn),
    )


def access_log_on_stderr(uvicorn) -> dict:
    """uvicorn's logging config with the access log on stderr instead of stdout.

    A window's plan captures fd 1 while HiGHS solves (:mod:`winnow.route.highs_output`); an
    access-log line written to stdout in those milliseconds would be captured and dropped.
    """
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config
