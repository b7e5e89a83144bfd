"""Validating an OpenAI chat request body and bounding its tokens before any call is made.

The proxy reserves each request's worst-case cost before forwarding it, so the body is checked
and its prompt and completion tokens bounded here, as pure code with no web framework.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from winnow.route.exceptions import RouteInputError
from winnow.route.proxy_config import PROMPT_TOKEN_BOUNDS, ProxyConfig

__all__ = [
    "MAX_JSON_DEPTH",
    "MESSAGE_OVERHEAD_TOKENS",
    "ChatRequest",
    "cheapest_cost",
    "is_int",
    "parse_chat_request",
]

# Chat templates wrap each message in a few special tokens (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 8
MAX_JSON_DEPTH = 64
"""Deepest nesting of a request body; OpenAI chat bodies need under 10 levels."""
_TOO_DEEP = f"the body's JSON is nested more than {MAX_JSON_DEPTH} levels deep; flatten it"

_PROMPT_FIELDS = ("messages", "tools", "functions", "tool_choice", "response_format")
_COMPLETION_LIMITS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request.

    ``body`` is what is forwarded (without ``model``, with the completion limit set); ``prompt``
    the messages' text for the quality model; ``prompt_tokens`` the prompt bound;
    ``completion_tokens`` the most the upstream may generate (``n * max_tokens``); ``model`` the
    index of a named pool model, or ``None`` to route.
    """

    body: dict[str, Any]
    prompt: str
    prompt_tokens: int
    completion_tokens: int
    model: int | None


def parse_chat_request(raw: bytes, config: ProxyConfig) -> ChatRequest:
    """Validate an OpenAI chat request body; raises :class:`RouteInputError` naming the fix."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RouteInputError(f"the body is not valid JSON ({exc}); send a JSON object") from None
    except RecursionError:  # nested past the parser's own stack
        raise RouteInputError(_TOO_DEEP) from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise RouteInputError(_TOO_DEEP)
    if not isinstance(body, dict):
        raise RouteInputError("the body must be a JSON object with 'messages'")
    if body.get("stream"):
        raise RouteInputError(
            "streaming is not supported: this proxy answers whole responses only; "
            'send "stream": false or leave it out'
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RouteInputError("'messages' must be a non-empty list of {role, content} objects")
    texts = [_message_text(message, i) for i, message in enumerate(messages)]
    choices = 1 if body.get("n") is None else body["n"]
    if not is_int(choices) or choices < 1:
        raise RouteInputError(f"'n' must be an integer >= 1, got {choices!r}")
    limit = _completion_limit(body, config.max_tokens_cap)
    forwarded = {key: value for key, value in body.items() if key != "model"}
    for key in [k for k in _COMPLETION_LIMITS if body.get(k) is not None] or ["max_tokens"]:
        forwarded[key] = limit
    prompt_json = json.dumps([body[k] for k in _PROMPT_FIELDS if k in body], ensure_ascii=False)
    prompt_tokens = PROMPT_TOKEN_BOUNDS[config.prompt_token_bound](prompt_json)
    return ChatRequest(
        body=forwarded,
        prompt="\n".join(texts),
        prompt_tokens=prompt_tokens + MESSAGE_OVERHEAD_TOKENS * (len(messages) + 1),
        completion_tokens=choices * limit,
        model=_requested_model(body.get("model"), [m.name for m in config.models]),
    )


def _depth(value: object) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level + 1)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def is_int(value: object) -> bool:
    """An int that is not a bool (JSON ``true`` must not count as 1 token or 1 choice)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _message_text(message: object, index: int) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise RouteInputError(f"messages[{index}] must be an object with a string 'role'")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise RouteInputError(f"messages[{index}].content must be a string or a list of parts")
    texts = []
    for k, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise RouteInputError(
                f"messages[{index}].content[{k}] has type {kind!r}; only text parts are "
                "supported, because the cost of other parts cannot be bounded before the call"
            )
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def _completion_limit(body: dict[str, Any], cap: int) -> int:
    given = [body[key] for key in _COMPLETION_LIMITS if body.get(key) is not None]
    for value in given:
        if not is_int(value) or value < 1:
            raise RouteInputError(f"max_tokens must be an integer >= 1, got {value!r}")
    return min([*given, cap])


def _requested_model(model: object, names: list[str]) -> int | None:
    if model is None or model == "auto":
        return None
    if isinstance(model, str) and model in names:
        return names.index(model)
    raise RouteInputError(
        f"model {model!r} is not in the pool; use 'auto' (or leave 'model' out) to route, "
        f"or one of: {', '.join(names)}"
    )


def cheapest_cost(costs: list[int], model: int | None) -> int:
    """The least worst-case cost among the models a request may use (all, or its named one)."""
    return min(costs) if model is None else costs[model]
