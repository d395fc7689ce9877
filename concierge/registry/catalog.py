"""Resolve what an agent sees: the live tool catalog and the trace that explains it.

    agent.tool_sources  ×  the sandbox's active user_mcp sources  ×  source.allowed_tools
                        ×  agent.tool_allowlist ([] = all; exact names or globs like ``acme_*``)

Every active source is listed concurrently, each under its own deadline (its
``connect_timeout``, capped by ``resolve(deadline=)``), so one slow or broken server is skipped
with its reason and never delays the answer past that deadline. Listings are cached per
source for ``ttl_seconds``; any change to a source (update, pause, resume, revoke, delete,
a health-check status change) drops its entry at once.

Advertised names are ``<app_namespace>_<tool>``, with characters outside ``[a-zA-Z0-9_-]``
replaced by ``_``, shortened to 64 characters with a short hash suffix when too long, and made
unique: on a collision the earlier claim (older source, then tool name) keeps the name and the
other gets a hashed suffix; both appear in ``trace.collisions``. Nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import anyio

from concierge.errors import ConnectorError, NotFound
from concierge.mcp_client import DEFAULT_INPUT_SCHEMA, Endpoint, ToolInfo, list_tools
from concierge.registry.catalog_models import (
    CatalogResult,
    CatalogTool,
    ResolutionTrace,
    SkippedSource,
)
from concierge.registry.models import SourceStatus, SourceView
from concierge.registry.service import Registry

__all__ = [
    "Catalog",
    "Lister",
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "MAX_SCHEMA_CHARS",
    "NAME_RE",
    "base_name",
    "is_glob",
    "matches_any",
    "namespace_prefix",
]

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_NAME = 64
HASH_CHARS = 8
SEPARATOR = "_"
MAX_DESCRIPTION = 1024
"""Catalog descriptions are capped here (OpenAI's function-description limit)."""
MAX_SCHEMA_CHARS = 64_000
"""An input schema bigger than this (as JSON) is replaced by an empty object schema."""

Lister = Callable[[Endpoint], Awaitable[list[ToolInfo]]]
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_GLOB_CHARS = frozenset("*?[")


# -- naming -----------------------------------------------------------------------------------

def _digest(text: str, chars: int = HASH_CHARS) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:chars]


def _with_suffix(name: str, suffix: str) -> str:
    return f"{name[:MAX_NAME - len(suffix) - 1]}{SEPARATOR}{suffix}"


def base_name(namespace: str, tool: str) -> str:
    """``namespace_tool`` made valid: bad characters become ``_``; over 64 characters, the
    name is cut and ends in a hash of the full original, so the shortening is deterministic
    and two long names that share a prefix stay apart."""
    raw = f"{namespace}{SEPARATOR}{tool}"
    clean = _INVALID.sub("_", raw)
    if len(clean) > MAX_NAME:
        clean = _with_suffix(clean, _digest(raw))
    return clean


def namespace_prefix(namespace: str) -> str:
    """What every advertised name of ``namespace`` starts with (even a shortened one)."""
    return f"{_INVALID.sub('_', namespace)}{SEPARATOR}"[:MAX_NAME - HASH_CHARS - 1]


def _collision_name(base: str, key: str, taken: set[str]) -> str:
    for chars in (HASH_CHARS, 12, 16, 24):
        candidate = _with_suffix(base, _digest(key, chars))
        if candidate not in taken:
            return candidate
    n = 2  # pragma: no cover - needs a 96-bit hash collision
    while (candidate := _with_suffix(base, f"{_digest(key)}{n}")) in taken:
        n += 1
    return candidate


@dataclass(frozen=True)
class _Candidate:
    source: SourceView
    tool: ToolInfo
    order: int  # position of the source in the sandbox (oldest first)


def _unique_names(candidates: Iterable[_Candidate], trace: ResolutionTrace) -> list[tuple[str, _Candidate]]:
    """Give every candidate a distinct valid name; record renames and collisions in ``trace``.

    Claim order: names that needed no change first, then sanitized/shortened ones; within
    each, older sources first, then tool name. The first claim keeps the base name.
    """
    items = [(base_name(c.source.app_namespace, c.tool.name), c) for c in candidates]
    raw = {id(c): f"{c.source.app_namespace}{SEPARATOR}{c.tool.name}" for _, c in items}
    items.sort(key=lambda it: (it[0] != raw[id(it[1])], it[1].order, it[1].tool.name))
    taken: dict[str, _Candidate] = {}
    out: list[tuple[str, _Candidate]] = []
    for base, cand in items:
        name = base
        if base in taken:
            name = _collision_name(base, f"{cand.source.id}\0{cand.tool.name}", set(taken))
            kept = taken[base]
            trace.collisions.append({
                "name": base, "kept_source_id": kept.source.id, "kept_original_name": kept.tool.name,
                "source_id": cand.source.id, "original_name": cand.tool.name, "renamed_to": name})
        if name != raw[id(cand)]:
            reason = ("collision" if name != base else
                      "shortened" if len(_INVALID.sub("_", raw[id(cand)])) > MAX_NAME else "sanitized")
            trace.renamed.append({"name": name, "source_id": cand.source.id,
                                  "original_name": cand.tool.name, "reason": reason})
        taken[name] = cand
        out.append((name, cand))
    return out


