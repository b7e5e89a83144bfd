"""The search API over HTTP: ``/search``, ``/v1/rerank`` and ``/health`` (fastapi).

``winnow search eval`` measures the pipeline offline; this module serves it to clients, so the
index, the passages and the models load once per process
(:meth:`~winnow.search.server_service.SearchService.from_index`), not per request.

Endpoints:

- ``GET /health``: ``{"status": "ok", "passages", "encoder", "reranker", "rerank_depth"}``;
  always open.
- ``GET /search?q=...&k=...``: ``q`` holds 1 to ``max_query_chars`` characters and is not blank;
  ``k`` is an int in ``[1, max_k]``, default 10. The answer is
  :meth:`~winnow.search.server_service.SearchService.search`'s.
- ``POST /v1/rerank``: the Cohere / Jina rerank API
  (:class:`~winnow.search.server_requests.RerankRequest`); answers ``{"results": [{"index",
  "relevance_score" in [0, 1], "document": {"text"} (with return_documents)}], "model",
  "usage"}``, best first (:meth:`~winnow.search.server_service.SearchService.rerank`).

Errors, each with a JSON ``detail``: a parameter or field out of bounds gets a 422 whose
``detail`` names it (``loc`` ``["query", "k"]``, ``["body", "documents"]``) and the limit; a
query string or body longer than any valid request could need a 414 / 413 before parsing (a
rerank body without ``Content-Length`` a 411); with an API key configured, a missing or wrong
``Authorization: Bearer <key>`` a 401 with ``WWW-Authenticate: Bearer``; a full queue a 503
with ``Retry-After`` (seconds); no answer within the request timeout a 504; an unknown route a
404; a failure inside the service a 500 whose ``detail`` is one line (the traceback goes to the
server log only). The bounds are :class:`~winnow.search.server_requests.ServerLimits`.

Model calls go through one :class:`~winnow.search.server_queue.RequestQueue`: one at a time, in
arrival order, at most ``max_queue`` admitted. :func:`serve` sets the process's torch and FAISS
thread counts once, and refuses to listen beyond loopback without an API key.
"""

import ipaddress
import secrets
from contextlib import asynccontextmanager
from typing import Annotated, Any

from pydantic import AfterValidator

from winnow.common.extras import require
from winnow.search.exceptions import SearchInputError, ServerBusyError, ServerTimeoutError
from winnow.search.server_queue import RequestQueue
from winnow.search.server_requests import (
    RerankRequest,
    ServerLimits,
    rerank_limit_errors,
    rerank_response,
)
from winnow.search.server_service import SearchService

__all__ = ["create_app", "is_loopback", "serve"]

INTERNAL_ERROR = "internal error while answering; the server log has the cause"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``,
    ``127.0.0.0/8``, ``::1``); ``0.0.0.0``, ``::`` and any other name or address do not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def create_app(
    service: SearchService, limits: ServerLimits | None = None, *, api_key: str | None = None
):
    """The API over an already loaded ``service`` (see the module doc); a ``fastapi.FastAPI``.

    ``limits`` defaults to :class:`ServerLimits()`. ``api_key``: when set, ``/search`` and
    ``/v1/rerank`` need ``Authorization: Bearer <api_key>``; ``None`` leaves them open.
    ``app.state`` holds ``service``, ``limits`` and ``queue``; nothing loads per request.
    """
    fastapi = require("fastapi", "serve")
    limits = ServerLimits() if limits is None else limits
    if api_key is not None and not api_key:
        raise SearchInputError("api_key must be a non-empty string or None")
    queue = RequestQueue(limits.max_queue, limits.request_timeout_s)

    @asynccontextmanager
    async def lifespan(app):
        yield
        queue.close()

    app = fastapi.FastAPI(title="winnow search", lifespan=lifespan)
    app.state.service, app.state.limits, app.state.queue = service, limits, queue
    _add_error_handlers(app, fastapi)
    _add_request_size_bounds(app, fastapi, limits)
    authorized = [fastapi.Depends(_key_check(fastapi, api_key))]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", **service.describe()}

    query_param = Annotated[
        str,
        fastapi.Query(
            min_length=1, max_length=limits.max_query_chars, description="the query, not blank"
        ),
        AfterValidator(_not_blank),
    ]
    k_param = Annotated[int, fastapi.Query(ge=1, le=limits.max_k, description="hits to return")]
    default_k = min(10, limits.max_k)

    @app.get("/search", dependencies=authorized)
    async def search(q: query_param, k: k_param = default_k) -> dict[str, Any]:
        return await queue.run(lambda: service.search(q, k))

    @app.post("/v1/rerank", dependencies=authorized)
    async def rerank(request: RerankRequest) -> dict[str, Any]:
        errors = rerank_limit_errors(request, limits)
        if errors:
            raise fastapi.exceptions.RequestValidationError(errors)
        texts = request.texts()
        results = await queue.run(lambda: service.rerank(request.query, texts, request.top_n))
        loaded = service.describe()
        return rerank_response(request, results, loaded["reranker"] or loaded["encoder"])

    return app


