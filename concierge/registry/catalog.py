"""Resolve what an agent sees: the live tool catalog and the trace that explains it.

    agent.tool_sources  ×  the sandbox's active user_mcp sources  ×  source.allowed_tools
                        ×  agent.tool_allowlist ([] = all; exact names or globs like ``acme_*``)

The same namespacing and both allowlists apply to the sources' resources, resource templates
and prompts. Every active source is listed through its pooled session (`SessionPool`, shared
with the gateway), each under its own deadline (its ``connect_timeout``, capped by
``resolve(deadline=)``), so one slow or broken server is skipped with its reason and never
delays the answer past that deadline.

Listings are cached per source for ``ttl_seconds``. Only one listing per source is ever in
flight (single flight): concurrent resolutions wait for the same one, a waiter whose
deadline passes stops waiting but the listing goes on and fills the cache. An expired listing
is served while a refresh runs (stale-while-revalidate, ``trace.stale_sources``). A listing that
failed slowly (no answer within its deadline, or a failure after half of it) is remembered for
``failure_ttl_seconds``: resolutions in that time skip the source at once, with the same reason
and a detail that says when it was tried, and start a new attempt in the background (at most one
a second), which fills the cache as soon as the server answers again; one hung server costs one
deadline per ``failure_ttl_seconds``, not one per resolution. A quick failure (refused,
unauthorized) is not remembered: the next resolution tries again, and sees a fix at once.
Concurrent resolutions of one agent share one resolution. Any change to a source (update, pause,
resume, revoke, delete, a health-check status change) drops its entry and its pooled session
at once, and so does the server's own ``list_changed`` notification; `on_change` listeners
hear both. A source whose stored secret cannot be decrypted is skipped (``vault_error``).
The sources skipped without a listing (paused, error, disconnected…), which can be
thousands, are counted per reason (``trace.sources_skipped_by_reason``) and the first
``MAX_SKIPPED_ITEMS`` of each itemized, read a few columns at a time (`catalog_rows`).

Advertised names are ``<app_namespace>_<tool>``, with characters outside ``[a-zA-Z0-9_-]``
replaced by ``_``, shortened to 64 characters with a short hash suffix when too long, and made
unique: on a collision the earlier claim (older source, then tool name) keeps the name and the
other gets a hashed suffix; both appear in ``trace.collisions``. Nothing is dropped silently.
Tools that require task-augmented execution (which the gateway does not offer) are left out
with reason ``task_required`` in ``trace.tools_left_out``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio

from concierge.errors import ConciergeError, ConnectorError, NotFound, VaultError
from concierge.mcp_client import DEFAULT_INPUT_SCHEMA, DEFAULT_MAX_MESSAGE_BYTES, Endpoint, SessionPool, ToolInfo
from concierge.mcp_client.kinds import ErrorKind
from concierge.mcp_client.session import McpSession
from concierge.offloop import off_loop
from concierge.registry.allowlists import is_glob, matches_any, unmatched
from concierge.registry.catalog_rows import IdleRow, IdleSources, idle_sources, live_namespaces
from concierge.registry.catalog_models import (
    CatalogPrompt,
    CatalogResource,
    CatalogResult,
    CatalogTool,
    ResolutionTrace,
    SkippedSource,
)
from concierge.registry.models import SourceStatus, SourceView
from concierge.registry.service import Registry

__all__ = [
    "Catalog",
    "ChangeListener",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_SESSIONS",
    "Lister",
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "MAX_SCHEMA_CHARS",
    "MAX_SKIPPED_ITEMS",
    "MIN_NAMESPACE",
    "NAME_RE",
    "SourceListing",
    "base_name",
    "is_glob",
    "matches_any",
    "namespace_prefix",
]

log = logging.getLogger("concierge.catalog")

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_NAME = 64
HASH_CHARS = 8
MIN_NAMESPACE = 12
"""A shortened name keeps at least this much of its namespace (the rest goes to the tool)."""
SEPARATOR = "_"
MAX_DESCRIPTION = 1024
"""Catalog descriptions are capped here (OpenAI's function-description limit)."""
MAX_SCHEMA_CHARS = 64_000
"""An input schema bigger than this (as JSON) is replaced by an empty object schema."""
DEFAULT_MAX_CONCURRENCY = 32
"""Listings in flight at once: 2,000 at once listed nothing in 15 s (every one timed out)."""
DEFAULT_MAX_SESSIONS = 256
"""Pooled sessions the catalog keeps open (see `Catalog.max_sessions`)."""
MAX_SKIPPED_ITEMS = 20
"""Sources skipped without a listing (paused, error, disconnected, not in the agent's
tool_sources) itemized in the trace per reason; all are counted (``sources_skipped_by_reason``).
A sandbox of 9,900 paused sources built 9,900 entries and missed the listing deadline."""

Lister = Callable[[Endpoint], Awaitable[list[ToolInfo]]]
"""A one-shot listing function (instead of pooled sessions), e.g. for benchmarks."""
ChangeListener = Callable[[str, str], None]
"""(source_id, what): a registry action (``update``, ``pause``…) or ``upstream_tools`` etc."""
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_ERROR_KINDS = frozenset(k.value for k in ErrorKind)  # (``__members__`` is rebuilt per call: 10,000 skips took 0.7 s)


# -- naming -----------------------------------------------------------------------------------

def _digest(text: str, chars: int = HASH_CHARS) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:chars]


