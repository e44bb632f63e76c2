"""Typed configuration loading: YAML → pydantic models, with errors that name file, key and reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "changed_settings", "dotted", "format_validation_error", "load_model", "load_yaml",
           "validate_model"]

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file or value is invalid. ``str(err)`` names the source, the key and the reason.

    Command-line tools exit with code 2 on this error.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"invalid configuration in {source}:"]
        lines += [f"  - {key}: {reason}" if key else f"  - {reason}" for key, reason in problems]
        super().__init__("\n".join(lines))


def format_validation_error(err: ValidationError) -> list[tuple[str, str]]:
    """Turn a pydantic ValidationError into ``[(dotted.key, reason), ...]``."""
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        reason = e["msg"]
        if e["type"] == "extra_forbidden":
            reason = "unknown key (typo?)"
        out.append((key, reason))
    return out


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; a missing file or a syntax error is a :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("", "file not found")])
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), [(where, f"YAML syntax error: {getattr(exc, 'problem', exc)}")]) from exc


def dotted(data: dict[str, Any]) -> dict[str, Any]:
    """A nested dict as dotted key → leaf value (``{"a": {"b": 1}}`` → ``{"a.b": 1}``): what differs between two
    configurations, named as an override would name it."""
    out: dict[str, Any] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            out[prefix] = v

    walk("", data)
    return out


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"key: old → new, ..."`` for every key whose value differs between ``old`` and ``new`` (a key only one has
    counts, shown as None on the other side); empty when none does. What a resumable job (import, generation,
    evaluation) says when an output directory holds a run of other settings."""
    keys = [*old, *(k for k in new if k not in old)]
    return ", ".join(f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def validate_model(model: type[M], data: Any, source: str) -> M:
    """Validate ``data`` against ``model``; errors become a :class:`ConfigError` naming ``source``."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        raise ConfigError(source, format_validation_error(exc)) from exc


def load_model(model: type[M], path: str | Path) -> M:
    """Load a YAML file into a pydantic model (see :func:`validate_model`)."""
    return validate_model(model, load_yaml(path), str(path))
