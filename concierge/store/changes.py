"""The change feed: a version per subject and a sequence per scope, so every instance sees
what any instance changed.

`ChangeFeed.bump` runs inside the transaction that makes the change (it commits or rolls back
with it) and gives the subject a new version and the scope's next sequence number. The
scope's head row is locked from the bump to the commit, so sequence numbers are handed out in
commit order: a reader that has seen number 7 has seen every change numbered below it, and
``since(cursor)`` never skips a change. Bump last in a transaction (the head row serializes
the scope's writers while they hold it).

Readers either compare versions (``version``/``versions``: has this source changed since I
cached it?) or follow the feed (``since`` / ``watch``). On PostgreSQL a bump also sends a
``NOTIFY`` on commit, which wakes `watch` at once; on SQLite `watch` polls. Either way the
feed in the database is the truth: a lost notification only delays a reader until its next
poll.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio

from concierge.store._base import Connection, Database

__all__ = ["BUMP_HEAD", "BUMP_VERSION", "CHANNEL", "Change", "ChangeFeed", "HEAD", "SINCE"]

CHANNEL = "concierge_changes"

# The statements the registry's sync repository (`concierge.registry.change_rows`) runs too.
BUMP_HEAD = ("INSERT INTO change_heads (scope, seq) VALUES ($1, 1)"
             " ON CONFLICT (scope) DO UPDATE SET seq = change_heads.seq + 1 RETURNING seq")
BUMP_VERSION = ("INSERT INTO change_versions (scope, subject, version, seq, action) VALUES ($1, $2, 1, $3, $4)"
                " ON CONFLICT (scope, subject) DO UPDATE SET version = change_versions.version + 1,"
                " seq = excluded.seq, action = excluded.action RETURNING version")
HEAD = "SELECT seq FROM change_heads WHERE scope = $1"
SINCE = ("SELECT subject, version, seq, action FROM change_versions WHERE scope = $1 AND seq > $2"
         " ORDER BY seq LIMIT $3")


@dataclass(frozen=True)
class Change:
    scope: str
    subject: str
    version: int
    seq: int
    action: str


class ChangeFeed:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def bump(self, cx: Connection, scope: str, subject: str, action: str = "change") -> Change:
        """Record a change of ``subject`` in the caller's transaction."""
        seq = await cx.fetchval(BUMP_HEAD, scope)
        version = await cx.fetchval(BUMP_VERSION, scope, subject, seq, action)
        await cx.notify(CHANNEL, f"{scope}:{seq}")
        return Change(scope, subject, int(version), int(seq), action)

    async def head(self, scope: str) -> int:
        """The scope's last sequence number (0: nothing changed yet): a cursor for `since`."""
        return int(await self._db.fetchval(HEAD, scope) or 0)

    async def version(self, scope: str, subject: str) -> int:
        return int(await self._db.fetchval(
            "SELECT version FROM change_versions WHERE scope = $1 AND subject = $2", scope, subject) or 0)

    async def versions(self, scope: str, subjects: Sequence[str]) -> dict[str, int]:
        """subject → version for each of ``subjects`` (0 for one never changed)."""
        out = dict.fromkeys(subjects, 0)
        for start in range(0, len(subjects), 500):
            chunk = list(subjects[start:start + 500])
            marks = ", ".join(f"${i}" for i in range(2, len(chunk) + 2))
            for r in await self._db.fetch(
                    f"SELECT subject, version FROM change_versions WHERE scope = $1 AND subject IN ({marks})",
                    scope, *chunk):
                out[r["subject"]] = int(r["version"])
        return out

    async def since(self, scope: str, cursor: int, *, limit: int = 1000) -> tuple[list[Change], int]:
        """Changes numbered after ``cursor`` (each subject once, at its latest), oldest first,
        and the cursor to pass next time."""
        rows = await self._db.fetch(SINCE, scope, cursor, int(limit))
        changes = [Change(scope, r["subject"], int(r["version"]), int(r["seq"]), r["action"]) for r in rows]
        return changes, (changes[-1].seq if changes else cursor)

    async def watch(self, scope: str, cursor: int, *, poll_interval: float = 1.0) -> AsyncIterator[list[Change]]:
        """Yield each batch of changes after ``cursor``, as they commit, forever. Woken by
        NOTIFY on PostgreSQL; at least every ``poll_interval`` seconds either way."""
        async with self._db.listen(CHANNEL) as notes:
            while True:
                changes, cursor = await self.since(scope, cursor)
                if changes:
                    yield changes
                    continue
                with anyio.move_on_after(poll_interval):
                    if notes is None:
                        await anyio.sleep(poll_interval)
                    else:
                        async for payload in notes:
                            if payload.partition(":")[0] == scope:
                                break