def _with_suffix(name: str, suffix: str) -> str:
    return f"{name[:MAX_NAME - len(suffix) - 1]}{SEPARATOR}{suffix}"


def base_name(namespace: str, tool: str) -> str:
    """``namespace_tool`` made valid: bad characters become ``_``; over 64 characters, both
    parts are cut (the tool keeps at least what the namespace does not need, the namespace at
    least ``MIN_NAMESPACE`` characters) and a hash of the full original ends the name, so the
    shortening is deterministic, a long namespace never erases the tool's own name, and two
    long names that share a prefix stay apart."""
    raw = f"{namespace}{SEPARATOR}{tool}"
    clean = _INVALID.sub("_", raw)
    if len(clean) <= MAX_NAME:
        return clean
    ns, name = _INVALID.sub("_", namespace), _INVALID.sub("_", tool)
    room = MAX_NAME - HASH_CHARS - 2  # two separators
    ns_keep = min(len(ns), max(MIN_NAMESPACE, room - len(name)))
    return f"{ns[:ns_keep]}{SEPARATOR}{name[:room - ns_keep]}{SEPARATOR}{_digest(raw)}"


def namespace_prefix(namespace: str) -> str:
    """What every advertised name of ``namespace`` starts with (even a shortened one)."""
    clean = _INVALID.sub("_", namespace)
    return f"{clean}{SEPARATOR}" if len(clean) <= MIN_NAMESPACE else clean[:MIN_NAMESPACE]


def _collision_name(base: str, key: str, taken: set[str]) -> str:
    for chars in (HASH_CHARS, 12, 16, 24):
        candidate = _with_suffix(base, _digest(key, chars))
        if candidate not in taken:
            return candidate
    n = 2  # pragma: no cover - needs a 96-bit hash collision
    while (candidate := _with_suffix(base, f"{_digest(key)}{n}")) in taken:
        n += 1
    return candidate


def _sandbox_order(source: SourceView | IdleRow) -> tuple[str, str]:
    return source.created_at, source.id


@dataclass(frozen=True)
class _Candidate:
    source: SourceView
    tool: Any  # a ToolInfo, or a _Named resource/prompt (anything with .name)
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

# is_glob, matches_any and unmatched live in `concierge.registry.allowlists` (imported above).




# -- what one source lists --------------------------------------------------------------------

@dataclass(frozen=True)
class _Named:
    """A resource, resource template or prompt, keyed by its name for namespacing."""

    name: str
    definition: dict[str, Any]


@dataclass(frozen=True)
class SourceListing:
    """Everything one source offers (resources and prompts only if its server has them)."""

    tools: list[ToolInfo]
    resources: list[_Named] = field(default_factory=list)
    resource_templates: list[_Named] = field(default_factory=list)
    prompts: list[_Named] = field(default_factory=list)
    instructions: str | None = None


