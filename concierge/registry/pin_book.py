"""Where tool pins are kept: what each source's tools were approved as, and what is held.

    observe(source, tools)   every successful listing (health check, catalog): the first one
                             of a source is pinned whole; afterwards a tool whose hash differs
                             from its pin (or that has none) is held, its definition recorded
                             as pending and the change audited once (``source.tools_changed``)
    approve(source, [names]) pending → pinned (``source.tools_approved``), owner or editor
    held(source)             what is held now, with the readable diff

A source with ``pin_tools`` off is never held. Turning it back on (or pointing the source at
another URL) starts over: the next listing is pinned whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from concierge.errors import Conflict, NotFound
from concierge.mcp_client import ToolInfo
from concierge.registry.catalog_models import ApprovalResult, HeldTool
from concierge.registry.models import SourceStatus, SourceView
from concierge.registry.pin_rows import PinRows
from concierge.registry.pins import canonical, describe_changes, pin_hash
from concierge.registry.store import Store, Transaction, now_iso

if TYPE_CHECKING:
    from concierge.registry.service import Registry

__all__ = ["PinBook", "definition_of"]

log = logging.getLogger("concierge.pins")


def definition_of(tool: ToolInfo) -> dict[str, Any]:
    """The server's definition of ``tool`` (or, for a listing without one, what we know)."""
    if tool.definition:
        return dict(tool.definition)
    return {"name": tool.name, "title": tool.title, "description": tool.description,
            "inputSchema": tool.input_schema}