def serve(
    service: SearchService,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    num_threads: int | None = 1,
    log_level: str = "info",
) -> None:
    """Run the API with uvicorn in one worker process (the models live in that process).

    A ``host`` other than loopback (:func:`is_loopback`) needs an ``api_key``: anyone who can
    reach the port could otherwise use the models. ``num_threads`` sets the CPU threads of
    torch and FAISS for the whole process, once; ``None`` leaves them.
    """
    if not is_loopback(host) and not api_key:
        raise SearchInputError(
            f"host {host!r} accepts connections from other machines and no api_key is set; "
            "give an api_key or serve on 127.0.0.1"
        )
    uvicorn = require("uvicorn", "serve")
    app = create_app(service, limits, api_key=api_key)
    if num_threads is not None:
        if not isinstance(num_threads, int) or num_threads < 1:
            raise SearchInputError(f"num_threads must be an int >= 1; got {num_threads!r}")
        require("torch", "search").set_num_threads(num_threads)
        require("faiss", "search").omp_set_num_threads(num_threads)
    uvicorn.run(app, host=host, port=port, workers=1, log_level=log_level)


def _key_check(fastapi, api_key: str | None):
    """A dependency that lets a request through only with ``Authorization: Bearer <api_key>``."""
    bearer = fastapi.security.HTTPBearer(auto_error=False, description="the server's API key")

    def check_key(credentials: Annotated[Any, fastapi.Depends(bearer)]) -> None:
        if api_key is None:
            return
        if credentials is None:
            raise fastapi.HTTPException(
                401,
                "missing API key; send the header `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not secrets.compare_digest(credentials.credentials.encode(), api_key.encode()):
            raise fastapi.HTTPException(
                401,
                "wrong API key",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return check_key


def _add_error_handlers(app, fastapi) -> None:
    json_response = fastapi.responses.JSONResponse

    @app.exception_handler(ServerBusyError)
    def busy(request, exc: ServerBusyError):
        headers = {"Retry-After": str(exc.retry_after_s)}
        return json_response({"detail": str(exc)}, status_code=503, headers=headers)

    @app.exception_handler(ServerTimeoutError)
    def timed_out(request, exc: ServerTimeoutError):
        return json_response({"detail": str(exc)}, status_code=504)

    @app.exception_handler(Exception)
    def internal_error(request, exc: Exception):
        return json_response({"detail": INTERNAL_ERROR}, status_code=500)


def _add_request_size_bounds(app, fastapi, limits: ServerLimits) -> None:
    """Refuse a query string or a body longer than any valid request needs, before parsing."""
    json_response = fastapi.responses.JSONResponse
    max_query_string = limits.max_query_string_bytes
    max_body = limits.max_body_bytes

    @app.middleware("http")
    async def bounded_request(request, call_next):
        if len(request.scope["query_string"]) > max_query_string:
            detail = (
                f"the query string exceeds {max_query_string} bytes; q holds at most "
                f"{limits.max_query_chars} characters"
            )
            return json_response({"detail": detail}, status_code=414)
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                detail = "send the body with a Content-Length header (not chunked)"
                return json_response({"detail": detail}, status_code=411)
            if int(length) > max_body:
                detail = (
                    f"the body exceeds {max_body:,} bytes, more than any request within the "
                    f"limits needs (documents: at most {limits.max_documents:,}, "
                    f"{limits.max_document_chars:,} characters in all)"
                )
                return json_response({"detail": detail}, status_code=413)
        return await call_next(request)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("q is blank; give a query with at least one non-space character")
    return value