def _named(items: Iterable[Any]) -> list[_Named]:
    out = []
    for item in items:
        dumped = item.model_dump(by_alias=True, exclude_none=True, mode="json")
        out.append(_Named(name=str(dumped.get("name") or dumped.get("uri") or "resource"), definition=dumped))
    return out


async def _list_session(session: McpSession) -> SourceListing:
    """Tools, then (if the server offers them) resources, templates and prompts; a failure of
    those extras drops only them."""
    tools = await session.list_tools()
    caps = session.capabilities
    resources: list[_Named] = []
    templates: list[_Named] = []
    prompts: list[_Named] = []
    try:
        if caps is not None and caps.resources is not None:
            resources = _named(await session.list_resources())
            templates = _named(await session.list_resource_templates())
        if caps is not None and caps.prompts is not None:
            prompts = _named(await session.list_prompts())
    except ConnectorError as exc:
        log.info("resources/prompts of %s not listed: %s", session.endpoint.url, exc.kind)
    return SourceListing(tools=tools, resources=resources, resource_templates=templates, prompts=prompts,
                         instructions=session.instructions)


# -- the resolver -----------------------------------------------------------------------------

@dataclass
class _Entry:
    listing: SourceListing
    at: float
    stamp: str  # the source row's updated_at when listed: a changed row never serves old tools


@dataclass
class _Failure:
    skipped: SkippedSource
    at: float
    stamp: str  # as `_Entry.stamp`: a changed row is tried afresh


FAILURE_RETRY_SECONDS = 1.0
"""While a failed listing is remembered, background attempts start at most this often."""


@dataclass
class _Listing:
    listing: SourceListing | None = None
    skipped: SkippedSource | None = None
    cached: bool = False
    stale: bool = False


