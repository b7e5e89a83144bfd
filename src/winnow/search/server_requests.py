"""The search API's bounds and its ``/v1/rerank`` bodies: limits, request model, response.

:class:`ServerLimits` holds every bound the server enforces, with its default. The rerank
request follows the Cohere / Jina shape, so their clients work unchanged::

    {"query": "what is a cat", "documents": ["a kitten is a young cat", {"text": "dogs"}],
     "top_n": 1, "return_documents": true, "model": "any name (echoed)"}

:func:`rerank_limit_errors` checks a parsed request against the limits and returns errors in
FastAPI's 422 shape (``{"loc": ["body", field], "msg", "type"}``), each message naming the field:
``"documents: 1,200 documents; at most 1,000 per request"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

from pydantic import BaseModel, Field

from winnow.search.exceptions import SearchInputError

__all__ = [
    "RerankDocument",
    "RerankRequest",
    "ServerLimits",
    "rerank_limit_errors",
    "rerank_response",
]

# JSON may spell one character as "\ud83d\ude00": 12 bytes.
_MAX_JSON_BYTES_PER_CHAR = 12
_JSON_BYTES_PER_DOCUMENT = 64
_JSON_BYTES_OTHER_FIELDS = 4096


@dataclass(frozen=True)
class ServerLimits:
    """The bounds of the search API; a request beyond one gets a 4xx naming it.

    Args:
        max_query_chars: characters of ``q`` (``/search``) and ``query`` (``/v1/rerank``).
        max_k: largest ``k`` of ``/search``.
        max_documents: documents per ``/v1/rerank`` request (Cohere's limit is 1,000).
        max_document_chars: characters of all documents of one rerank request together.
        max_queue: requests admitted at once, waiting or running; the next one gets a 503
            with ``Retry-After``.
        request_timeout_s: seconds a request may wait and run before it gets a 504.
    """

    max_query_chars: int = 512
    max_k: int = 100
    max_documents: int = 1000
    max_document_chars: int = 500_000
    max_queue: int = 32
    request_timeout_s: float = 30.0

    def __post_init__(self):
        for name in (
            "max_query_chars",
            "max_k",
            "max_documents",
            "max_document_chars",
            "max_queue",
        ):
            value = getattr(self, name)
            if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
                raise SearchInputError(f"{name} must be an int >= 1; got {value!r}")
        timeout = self.request_timeout_s
        if (
            not isinstance(timeout, Real)
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise SearchInputError(
                f"request_timeout_s must be a finite number of seconds > 0; got {timeout!r}"
            )

    @property
    def max_query_string_bytes(self) -> int:
        """Longest ``/search`` query string a valid ``q`` and ``k`` can need: a character is
        at most 4 UTF-8 bytes, each percent-encoded as 3; the rest is for ``k``."""
        return 12 * self.max_query_chars + 64

    @property
    def max_body_bytes(self) -> int:
        """Longest ``/v1/rerank`` body a valid request can need, however its JSON escapes."""
        chars = self.max_query_chars + self.max_document_chars
        return (
            _MAX_JSON_BYTES_PER_CHAR * chars
            + _JSON_BYTES_PER_DOCUMENT * self.max_documents
            + _JSON_BYTES_OTHER_FIELDS
        )


class RerankDocument(BaseModel):
    """A document given as an object: its ``text`` is scored; other fields are ignored."""

    text: str


class RerankRequest(BaseModel):
    """The ``POST /v1/rerank`` body (Cohere / Jina shape).

    ``documents`` are strings or ``{"text": ...}`` objects, mixed freely. ``top_n`` above
    ``len(documents)`` returns them all (as Cohere does). ``model`` is not used to choose a
    model (the server holds one); the response echoes it.
    """

    query: str = Field(description="the query the documents are scored against")
    documents: list[str | RerankDocument] = Field(description="texts or {text} objects")
    top_n: int | None = Field(None, ge=1, description="results to return; default all")
    return_documents: bool = Field(False, description="include each document's text")
    model: str | None = Field(None, description="echoed in the response")

    def texts(self) -> list[str]:
        """``[len(documents)]`` the text of each document, in order."""
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]


def rerank_limit_errors(request: RerankRequest, limits: ServerLimits) -> list[dict[str, Any]]:
    """The request's violations of ``limits``, in FastAPI's 422 error shape; ``[]`` if none."""
    problems = []
    query = request.query
    if not query.strip():
        problems.append(("query", "query: blank; give at least one non-space character"))
    elif len(query) > limits.max_query_chars:
        problems.append(
            ("query", f"query: {len(query):,} characters; at most {limits.max_query_chars:,}")
        )
    count = len(request.documents)
    if count == 0:
        problems.append(("documents", "documents: empty; give at least one document to rerank"))
    elif count > limits.max_documents:
        problems.append(
            (
                "documents",
                f"documents: {count:,} documents; at most {limits.max_documents:,} per request",
            )
        )
    chars = sum(len(text) for text in request.texts())
    if chars > limits.max_document_chars:
        problems.append(
            (
                "documents",
                f"documents: {chars:,} characters in all; at most "
                f"{limits.max_document_chars:,} per request",
            )
        )
    return [{"type": "value_error", "loc": ["body", field], "msg": msg} for field, msg in problems]


def rerank_response(
    request: RerankRequest, results: list[dict[str, Any]], model: str
) -> dict[str, Any]:
    """The ``/v1/rerank`` answer for ``results`` (:meth:`SearchService.rerank`'s).

    ``{"results": [{"index", "relevance_score", "document": {"text"} (only with
    return_documents)}], "model": the request's model or else ``model``, "usage":
    {"documents", "characters" (query and documents)}}``.
    """
    texts = request.texts()
    if request.return_documents:
        results = [{**result, "document": {"text": texts[result["index"]]}} for result in results]
    return {
        "results": results,
        "model": request.model or model,
        "usage": {
            "documents": len(texts),
            "characters": len(request.query) + sum(len(text) for text in texts),
        },
    }
