"""The light reads of the catalog and the chat: only the columns they need, bounded.

A sandbox can hold thousands of sources that a catalog will not list (paused, in error,
revoked). The trace names them, but building a full `SourceView` for each one (JSON columns
decoded, the model validated) and a trace entry per row cost more than the listing deadline
at 10,000 rows. `idle_sources` reads, per (kind, status), the number of rows and the first
``per_group`` of them (a few columns each, oldest first); the catalog itemizes that many per
reason and counts the rest.

`sources_at_url` answers the chat's "is another source already at this URL?" with indexed
reads by ``base_url`` (``sources_by_url``) instead of reading the whole sandbox.

Both are sync (the registry's `Store.query`: on SQLite the calling thread's own read-only
connection): callers on an event loop run them with `concierge.offloop.off_loop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from concierge.registry.catalog_models import SameUrl
from concierge.registry.models import SourceStatus
from concierge.registry.store import Store

__all__ = ["IdleRow", "IdleSources", "at_url_query", "idle_source_of_tool", "idle_sources", "live_namespaces",
           "sources_at_url"]

_IDLE_COLUMNS = "id, name, app_namespace, kind, status, health_error, health_error_kind, created_at"


@dataclass(frozen=True, slots=True)
class IdleRow:
    """A source the catalog will not list: what its trace entry says (attribute names are
    those of `SourceView`, so the catalog treats both alike)."""

    id: str
    name: str
    app_namespace: str
    kind: str
    status: SourceStatus
    health_error: str | None
    health_error_kind: str | None
    created_at: str


@dataclass(frozen=True)
class IdleSources:
    """The sandbox's sources that are not active: counted, and the first of each group."""

    counts: dict[tuple[str, str], int]
    """(kind, status) → how many rows."""
    rows: list[IdleRow]
    """At most ``per_group`` rows of each (kind, status), all of them sorted oldest first
    (``created_at``, ``id``: the sandbox's order)."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def idle_sources(store: Store, sandbox_id: str, *, per_group: int) -> IdleSources:
    """Two indexed reads per group (``sources_idle``): a count and the first ``per_group`` rows."""
    groups = store.query("SELECT kind, status, COUNT(*) AS n FROM sources WHERE sandbox_id = ? AND status <> ?"
                         " GROUP BY kind, status", (sandbox_id, SourceStatus.ACTIVE.value))
    counts = {(str(g["kind"]), str(g["status"])): int(g["n"]) for g in groups}
    rows: list[IdleRow] = []
    for kind, status in sorted(counts):
        for r in store.query(f"SELECT {_IDLE_COLUMNS} FROM sources WHERE sandbox_id = ? AND status = ? AND kind = ?"
                             " ORDER BY created_at, id LIMIT ?", (sandbox_id, status, kind, per_group)):
            rows.append(IdleRow(id=r["id"], name=r["name"], app_namespace=r["app_namespace"], kind=r["kind"],
                                status=SourceStatus(r["status"]), health_error=r["health_error"],
                                health_error_kind=r["health_error_kind"], created_at=r["created_at"]))
    rows.sort(key=lambda r: (r.created_at, r.id))
    return IdleSources(counts=counts, rows=rows)


def idle_source_of_tool(store: Store, sandbox_id: str, name: str) -> IdleRow | None:
    """The paused or failing source whose namespace an advertised tool ``name`` starts with
    ("acme_prod_echo": namespace acme or acme_prod), for a call of a tool the trace did not
    itemize. One read of the live-namespace index; the longest namespace wins."""
    parts = name.lower().split("_")
    candidates = ["_".join(parts[:i]) for i in range(1, len(parts))]
    if not candidates:
        return None
    marks = ", ".join("?" for _ in candidates)
    rows = store.query(f"SELECT {_IDLE_COLUMNS} FROM sources WHERE sandbox_id = ? AND lower(app_namespace) IN ({marks})"
                       " AND status <> ? AND status <> ?",
                       (sandbox_id, *candidates, SourceStatus.ACTIVE.value, SourceStatus.DISCONNECTED.value))
    if not rows:
        return None
    r = max(rows, key=lambda row: len(str(row["app_namespace"])))
    return IdleRow(id=r["id"], name=r["name"], app_namespace=r["app_namespace"], kind=r["kind"],
                   status=SourceStatus(r["status"]), health_error=r["health_error"],
                   health_error_kind=r["health_error_kind"], created_at=r["created_at"])


def live_namespaces(store: Store, sandbox_id: str) -> list[str]:
    """The app_namespace of every source of the sandbox that is not disconnected."""
    return [str(r["app_namespace"]) for r in store.query(
        "SELECT app_namespace FROM sources WHERE sandbox_id = ? AND status <> ? ORDER BY app_namespace",
        (sandbox_id, SourceStatus.DISCONNECTED.value))]


def _spellings(url: str) -> list[str]:
    """The stored forms of ``url``'s endpoint (`same_url`'s equivalence over normalized
    base_urls: lower-case scheme and host, no trailing slash, a default port given or not,
    localhost or 127.0.0.1)."""
    try:
        parts = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return []
    scheme = parts.scheme.lower()
    default = 443 if scheme == "https" else 80
    hosts = {host} | ({"127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else set())
    ports = {None, default} if port in (None, default) else {port}
    path = parts.path.rstrip("/")
    out = []
    for h in sorted(hosts):
        netloc = f"[{h}]" if ":" in h else h
        for p in sorted(ports, key=lambda p: -1 if p is None else p):
            out.append(f"{scheme}://{netloc}{'' if p is None else f':{p}'}{path}")
    return out


def _at_url_matches(url: str, dialect: str) -> list[tuple[str, list[str]]]:
    """(condition, parameters) per index search: each spelling exactly, and with any query
    string (the range ``?`` … ``@``), both `same_url` matches by construction."""
    column = 'base_url COLLATE "C"' if dialect == "postgresql" else "base_url"
    out = []
    for spelling in _spellings(url):
        out.append((f"{column} = ?", [spelling]))
        out.append((f"{column} >= ? AND {column} < ?", [spelling + "?", spelling + "@"]))
    return out


def at_url_query(sandbox_id: str, url: str, *, names: int = 5,
                 dialect: str = "sqlite") -> tuple[str, list[Any], str, list[Any]]:
    """The two statements of `sources_at_url` (the first ``names`` rows, the count): one search
    of the ``sources_by_url`` index per spelling (one OR over them all scanned the sandbox).
    On PostgreSQL the comparisons are byte-wise (``COLLATE "C"``, as that index is): a
    language collation does not keep ``?`` and ``@`` apart."""
    where = "sandbox_id = ? AND {match} AND status <> ?"
    firsts, counts, first_params, count_params = [], [], [], []
    for match, values in _at_url_matches(url, dialect):
        args = [sandbox_id, *values, SourceStatus.DISCONNECTED.value]
        firsts.append(f"SELECT * FROM (SELECT id, name, created_at FROM sources WHERE {where.format(match=match)}"
                      " ORDER BY created_at, id LIMIT ?) AS a")
        first_params += [*args, names]
        counts.append(f"(SELECT COUNT(*) FROM sources WHERE {where.format(match=match)})")
        count_params += args
    return (" UNION ALL ".join(firsts), first_params,
            f"SELECT {' + '.join(counts)} AS n" if counts else "", count_params)


def sources_at_url(store: Store, sandbox_id: str, url: str, *, names: int = 5) -> SameUrl:
    """The sandbox's sources (not disconnected) whose base_url `same_url` matches ``url``: the
    oldest ``names`` of them and how many, from the index alone (`at_url_query`)."""
    firsts, first_params, count, count_params = at_url_query(sandbox_id, url, names=names, dialect=store.dialect)
    if not firsts:
        return SameUrl(names=[], total=0)
    rows = sorted(store.query(firsts, first_params), key=lambda r: (str(r["created_at"]), str(r["id"])))
    total = store.query_one(count, count_params)
    return SameUrl(names=[(str(r["name"]), str(r["id"])) for r in rows[:names]],
                   total=int(total["n"]) if total else 0)