class Catalog:
    """Resolves agents' catalogs from live servers, with a per-source TTL cache."""

    def __init__(self, registry: Registry, *, ttl_seconds: float = 30.0, failure_ttl_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, lister: Lister | None = None,
                 max_concurrency: int | None = DEFAULT_MAX_CONCURRENCY, pool: SessionPool | None = None,
                 max_sessions: int | None = DEFAULT_MAX_SESSIONS,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.registry = registry
        self.max_message_bytes = max_message_bytes
        """The cap on one message (a listing page, a tool result) read from a server; applies
        to sessions opened from now on."""
        self.ttl_seconds = ttl_seconds
        self.failure_ttl_seconds = failure_ttl_seconds
        """How long a slowly failed listing answers for its source without waiting (0: never)."""
        self._failures: dict[str, _Failure] = {}
        self.pool = pool if pool is not None else SessionPool()
        """Pooled upstream sessions, shared with the gateway."""
        self._clock = clock
        self._lister = lister
        self._cache: dict[str, _Entry] = {}
        self._generation: dict[str, int] = {}
        self._flights: dict[str, asyncio.Task[_Listing]] = {}
        self._resolving: dict[tuple[Any, ...], asyncio.Task[CatalogResult]] = {}
        self._listeners: list[ChangeListener] = []
        self._limit = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self.max_sessions = max_sessions
        """Pooled sessions kept open for listings; beyond it the least recently listed idle
        ones are closed (``None``: every active source keeps one)."""
        self._listed: OrderedDict[str, None] = OrderedDict()  # source ids, least recently listed first
        self.listings_started = 0
        """Upstream listings begun (single flight keeps this at one per source and refresh)."""
        registry.on_source_change(self._on_source_change)
        self.pool.on_list_changed(self._on_upstream_change)

    async def __aenter__(self) -> Catalog:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for listings in flight (each is bounded by its deadline), close every session."""
        for flight in list(self._flights.values()):
            with anyio.CancelScope(shield=True):
                await asyncio.wait({flight})
        await self.pool.aclose()

    # -- cache and change events ------------------------------------------------------------

    def on_change(self, listener: ChangeListener) -> None:
        """Hear every change that may alter catalogs: ``(source_id, what)``."""
        self._listeners.append(listener)

    def _notify(self, source_id: str, what: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(source_id, what)
            except Exception:  # a listener must never break the catalog
                log.exception("catalog change listener failed")

    def _on_source_change(self, source_id: str, action: str) -> None:
        self.source_changed(source_id, action)

    def source_changed(self, source_id: str, action: str) -> None:
        """Drop what we hold of a source (listing, pooled session) and tell the listeners;
        the registry calls this for changes in this process, `Gateway.poll_changes` for others."""
        self.invalidate(source_id)
        self.pool.evict(source_id)
        self._notify(source_id, action)

    def _on_upstream_change(self, source_id: str, what: str) -> None:
        self.invalidate(source_id)
        self._notify(source_id, f"upstream_{what}")

    def invalidate(self, source_id: str | None = None) -> None:
        """Drop one source's cached listing (or all); an in-flight listing is not stored."""
        ids = [source_id] if source_id is not None else list(self._cache)
        if source_id is None:
            self._failures.clear()
        for sid in ids:
            self._cache.pop(sid, None)
            self._failures.pop(sid, None)
            self._flights.pop(sid, None)  # a listing under way may use the old row: nobody joins it now
            self._generation[sid] = self._generation.get(sid, 0) + 1
        self._resolving.clear()  # a resolution under way may predate the change

    def cached(self, source_id: str) -> bool:
        entry = self._cache.get(source_id)
        return entry is not None and self._clock() - entry.at < self.ttl_seconds

    # -- listing ----------------------------------------------------------------------------

    async def _list_one(self, source: SourceView, budget: float) -> _Listing:
        entry = self._cache.get(source.id)
        if entry is not None and entry.stamp == source.updated_at:
            if self._clock() - entry.at < self.ttl_seconds:
                return _Listing(listing=entry.listing, cached=True)
            self._flight(source)  # refresh in the background; serve what we have meanwhile
            return _Listing(listing=entry.listing, cached=True, stale=True)
        failed = self._failures.get(source.id)
        if failed is not None and failed.stamp == source.updated_at:
            age = self._clock() - failed.at
            if age < self.failure_ttl_seconds:
                if age >= FAILURE_RETRY_SECONDS:
                    self._flight(source)  # try again in the background (one attempt at a time)
                when = "just now" if age < 1 else f"{age:.0f} s ago"
                detail = f"{failed.skipped.detail or failed.skipped.reason} (tried {when}; trying again " \
                         "in the background)"
                return _Listing(skipped=failed.skipped.model_copy(update={"detail": detail}))
        flight = self._flight(source)
        with anyio.move_on_after(budget):
            return await asyncio.shield(flight)
        return self._skip(source, "timeout", f"no tools/list answer within {budget:g} s")

    def _flight(self, source: SourceView) -> asyncio.Task[_Listing]:
        """The listing of ``source`` in flight, started if there is none (single flight)."""
        flight = self._flights.get(source.id)
        if flight is not None:
            return flight
        self.listings_started += 1
        flight = asyncio.get_running_loop().create_task(self._fetch(source), name=f"list {source.id}")
        self._flights[source.id] = flight

        def done(task: asyncio.Task[_Listing], sid: str = source.id) -> None:
            if self._flights.get(sid) is task:
                del self._flights[sid]
            if not task.cancelled():
                task.exception()

        flight.add_done_callback(done)
        return flight

    async def _fetch(self, source: SourceView) -> _Listing:
        """One upstream listing under the source's own deadline; fills the cache on success."""
        generation = self._generation.get(source.id, 0)
        budget = source.connect_timeout
        try:
            if self._limit is not None:
                async with self._limit:  # the deadline starts when the source's turn comes
                    return await self._fetch_now(source, budget, generation)
            return await self._fetch_now(source, budget, generation)
        finally:
            self._keep_sessions_bounded(source.id)

    def _keep_sessions_bounded(self, source_id: str) -> None:
        """A session per active source is memory and a socket per source (2,000 sources held
        hundreds of MB): past ``max_sessions``, close the least recently listed idle ones."""
        if self._lister is not None or self.max_sessions is None:
            return
        self._listed[source_id] = None
        self._listed.move_to_end(source_id)
        if len(self._listed) <= self.max_sessions:
            return
        for sid in list(self._listed):
            if len(self._listed) <= self.max_sessions:
                break
            if sid != source_id and not self.pool.in_flight(sid):
                del self._listed[sid]
                if self.pool.pooled(sid) is not None:
                    self.pool.evict(sid)

    async def _fetch_now(self, source: SourceView, budget: float, generation: int) -> _Listing:
        began = time.monotonic()
        result = await self._fetch_listing(source, budget, generation)
        if self._generation.get(source.id, 0) == generation:  # (a change since: nothing to remember)
            skipped = result.skipped
            slow = skipped is not None and (skipped.reason == "timeout" or time.monotonic() - began >= budget / 2)
            if skipped is not None and slow and self.failure_ttl_seconds > 0:
                self._failures[source.id] = _Failure(skipped, self._clock(), source.updated_at)
            else:
                self._failures.pop(source.id, None)
        return result

    async def _fetch_listing(self, source: SourceView, budget: float, generation: int) -> _Listing:
        listing: SourceListing | None = None
        try:
            with anyio.move_on_after(budget):
                listing = await self._list_source(source)
        except VaultError as exc:
            return self._skip(source, "vault_error", exc.detail)
        except ConnectorError as exc:
            if exc.kind is ErrorKind.AUTH_REQUIRED:  # never silently expired: the source says so
                self.registry.mark_auth_required(source.id, exc.sentence)
            return self._skip(source, exc.kind.value, exc.sentence)
        except ConciergeError as exc:
            return self._skip(source, exc.error, exc.detail)
        except Exception as exc:  # a lister bug must not take the whole catalog down
            log.exception("listing %s failed", source.id)
            return self._skip(source, "error", f"{type(exc).__name__} while listing tools")
        if listing is None:
            return self._skip(source, "timeout", f"no tools/list answer within {budget:g} s")
        if self._generation.get(source.id, 0) == generation:
            self._cache[source.id] = _Entry(listing=listing, at=self._clock(), stamp=source.updated_at)
        return _Listing(listing=listing)

    def endpoint(self, source_id: str) -> Endpoint:
        """The source's endpoint (its decrypted credential: never log it) with our size cap.
        Raises `VaultError` when the credential cannot be decrypted."""
        endpoint = self.registry.endpoint(source_id)
        if endpoint.max_message_bytes != self.max_message_bytes:
            endpoint = dataclasses.replace(endpoint, max_message_bytes=self.max_message_bytes)
        return endpoint

    async def _list_source(self, source: SourceView) -> SourceListing:
        if self._lister is not None:
            return SourceListing(tools=await self._lister(self.endpoint(source.id)))
        session, _ = await self.pool.session(source.id, lambda: self.endpoint(source.id))
        try:
            return await _list_session(session)
        except ConnectorError:
            if session.closed:
                self.pool.discard(source.id, session)
            raise

    @staticmethod
    def skipped_entry(source: SourceView | IdleRow) -> SkippedSource:
        """The trace entry of a source that is not active (its status is the reason)."""
        failed = source.status in (SourceStatus.ERROR, SourceStatus.AUTH_REQUIRED)
        kind = ErrorKind(source.health_error_kind) if failed and source.health_error_kind in _ERROR_KINDS else None
        listing = Catalog._skip(source, source.status.value, source.health_error if failed else None, kind=kind)
        assert listing.skipped is not None
        return listing.skipped

    @staticmethod
    def _skip(source: SourceView | IdleRow, reason: str, detail: str | None, *,
              kind: ErrorKind | None = None) -> _Listing:
        if kind is None and reason in _ERROR_KINDS:
            kind = ErrorKind(reason)
        return _Listing(skipped=SkippedSource(source_id=source.id, name=source.name,
                                              app=source.app_namespace, reason=reason, detail=detail,
                                              kind=kind.value if kind else None))

    # -- resolve ----------------------------------------------------------------------------

    async def resolve(self, agent_slug: str | None = None, *, sandbox: str | None = None,
                      app: str | None = None, deadline: float | None = None) -> CatalogResult:
        """The agent's catalog now. ``agent_slug=None`` resolves a virtual agent that takes every
        user_mcp tool ("what would an agent see"). ``app`` keeps one namespace's tools (names
        stay those of the full catalog). ``deadline`` caps every source's listing time.
        Concurrent calls with the same arguments share one resolution."""
        key = (agent_slug, sandbox, app, deadline)
        task = self._resolving.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._resolve(agent_slug, sandbox=sandbox, app=app, deadline=deadline))
            self._resolving[key] = task

            def done(t: asyncio.Task[CatalogResult], k: tuple[Any, ...] = key) -> None:
                if self._resolving.get(k) is t:
                    del self._resolving[k]
                if not t.cancelled():
                    t.exception()

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _resolve(self, agent_slug: str | None, *, sandbox: str | None, app: str | None,
                       deadline: float | None) -> CatalogResult:
        started = time.perf_counter()
        # Changes committed by other processes (another `serve`, the CLI) reach this process's
        # listeners first (this catalog's own entries and sessions among them).
        await self.registry.follow_changes()
        sb = self.registry.get_sandbox(sandbox)
        agent = self.registry.get_agent(agent_slug, sandbox=sb.id) if agent_slug else None
        tool_sources = agent.tool_sources if agent else ["user_mcp"]
        allowlist = agent.tool_allowlist if agent else []
        trace = ResolutionTrace(agent=agent.slug if agent else None)
        trace.allowlist_filtered_out = {"source": [], "agent": []}
        if agent is not None and agent.status != "active":
            trace.notes.append(f"agent {agent.slug} is {agent.status}: the gateway refuses its calls")

        # The active sources are listed at once. The sandbox's other rows, which only the trace
        # needs and which can be thousands, are counted and the first of each kind read (a few
        # columns: `catalog_rows`) in a worker thread meanwhile.
        if app is not None:
            self._check_app(app, await off_loop(live_namespaces, self.registry.store, sb.id), sb.name)
        active = await off_loop(self.registry.list_sources, sandbox=sb.id, status=SourceStatus.ACTIVE.value)
        listings: dict[str, _Listing] = {}
        wanted: list[SourceView] = []
        unlisted: set[str] = set()  # skipped without a listing: itemized up to MAX_SKIPPED_ITEMS per reason

        def classify(src: SourceView | IdleRow) -> None:
            if src.kind not in tool_sources:
                unlisted.add(src.id)
                listings[src.id] = self._skip(
                    src, "not_in_tool_sources",
                    f"the agent's tool_sources ({', '.join(tool_sources) or 'none'}) exclude {src.kind}")
            elif src.status != SourceStatus.ACTIVE:
                unlisted.add(src.id)
                listings[src.id] = _Listing(skipped=self.skipped_entry(src))
            elif isinstance(src, SourceView):  # (an idle row is never active)
                wanted.append(src)

        for view in active:
            classify(view)
        idle = IdleSources(counts={}, rows=[])

        async def run(src: SourceView) -> None:
            budget = src.connect_timeout if deadline is None else min(src.connect_timeout, deadline)
            listings[src.id] = await self._list_one(src, max(budget, 0.001))

        async def read_idle() -> None:
            nonlocal idle
            idle = await off_loop(idle_sources, self.registry.store, sb.id, per_group=MAX_SKIPPED_ITEMS)

        async with anyio.create_task_group() as tg:
            for view in wanted:
                tg.start_soon(run, view)
            tg.start_soon(read_idle)
        idle_rows = [r for r in idle.rows if r.id not in listings]  # (resumed between the two reads)
        for row in idle_rows:
            classify(row)
        sources: list[SourceView | IdleRow] = sorted([*active, *idle_rows], key=_sandbox_order)
        order = {s.id: i for i, s in enumerate(sources)}
        skipped_total: Counter[str] = Counter()  # per reason, itemized or not
        for (kind, status), n in idle.counts.items():
            skipped_total["not_in_tool_sources" if kind not in tool_sources else status] += n
        itemized: Counter[str] = Counter()

        candidates: list[_Candidate] = []
        extras: dict[str, list[_Candidate]] = {"resources": [], "resource_templates": [], "prompts": []}
        instructions: dict[str, str] = {}
        for src in sources:
            listing = listings[src.id]
            if listing.skipped is None:
                assert isinstance(src, SourceView)
                listing = self._hold_changed(src, listing, trace)
            if listing.skipped is not None:
                reason = listing.skipped.reason
                if isinstance(src, SourceView):  # (the idle rows are counted by `idle_sources`)
                    skipped_total[reason] += 1
                if src.id in unlisted:  # a listing that failed is always itemized
                    itemized[reason] += 1
                    if itemized[reason] > MAX_SKIPPED_ITEMS:
                        continue
                trace.sources_skipped.append(listing.skipped)
                continue
            assert isinstance(src, SourceView)
            trace.sources_resolved.append(src.id)
            if listing.cached:
                trace.cached_sources.append(src.id)
            if listing.stale:
                trace.stale_sources.append(src.id)
            offered = listing.listing or SourceListing(tools=[])
            if offered.instructions:
                instructions[src.id] = offered.instructions[:4000]
            tools = []
            for tool in offered.tools:
                if tool.task_support == "required":
                    if src.allowed_tools is not None and not matches_any(src.allowed_tools, tool.name):
                        continue  # not the agent's to have anyway: nothing left out
                    trace.tools_left_out.append({
                        "name": base_name(src.app_namespace, tool.name), "source_id": src.id,
                        "original_name": tool.name, "reason": "task_required"})
                else:
                    tools.append(tool)
            if src.allowed_tools is not None:
                missing = unmatched(src.allowed_tools, (t.name for t in tools))
                if missing:
                    trace.source_allowlist_missing_entries[src.id] = missing
                kept = [t for t in tools if matches_any(src.allowed_tools, t.name)]
                trace.allowlist_filtered_out["source"].extend(sorted(
                    base_name(src.app_namespace, t.name) for t in tools
                    if not matches_any(src.allowed_tools, t.name)))
                tools = kept
            candidates.extend(_Candidate(src, t, order[src.id]) for t in tools)
            for kind in extras:
                items = getattr(offered, kind)
                if src.allowed_tools is not None:
                    items = [i for i in items if matches_any(src.allowed_tools, i.name)]
                extras[kind].extend(_Candidate(src, i, order[src.id]) for i in items)

        self._count_skipped(trace, skipped_total)
        named = _unique_names(candidates, trace)
        named.sort(key=lambda it: (it[1].order, it[0]))
        if allowlist:
            trace.allowlist_missing_entries = unmatched(allowlist, (n for n, _ in named))
            trace.allowlist_filtered_out["agent"] = [n for n, _ in named if not matches_any(allowlist, n)]
            named = [(n, c) for n, c in named if matches_any(allowlist, n)]
            trace.tools_left_out = [t for t in trace.tools_left_out if matches_any(allowlist, t["name"])]

        entries = [self._entry(name, cand, trace) for name, cand in named]
        trace.tool_names_advertised = [e.name for e in entries]
        if app is not None:
            entries = [e for e in entries if e.app.lower() == app.lower()]
            trace.notes.append(f"showing app {app} only ({len(entries)} of "
                               f"{len(trace.tool_names_advertised)} tools)")
        resources, templates, prompts = (self._extras(extras[k], allowlist, app, trace, k)
                                         for k in ("resources", "resource_templates", "prompts"))
        trace.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        return CatalogResult(
            agent=agent.slug if agent else None, sandbox_id=sb.id, tools=entries, trace=trace,
            resources=[CatalogResource(name=n, source_id=c.source.id, original_name=c.tool.name,
                                       uri=c.tool.definition.get("uri"), definition=c.tool.definition | {"name": n})
                       for n, c in resources],
            resource_templates=[CatalogResource(name=n, source_id=c.source.id, original_name=c.tool.name,
                                                uri_template=c.tool.definition.get("uriTemplate"),
                                                definition=c.tool.definition | {"name": n})
                                for n, c in templates],
            prompts=[CatalogPrompt(name=n, source_id=c.source.id, original_name=c.tool.name,
                                   definition=c.tool.definition | {"name": n}) for n, c in prompts],
            instructions=instructions)

    @staticmethod
    def _count_skipped(trace: ResolutionTrace, total: Counter[str]) -> None:
        """Every skipped source counted per reason; a note for each reason not fully itemized."""
        trace.sources_skipped_by_reason = dict(sorted(total.items()))
        shown = Counter(s.reason for s in trace.sources_skipped)
        for reason, n in trace.sources_skipped_by_reason.items():
            if n > shown[reason]:
                trace.sources_skipped_omitted += n - shown[reason]
                trace.notes.append(f"{n - shown[reason]:,} more {reason} sources skipped, not itemized "
                                   f"({n:,} {reason} in all)")

    def _hold_changed(self, src: SourceView, listing: _Listing, trace: ResolutionTrace) -> _Listing:
        """The listing without the tools whose definition differs from its pin (named in
        ``trace.tools_held`` with the diff); fails closed if the pins cannot be read."""
        offered = listing.listing
        if offered is None or not src.pin_tools:
            return listing
        try:
            held = self.registry.pins.observe(src, offered.tools)
        except Exception:
            log.exception("tool pins of %s could not be checked", src.id)
            return self._skip(src, "pins_unavailable", "its tool pins could not be read; its tools are held")
        if not held:
            return listing
        for tool in offered.tools:
            if tool.name in held:
                trace.tools_held.append(held[tool.name].model_copy(
                    update={"name": base_name(src.app_namespace, tool.name)}))
        trace.notes.append(f"{src.name} ({src.id}): {len(held)} tool(s) held until approved "
                           f"(their definitions changed since approval, or they are new): "
                           f"concierge source user-mcp approve {src.id}")
        kept = dataclasses.replace(offered, tools=[t for t in offered.tools if t.name not in held])
        return dataclasses.replace(listing, listing=kept)

    @staticmethod
    def _extras(candidates: list[_Candidate], allowlist: list[str], app: str | None, trace: ResolutionTrace,
                kind: str) -> list[tuple[str, _Candidate]]:
        """Resources / templates / prompts: the tools' namespacing (names unique per kind, the
        renames in the trace tagged with the kind), the agent allowlist, the app filter."""
        scratch = ResolutionTrace()
        named = _unique_names(candidates, scratch)
        for item in scratch.renamed:
            trace.renamed.append(item | {"kind": kind})
        for item in scratch.collisions:
            trace.collisions.append(item | {"kind": kind})
        named.sort(key=lambda it: (it[1].order, it[0]))
        if allowlist:
            trace.allowlist_filtered_out["agent"].extend(n for n, _ in named if not matches_any(allowlist, n))
            named = [(n, c) for n, c in named if matches_any(allowlist, n)]
        if app is not None:
            named = [(n, c) for n, c in named if c.source.app_namespace.lower() == app.lower()]
        return named

    @staticmethod
    def _check_app(app: str, live: list[str], sandbox_name: str) -> None:
        """``live``: the namespaces of the sandbox's sources that are not disconnected."""
        if not any(ns.lower() == app.lower() for ns in live):
            names = sorted(live)
            known = ", ".join(names[:MAX_SKIPPED_ITEMS]) or "none"
            if len(names) > MAX_SKIPPED_ITEMS:
                known += f" and {len(names) - MAX_SKIPPED_ITEMS:,} more"
            raise NotFound(f"no source with app_namespace {app!r} in sandbox {sandbox_name!r} "
                           f"(namespaces: {known})")

    @staticmethod
    def _entry(name: str, cand: _Candidate, trace: ResolutionTrace) -> CatalogTool:
        tool: ToolInfo = cand.tool
        description = tool.description or tool.title or ""
        if len(description) > MAX_DESCRIPTION:
            description = description[:MAX_DESCRIPTION - 1].rstrip() + "…"
        schema: dict[str, Any] = tool.input_schema
        if len(json.dumps(schema, default=str)) > MAX_SCHEMA_CHARS:
            schema = dict(DEFAULT_INPUT_SCHEMA)
            trace.notes.append(f"{name}: input schema over {MAX_SCHEMA_CHARS} characters replaced "
                               "by an empty object schema")
        definition = dict(tool.definition) | {"name": name, "inputSchema": schema}
        if tool.description or "description" in definition:
            definition["description"] = tool.description
        if "title" in definition:
            definition["title"] = tool.title
        return CatalogTool(name=name, app=cand.source.app_namespace, source_id=cand.source.id,
                           source_name=cand.source.name, original_name=tool.name,
                           description=description, input_schema=schema, title=tool.title,
                           definition=definition)
