"""Payload templates: `${params.x}`, `${nodes.<id>.result.<path>}`, `${loop.index}`,
`${loop.<var>}`. A string that is exactly one template becomes the value itself, keeping
its JSON type; templates inside a longer string are replaced by their text (JSON for
objects and lists). A template that names nothing is an error, never a silent blank."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

_TEMPLATE = re.compile(r"\$\{([^}]+)\}")


class TemplateError(ValueError):
    pass


_MISSING = object()
MISSING = _MISSING  # what `lookup` returns when a path names nothing


def lookup(value: Any, path: str) -> Any:
    """Follow a dotted path (`items.0.score`) through objects and lists; `_MISSING` if absent."""
    for part in path.split(".") if path else []:
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and part.lstrip("-").isdigit():
            index = int(part)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def resolve(expression: str, context: Mapping[str, Any]) -> Any:
    value = lookup(context, expression.strip())
    if value is _MISSING:
        raise TemplateError(f"${{{expression}}} does not name a value")
    return value


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template inside `value` (recursively through objects and lists)."""
    if isinstance(value, str):
        return _render_string(value, context)
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    return value


def _render_string(text: str, context: Mapping[str, Any]) -> Any:
    if "${" not in text:
        return text
    whole = _TEMPLATE.fullmatch(text)
    if whole:
        return resolve(whole.group(1), context)

    def text_of(match: re.Match) -> str:
        found = resolve(match.group(1), context)
        return found if isinstance(found, str) else msgspec.json.encode(found).decode()

    return _TEMPLATE.sub(text_of, text)
