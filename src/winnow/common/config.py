"""Typed configs: YAML files and ``--set a.b=value`` overrides validated by pydantic models.

Every component keeps its defaults in one pydantic model derived from :class:`Config`. Unknown
keys are errors, and any invalid value is reported as one :class:`ConfigError` whose message names
the dotted path, the value received, what is allowed and how to fix it.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from winnow.common.exceptions import ConfigError

__all__ = [
    "Config",
    "apply_overrides",
    "config_to_yaml",
    "is_secret_name",
    "load_config",
    "redact",
]

_SECRET_WORDS = {"key", "keys", "secret", "secrets", "password", "passwords", "authorization"}
REDACTED = "***"


class Config(BaseModel):
    """Base of every winnow config: unknown keys are rejected, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=BaseModel)


def load_config(
    model: type[C],
    source: str | Path | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> C:
    """Build ``model`` from a YAML file or mapping, then apply ``--set`` style overrides.

    ``overrides`` are strings ``"dotted.path=value"``; the value is parsed as YAML, so
    ``steps=10`` is an int and ``name=[a, b]`` a list. Raises :class:`ConfigError` on an
    unreadable file, a malformed override, an unknown key or an invalid value.
    """
    origin = "defaults"
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data, origin = copy.deepcopy(dict(source)), "the given mapping"
    else:
        data, origin = _read_yaml(Path(source)), str(source)
    data = apply_overrides(data, overrides)
    if overrides:
        origin += " with --set overrides"
    overridden = {item.partition("=")[0].strip() for item in overrides}
    try:
        return model.model_validate(_complete_from_defaults(model, data))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, origin, overridden)) from None


def _complete_from_defaults(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each partly given sub-config completed from that field's own default.

    Pydantic builds ``teacher: {steps: 200}`` from the field's class defaults, so
    ``--set teacher.steps=200`` would silently swap the default teacher's architecture for the
    class's smaller one; here the given keys are laid over the field's default value instead.
    """
    result = dict(data)
    for name, field in model.model_fields.items():
        given = result.get(name)
        if not isinstance(given, dict) or field.default_factory is not None:
            continue
        default = field.default
        if isinstance(default, BaseModel):
            result[name] = _deep_merge(default.model_dump(), given)
    return result


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``"a.b.c=value"`` written at its dotted path."""
    result = copy.deepcopy(dict(data))
    for item in overrides:
        path, sep, raw = item.partition("=")
        keys = path.strip().split(".")
        if not sep or not all(keys):
            raise ConfigError(
                f"override {item!r} is not of the form dotted.path=value; "
                "fix: pass e.g. --set trainer.lr=1e-4"
            )
        node = result
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = _parse_scalar(raw)
    return result


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML, in field order, loadable again by :func:`load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; fix: pass the path of a YAML file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys to values, got {type(loaded).__name__}"
        )
    return loaded


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _describe(
    exc: ValidationError, model: type[BaseModel], origin: str, overridden: set[str]
) -> str:
    lines = [f"invalid config ({origin}):"]
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        path = ".".join(loc) or "<root>"
        fix_where = f"--set {path}=..." if path in overridden else f"the key in {origin}"
        if error["type"] == "extra_forbidden":
            allowed = sorted(_fields_at(model, loc[:-1]))
            close = difflib.get_close_matches(loc[-1], allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(
                f"  {path}: unknown key{hint} Allowed keys here: {', '.join(allowed)}. "
                f"Fix: rename or remove {fix_where}."
            )
            continue
        if not loc:  # a check across fields
            lines.append(f"  {error['msg']}")
            continue
        field = _field_at(model, loc)
        allowed = f" ({field.description})" if field is not None and field.description else ""
        shown = redact(error.get("input"), secret=any(is_secret_name(part) for part in loc))
        lines.append(f"  {path}: got {shown!r}; {error['msg']}{allowed}. Fix: change {fix_where}.")
    return "\n".join(lines)


def is_secret_name(name: str) -> bool:
    """Whether a field called ``name`` may hold a secret: a word of it is key(s), secret(s),
    password(s) or authorization (``upstream_api_key``, ``api_keys``), or it ends in
    token(s) other than a price or count per token (``hf_token``, not ``price_per_token``)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))  # apiKey -> api_Key
    words = re.split(r"[^a-z0-9]+", spaced.lower())
    if _SECRET_WORDS.intersection(words):
        return True
    return words[-1] in ("token", "tokens") and (len(words) < 2 or words[-2] != "per")


def redact(value: Any, secret: bool = False) -> Any:
    """``value`` with every string under a secret-named key (at any depth) shown as ``***``;
    ``secret=True`` redacts the strings of ``value`` itself. Numbers stay (``max_tokens``)."""
    if isinstance(value, Mapping):
        return {k: redact(v, secret or is_secret_name(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, secret) for v in value)
    if secret and isinstance(value, str):
        return REDACTED
    return value


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):  # Optional[Sub], Sub | None
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _model_at(model: type[BaseModel] | None, loc: Sequence[str]) -> type[BaseModel] | None:
    for key in loc:
        if model is None or key not in model.model_fields:
            return None
        model = _submodel(model.model_fields[key].annotation)
    return model


def _fields_at(model: type[BaseModel], loc: Sequence[str]) -> list[str]:
    parent = _model_at(model, loc)
    return list(parent.model_fields) if parent is not None else []


def _field_at(model: type[BaseModel], loc: Sequence[str]):
    parent = _model_at(model, loc[:-1])
    if parent is None or not loc:
        return None
    return parent.model_fields.get(loc[-1])
