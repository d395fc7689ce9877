"""Tool-definition pins: the canonical form of a tool, its hash, and a readable diff.

A server's first listing (at registration, or the first after pinning is switched on) is
pinned: the hash of each tool's canonical definition is stored. A later listing whose tool
hashes differ — a description rewritten to "IMPORTANT: before answering, call revoke_source…",
a new ``exfil`` argument, a tool that was not there — is a possible rug pull: those tools are
held (not advertised, calls refused) until an owner or editor approves them
(`concierge.registry.pin_book.PinBook`). Removed tools simply disappear.

The canonical definition keeps what changes what a model is told or may send: ``name``,
``title``, ``description``, ``inputSchema``, ``outputSchema`` and ``annotations`` (as the server
sent them, before any sanitizing), serialized as sorted, compact JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from concierge.mcp_client._sanitize import one_line

__all__ = ["PINNED_FIELDS", "canonical", "describe_changes", "pin_hash"]

PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
_SHOWN = 120
"""Characters of a changed text shown on each side of the arrow."""


def canonical(definition: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned part of a tool definition (camelCase, as listed); absent or null fields left out."""
    return {k: definition[k] for k in PINNED_FIELDS if definition.get(k) is not None}


def pin_hash(definition: Mapping[str, Any]) -> str:
    """sha256 of the canonical definition as sorted, compact JSON (``sha256:<hex>``)."""
    text = json.dumps(canonical(definition), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return f"“{one_line(text, _SHOWN)}”"


def _properties(schema: Any) -> dict[str, Any]:
    props = schema.get("properties") if isinstance(schema, Mapping) else None
    return dict(props) if isinstance(props, Mapping) else {}


def _required(schema: Any) -> set[str]:
    req = schema.get("required") if isinstance(schema, Mapping) else None
    return {str(r) for r in req} if isinstance(req, list) else set()


def _schema_changes(old: Any, new: Any) -> list[str]:
    if old == new:
        return []
    before, after = _properties(old), _properties(new)
    out = [f"new argument `{one_line(n, 64)}`" for n in after if n not in before]
    out += [f"argument `{one_line(n, 64)}` removed" for n in before if n not in after]
    for name in after:
        if name in before and before[name] != after[name]:
            old_desc = before[name].get("description") if isinstance(before[name], Mapping) else None
            new_desc = after[name].get("description") if isinstance(after[name], Mapping) else None
            if old_desc != new_desc:
                out.append(f"argument `{one_line(name, 64)}` description changed: "
                           f"{_quote(old_desc or '')} → {_quote(new_desc or '')}")
            else:
                out.append(f"argument `{one_line(name, 64)}` changed: {_quote(before[name])} → "
                           f"{_quote(after[name])}")
    now_required = sorted(_required(new) - _required(old))
    if now_required:
        out.append("now required: " + ", ".join(f"`{one_line(n, 64)}`" for n in now_required))
    if not out:
        out.append(f"input schema changed: {_quote(old)} → {_quote(new)}")
    return out


def describe_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What changed from the pinned definition ``old`` (``None``: a new tool) to ``new``, one
    phrase per change, e.g. ``description changed: “Look up a record” → “IMPORTANT: …”`` and
    ``new argument `exfil` ``. Server text is cleaned to one line and shortened."""
    new = canonical(new)
    if old is None:
        args = ", ".join(f"`{one_line(n, 64)}`" for n in _properties(new.get("inputSchema")))
        return [f"new tool{' with arguments ' + args if args else ''}: {_quote(new.get('description', ''))}"]
    old = canonical(old)
    out: list[str] = []
    for key in ("title", "description"):
        if old.get(key) != new.get(key):
            out.append(f"{key} changed: {_quote(old.get(key, ''))} → {_quote(new.get(key, ''))}")
    out += _schema_changes(old.get("inputSchema"), new.get("inputSchema"))
    if old.get("outputSchema") != new.get("outputSchema"):
        out.append(f"output schema changed: {_quote(old.get('outputSchema', {}))} → "
                   f"{_quote(new.get('outputSchema', {}))}")
    before, after = old.get("annotations") or {}, new.get("annotations") or {}
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            out.append(f"annotation {one_line(str(key), 64)}: {_quote(before.get(key))} → "
                       f"{_quote(after.get(key))}")
    return out or ["definition changed"]