# -- allowlists -------------------------------------------------------------------------------

def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def matches_any(patterns: Iterable[str], name: str) -> bool:
    """Exact match, or a case-sensitive glob (``acme_*``, ``*_read``, ``tool_?``)."""
    return any(p == name or (is_glob(p) and fnmatchcase(name, p)) for p in patterns)


def _unmatched(patterns: Iterable[str], names: Iterable[str]) -> list[str]:
    names = list(names)
    return [p for p in patterns if not any(matches_any([p], n) for n in names)]


# -- the resolver -----------------------------------------------------------------------------

@dataclass
class _Entry:
    tools: list[ToolInfo]
    at: float
    stamp: str  # the source row's updated_at when listed: a changed row never serves old tools


@dataclass
class _Listing:
    tools: list[ToolInfo] | None = None
    skipped: SkippedSource | None = None
    cached: bool = False


class Catalog:
    """Resolves agents' catalogs from live servers, with a per-source TTL cache."""

    def __init__(self, registry: Registry, *, ttl_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, lister: Lister | None = None,
                 max_concurrency: int | None = None) -> None:
        self.registry = registry
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lister: Lister = lister or list_tools
        self._cache: dict[str, _Entry] = {}
        self._generation: dict[str, int] = {}
        self._limit = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        registry.on_source_change(self._on_source_change)

    # -- cache ------------------------------------------------------------------------------

    def _on_source_change(self, source_id: str, action: str) -> None:
        self.invalidate(source_id)

    def invalidate(self, source_id: str | None = None) -> None:
        """Drop one source's cached listing (or all); an in-flight listing is not stored."""
        ids = [source_id] if source_id is not None else list(self._cache)
        for sid in ids:
            self._cache.pop(sid, None)
            self._generation[sid] = self._generation.get(sid, 0) + 1

    def cached(self, source_id: str) -> bool:
        entry = self._cache.get(source_id)
        return entry is not None and self._clock() - entry.at < self.ttl_seconds

    # -- listing ----------------------------------------------------------------------------

    async def _list_one(self, source: SourceView, budget: float) -> _Listing:
        entry = self._cache.get(source.id)
        if entry is not None and entry.stamp == source.updated_at and \
                self._clock() - entry.at < self.ttl_seconds:
            return _Listing(tools=entry.tools, cached=True)
        generation = self._generation.get(source.id, 0)
        if self._limit is not None:
            async with self._limit:  # the deadline starts when the source's turn comes
                return await self._fetch(source, budget, generation)
        return await self._fetch(source, budget, generation)

    async def _fetch(self, source: SourceView, budget: float, generation: int) -> _Listing:
        endpoint = self.registry.endpoint(source.id)
        if budget < endpoint.connect_timeout:
            endpoint = dataclasses.replace(endpoint, connect_timeout=budget)
        tools: list[ToolInfo] | None = None
        try:
            with anyio.move_on_after(budget):
                tools = await self._lister(endpoint)
        except ConnectorError as exc:
            return self._skip(source, str(exc.kind), exc.detail)
        except Exception as exc:  # a lister bug must not take the whole catalog down
            return self._skip(source, "error", f"{type(exc).__name__} while listing tools")
        if tools is None:
            return self._skip(source, "timeout", f"no tools/list answer within {budget:g} s")
        if self._generation.get(source.id, 0) == generation:
            self._cache[source.id] = _Entry(tools=tools, at=self._clock(), stamp=source.updated_at)
        return _Listing(tools=tools)

    @staticmethod
    def _skip(source: SourceView, reason: str, detail: str | None) -> _Listing:
        return _Listing(skipped=SkippedSource(source_id=source.id, name=source.name,
                                              app=source.app_namespace, reason=reason, detail=detail))

    # -- resolve ----------------------------------------------------------------------------

    async def resolve(self, agent_slug: str | None = None, *, sandbox: str | None = None,
                      app: str | None = None, deadline: float | None = None) -> CatalogResult:
        """The agent's catalog now. ``agent_slug=None`` resolves a virtual agent that takes every
        user_mcp tool ("what would an agent see"). ``app`` keeps one namespace's tools (names
        stay those of the full catalog). ``deadline`` caps every source's listing time."""
        started = time.perf_counter()
        sb = self.registry.get_sandbox(sandbox)
        agent = self.registry.get_agent(agent_slug, sandbox=sb.id) if agent_slug else None
        tool_sources = agent.tool_sources if agent else ["user_mcp"]
        allowlist = agent.tool_allowlist if agent else []
        trace = ResolutionTrace(agent=agent.slug if agent else None)
        trace.allowlist_filtered_out = {"source": [], "agent": []}
        if agent is not None and agent.status != "active":
            trace.notes.append(f"agent {agent.slug} is {agent.status}: the gateway refuses its calls")

        sources = self.registry.list_sources(sandbox=sb.id)
        if app is not None:
            self._check_app(app, sources, sb.name)
        order = {s.id: i for i, s in enumerate(sources)}
        listings: dict[str, _Listing] = {}
        wanted: list[SourceView] = []
        for src in sources:
            if src.kind not in tool_sources:
                listings[src.id] = self._skip(
                    src, "not_in_tool_sources",
                    f"the agent's tool_sources ({', '.join(tool_sources) or 'none'}) exclude {src.kind}")
            elif src.status != SourceStatus.ACTIVE:
                detail = src.health_error if src.status == SourceStatus.ERROR else None
                listings[src.id] = self._skip(src, src.status.value, detail)
            else:
                wanted.append(src)

        async def run(src: SourceView) -> None:
            budget = src.connect_timeout if deadline is None else min(src.connect_timeout, deadline)
            listings[src.id] = await self._list_one(src, max(budget, 0.001))

        async with anyio.create_task_group() as tg:
            for src in wanted:
                tg.start_soon(run, src)

        candidates: list[_Candidate] = []
        for src in sources:
            listing = listings[src.id]
            if listing.skipped is not None:
                trace.sources_skipped.append(listing.skipped)
                continue
            trace.sources_resolved.append(src.id)
            if listing.cached:
                trace.cached_sources.append(src.id)
            tools = listing.tools or []
            if src.allowed_tools is not None:
                missing = _unmatched(src.allowed_tools, (t.name for t in tools))
                if missing:
                    trace.source_allowlist_missing_entries[src.id] = missing
                kept = [t for t in tools if matches_any(src.allowed_tools, t.name)]
                trace.allowlist_filtered_out["source"].extend(sorted(
                    base_name(src.app_namespace, t.name) for t in tools
                    if not matches_any(src.allowed_tools, t.name)))
                tools = kept
            candidates.extend(_Candidate(src, t, order[src.id]) for t in tools)

        named = _unique_names(candidates, trace)
        named.sort(key=lambda it: (it[1].order, it[0]))
        if allowlist:
            trace.allowlist_missing_entries = _unmatched(allowlist, (n for n, _ in named))
            trace.allowlist_filtered_out["agent"] = [n for n, _ in named if not matches_any(allowlist, n)]
            named = [(n, c) for n, c in named if matches_any(allowlist, n)]

        entries = [self._entry(name, cand, trace) for name, cand in named]
        trace.tool_names_advertised = [e.name for e in entries]
        if app is not None:
            entries = [e for e in entries if e.app.lower() == app.lower()]
            trace.notes.append(f"showing app {app} only ({len(entries)} of "
                               f"{len(trace.tool_names_advertised)} tools)")
        trace.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        return CatalogResult(agent=agent.slug if agent else None, sandbox_id=sb.id, tools=entries,
                             trace=trace)

    @staticmethod
    def _check_app(app: str, sources: list[SourceView], sandbox_name: str) -> None:
        live = [s for s in sources if s.status != SourceStatus.DISCONNECTED]
        if not any(s.app_namespace.lower() == app.lower() for s in live):
            known = ", ".join(sorted(s.app_namespace for s in live)) or "none"
            raise NotFound(f"no source with app_namespace {app!r} in sandbox {sandbox_name!r} "
                           f"(namespaces: {known})")

    @staticmethod
    def _entry(name: str, cand: _Candidate, trace: ResolutionTrace) -> CatalogTool:
        description = cand.tool.description or cand.tool.title or ""
        if len(description) > MAX_DESCRIPTION:
            description = description[:MAX_DESCRIPTION - 1].rstrip() + "…"
        schema: dict[str, Any] = cand.tool.input_schema
        if len(json.dumps(schema, default=str)) > MAX_SCHEMA_CHARS:
            schema = dict(DEFAULT_INPUT_SCHEMA)
            trace.notes.append(f"{name}: input schema over {MAX_SCHEMA_CHARS} characters replaced "
                               "by an empty object schema")
        return CatalogTool(name=name, app=cand.source.app_namespace, source_id=cand.source.id,
                           source_name=cand.source.name, original_name=cand.tool.name,
                           description=description, input_schema=schema)