def _load(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None


def _held(source_id: str, row: dict[str, Any]) -> HeldTool:
    old = _load(row["definition"]) if row["hash"] else None
    new = _load(row["pending_definition"]) or {}
    return HeldTool(source_id=source_id, tool=row["tool_name"], status="changed" if old else "new",
                    changes=describe_changes(old, new), pending_hash=row["pending_hash"],
                    pinned_hash=row["hash"], since=row["pending_since"])


def _dump(definition: dict[str, Any]) -> str:
    return json.dumps(canonical(definition), sort_keys=True, separators=(",", ":"), default=str)


class PinBook:
    """Tool pins of a registry's sources (table ``tool_pins``)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.store: Store = registry.store
        self._pins = PinRows(registry.store)
        self._memo: dict[str, tuple[str, Sequence[ToolInfo], dict[str, HeldTool]]] = {}
        """source id -> (its updated_at, the listing, what was held): the same cached listing of
        an unchanged source is not hashed and compared again on every resolution. Whatever can
        change the outcome (an approval, a reset, pin_tools) bumps ``updated_at``."""

    def _rows(self, source_id: str) -> dict[str, dict[str, Any]]:
        return self._pins.of_source(source_id)

    # -- listing ---------------------------------------------------------------------------

    def observe(self, source: SourceView, tools: Sequence[ToolInfo]) -> dict[str, HeldTool]:
        """Compare a listing with the pins; returns the held tools by their server name."""
        if not source.pin_tools:
            return {}
        memo = self._memo.get(source.id)
        if memo is not None and memo[0] == source.updated_at and memo[1] is tools:
            return dict(memo[2])
        held = self._observe(source, tools)
        self._memo[source.id] = (source.updated_at, tools, held)  # holds `tools`: its id stays unique
        return dict(held)

    def _observe(self, source: SourceView, tools: Sequence[ToolInfo]) -> dict[str, HeldTool]:
        definitions = {t.name: definition_of(t) for t in tools}
        hashes = {name: pin_hash(d) for name, d in definitions.items()}
        rows = self._rows(source.id)
        pinned = self._pins.pin_state(source.id)
        if pinned is None or not pinned["pin_tools"]:
            return {}
        if pinned["tools_pinned_at"] is None:
            self._pin_first(source, definitions, hashes)
            return {}
        now = now_iso()
        writes: list[tuple[str, dict[str, Any]]] = []  # (tool, values) to upsert
        changed: list[HeldTool] = []
        held: dict[str, HeldTool] = {}
        for name, digest in hashes.items():
            row = rows.get(name)
            if row is not None and row["hash"] == digest:
                if row["pending_hash"] is not None:  # the server went back to what was approved
                    writes.append((name, {"pending_hash": None, "pending_definition": None,
                                          "pending_since": None}))
                continue
            if row is None or row["pending_hash"] != digest:
                row = dict(row or {"tool_name": name, "hash": None, "definition": None}) | {
                    "pending_hash": digest, "pending_definition": _dump(definitions[name]), "pending_since": now}
                writes.append((name, {k: row[k] for k in ("pending_hash", "pending_definition", "pending_since")}))
                changed.append(_held(source.id, row))
            held[name] = _held(source.id, row)
        for name, row in rows.items():  # removed tools simply disappear
            if name not in hashes and row["pending_hash"] is not None:
                writes.append((name, {"pending_hash": None, "pending_definition": None, "pending_since": None}))
        if writes:
            self._write(source, writes, changed)
        return held

    def _pin_first(self, source: SourceView, definitions: dict[str, dict[str, Any]],
                   hashes: dict[str, str]) -> None:
        now = now_iso()
        with self.store.transaction() as cx:
            row = self._pins.pinned_at(cx, source.id)
            if row is None or row["tools_pinned_at"] is not None:
                return  # pinned meanwhile (another process), or deleted
            self._pins.pin_all(cx, source.id, [
                {"tool_name": name, "hash": digest, "definition": _dump(definitions[name]), "pinned_at": now,
                 "pinned_by": "first listing"} for name, digest in hashes.items()], now)
            self.registry._audit(cx, action="source.tools_pinned", object_type="source", object_id=source.id,
                                 sandbox_id=source.sandbox_id,
                                 after={"tools": sorted(hashes), "count": len(hashes)})
        log.info("pinned %d tool definition(s) of %s", len(hashes), source.id)

    def _write(self, source: SourceView, writes: list[tuple[str, dict[str, Any]]],
               changed: list[HeldTool]) -> None:
        with self.store.transaction() as cx:
            for name, values in writes:
                self._pins.write_pending(cx, source.id, name, values)
            if changed:
                self.registry._audit(
                    cx, action="source.tools_changed", object_type="source", object_id=source.id,
                    sandbox_id=source.sandbox_id,
                    after={"held": [{"tool": h.tool, "status": h.status, "changes": h.changes} for h in changed]})
        for h in changed:
            log.info("source %s: tool %s held (%s): %s", source.id, h.tool, h.status, "; ".join(h.changes))

    # -- reads -----------------------------------------------------------------------------

    def held(self, source_id: str) -> list[HeldTool]:
        """The tools of ``source_id`` held now (as last listed), oldest change first."""
        source = self.registry.get_source(source_id)
        if not source.pin_tools:
            return []
        rows = [r for r in self._rows(source_id).values() if r["pending_hash"] is not None]
        rows.sort(key=lambda r: (r["pending_since"] or "", r["tool_name"]))
        return [_held(source_id, r) for r in rows]

    def held_tool(self, source_id: str, tool: str) -> HeldTool | None:
        """``tool`` of ``source_id`` if it is held now."""
        row = self._pins.held_tool(source_id, tool)
        return _held(source_id, row) if row else None

    # -- approval --------------------------------------------------------------------------

    def approve(self, source_id: str, tools: Sequence[str] | None = None, *,
                sandbox: str | None = None) -> ApprovalResult:
        """Pin what is held (all of it, or the named tools) as last listed and shown."""
        source = self.registry.get_source(source_id, sandbox=sandbox)
        if source.status == SourceStatus.DISCONNECTED:
            raise Conflict(f"source {source_id} is revoked (disconnected); there is nothing to approve")
        held = {h.tool: h for h in self.held(source_id)}
        if tools:
            unknown = [t for t in tools if t not in held]
            if unknown:
                what = ", ".join(sorted(held)) or "none"
                raise NotFound(f"tool {unknown[0]!r} of source {source.name} ({source_id}) is not held "
                               f"(held tools: {what})")
            chosen = [held[t] for t in dict.fromkeys(tools)]
        else:
            chosen = list(held.values())
        if not chosen:
            return ApprovalResult(source_id=source_id, detail="nothing is held: every listed tool is approved")
        now = now_iso()
        approved: list[HeldTool] = []
        with self.store.transaction() as cx:
            for h in chosen:
                if self._pins.approve(cx, source_id, h.tool, str(h.pending_hash), at=now, by=self._actor()):
                    approved.append(h)  # not changed again since it was read
            if approved:
                self._pins.touch_source(cx, source_id, now)
                self.registry._audit(
                    cx, action="source.tools_approved", object_type="source", object_id=source_id,
                    sandbox_id=source.sandbox_id,
                    after={"approved": [{"tool": h.tool, "hash": h.pending_hash, "changes": h.changes}
                                        for h in approved]})
        if approved:
            self.registry._changed(source_id, "approve")
        still = [h for h in self.held(source_id)]
        names = ", ".join(h.tool for h in approved) or "nothing"
        return ApprovalResult(source_id=source_id, approved=approved, still_held=still,
                              detail=f"approved {names}" + (f"; still held: {', '.join(h.tool for h in still)}"
                                                            if still else ""))

    def _actor(self) -> str:
        from concierge.registry.audit import current_actor

        return current_actor(self.registry.actor)

    @staticmethod
    def reset(cx: Transaction, source_id: str) -> None:
        """Forget a source's pins (inside the caller's transaction): the next listing is pinned whole."""
        PinRows.reset(cx, source_id)
