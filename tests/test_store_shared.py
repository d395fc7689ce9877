"""Shared-state primitives on both engines: rate buckets, the change feed, key-value entries
(compare-and-set, expiry, sealing), conversations across instances, webhook replay
de-duplication, API keys, the audit log and keyset pages."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest

from concierge.errors import RateLimited
from concierge.errors import VaultError
from concierge.store import Database, InvalidCursor, StaleVersion, open_database
from concierge.store.api_keys import ApiKeyRows
from concierge.store.audit import AuditLog
from concierge.store.buckets import RateBuckets
from concierge.store.changes import ChangeFeed
from concierge.store.conversations import Conversations
from concierge.store.kv import AesGcmSealer, KeyValue
from concierge.store.sources import SourceRows
from concierge.store.webhook_events import WebhookEvents
from tests.pg_fixtures import add_sandbox, db_url, pg_server, pg_url, source_row  # noqa: F401  (fixtures)

pytestmark = pytest.mark.anyio

KEY = bytes(range(32))


class Clock:
    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(db_url: str):  # type: ignore[no-untyped-def]
    database = await open_database(db_url)
    try:
        yield database
    finally:
        await database.aclose()


# -- rate buckets -------------------------------------------------------------------------------

async def test_bucket_bursts_to_its_cap_then_refills_at_its_rate(db: Database) -> None:
    clock = Clock()
    buckets = RateBuckets(db, clock=clock)
    assert [await buckets.take("tool_calls", "ds_1", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await buckets.take("tool_calls", "ds_1", 3) == pytest.approx(20.0)  # one token per 20 s
    clock.now += 10
    assert await buckets.take("tool_calls", "ds_1", 3) == pytest.approx(10.0)
    clock.now += 10
    assert await buckets.take("tool_calls", "ds_1", 3) == 0.0
    clock.now += 3600  # a long pause refills to the cap, never past it
    assert [await buckets.take("tool_calls", "ds_1", 3) for _ in range(4)][-1] > 0
    assert await buckets.take("webhooks", "ds_1", 3) == 0.0  # another kind, another bucket


async def test_bucket_ignores_a_clock_that_steps_back(db: Database) -> None:
    clock = Clock()
    buckets = RateBuckets(db, clock=clock)
    assert await buckets.take("tool_calls", "ds_1", 1) == 0.0
    clock.now -= 120  # another host whose clock lags
    assert await buckets.take("tool_calls", "ds_1", 1) > 0
    clock.now += 120 + 60
    assert await buckets.take("tool_calls", "ds_1", 1) == 0.0


async def test_a_changed_cap_or_an_eviction_starts_afresh(db: Database) -> None:
    buckets = RateBuckets(db, clock=Clock())
    for _ in range(2):
        await buckets.take("tool_calls", "ds_1", 2)
    assert await buckets.take("tool_calls", "ds_1", 2) > 0
    assert await buckets.take("tool_calls", "ds_1", 5) == 0.0  # new cap, new bucket
    assert await buckets.tokens("tool_calls", "ds_1") == pytest.approx(4.0)
    await buckets.take("webhooks", "ds_1", 1)
    assert await buckets.evict("ds_1") == 2  # both kinds, every process sees it
    assert await buckets.tokens("tool_calls", "ds_1") is None


async def test_acquire_raises_rate_limited_with_when_to_retry(db: Database) -> None:
    buckets = RateBuckets(db, clock=Clock())
    await buckets.acquire("tool_calls", "ds_1", 60, label="Demo")
    for _ in range(59):
        await buckets.acquire("tool_calls", "ds_1", 60)
    with pytest.raises(RateLimited) as caught:
        await buckets.acquire("tool_calls", "ds_1", 60, label="Demo")
    assert caught.value.retry_after == pytest.approx(1.0)
    assert "Demo (ds_1): 60 calls per minute" in caught.value.detail


async def test_concurrent_takers_in_one_process_never_exceed_the_cap(db: Database) -> None:
    buckets = RateBuckets(db, clock=Clock())
    taken: list[float] = []

    async def take() -> None:
        taken.append(await buckets.take("tool_calls", "ds_1", 7))

    async with anyio.create_task_group() as tg:
        for _ in range(30):
            tg.start_soon(take)
    assert taken.count(0.0) == 7


# -- the change feed ------------------------------------------------------------------------------

async def test_change_feed_bumps_with_the_transaction_only(db: Database) -> None:
    feed = ChangeFeed(db)
    async with db.transaction() as cx:
        await feed.bump(cx, "source", "ds_1", "register")
    with pytest.raises(RuntimeError):
        async with db.transaction() as cx:
            await feed.bump(cx, "source", "ds_1", "update")
            raise RuntimeError("rolled back")
    assert await feed.version("source", "ds_1") == 1
    assert await feed.head("source") == 1
    async with db.transaction() as cx:
        await feed.bump(cx, "source", "ds_2", "register")
        await feed.bump(cx, "source", "ds_1", "revoke")
    changes, cursor = await feed.since("source", 1)
    assert [(c.subject, c.version, c.action) for c in changes] == [("ds_2", 1, "register"), ("ds_1", 2, "revoke")]
    assert cursor == 3 and (await feed.since("source", cursor)) == ([], 3)
    assert await feed.versions("source", ["ds_1", "ds_2", "ds_9"]) == {"ds_1": 2, "ds_2": 1, "ds_9": 0}
    assert await feed.head("agent") == 0


async def test_a_follower_of_the_feed_misses_no_concurrent_change(db_url: str) -> None:
    """Writers on one instance, a follower on another: every change is seen, in order."""
    writer, follower = await open_database(db_url), await open_database(db_url)
    feed, follow = ChangeFeed(writer), ChangeFeed(follower)
    seen: dict[str, int] = {}
    try:
        async def bump(i: int) -> None:
            for _ in range(3):
                async with writer.transaction() as cx:
                    await feed.bump(cx, "source", f"ds_{i}")

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(bump, i)
            cursor = 0
            while cursor < 30:
                changes, new = await follow.since("source", cursor)
                assert all(c.seq > cursor for c in changes)
                seen.update({c.subject: c.version for c in changes})
                cursor = new
                await anyio.sleep(0.005)
        assert seen == {f"ds_{i}": 3 for i in range(10)}
    finally:
        await writer.aclose()
        await follower.aclose()


async def test_watch_wakes_when_another_instance_commits(db_url: str) -> None:
    """PostgreSQL wakes the watcher by NOTIFY (a 60 s poll interval would time the test out);
    SQLite polls."""
    writer, watcher = await open_database(db_url), await open_database(db_url)
    poll = 60.0 if watcher.dialect == "postgresql" else 0.05
    try:
        got: list[str] = []

        async def watch() -> None:
            async for batch in ChangeFeed(watcher).watch("source", 0, poll_interval=poll):
                got.extend(c.subject for c in batch)
                if "ds_2" in got:
                    return

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await anyio.sleep(0.3)  # the watcher is waiting now
                async with writer.transaction() as cx:
                    await ChangeFeed(writer).bump(cx, "agent", "ag_1")  # another scope: ignored
                    await ChangeFeed(writer).bump(cx, "source", "ds_1")
                await anyio.sleep(0.1)
                async with writer.transaction() as cx:
                    await ChangeFeed(writer).bump(cx, "source", "ds_2")
        assert got == ["ds_1", "ds_2"]
    finally:
        await writer.aclose()
        await watcher.aclose()


# -- key-value --------------------------------------------------------------------------------

async def test_kv_compare_and_set(db: Database) -> None:
    kv = KeyValue(db, "conversations")
    assert await kv.put("c1", b"one", expected_version=None) == 1
    with pytest.raises(StaleVersion) as caught:
        await kv.put("c1", b"again", expected_version=None)
    assert caught.value.current == 1 and "expected absent" in caught.value.detail
    assert await kv.put("c1", b"two", expected_version=1) == 2
    with pytest.raises(StaleVersion):
        await kv.put("c1", b"lost update", expected_version=1)
    entry = await kv.get("c1")
    assert entry is not None and (entry.value, entry.version) == (b"two", 2)
    assert await kv.put("c1", b"three") == 3  # ANY
    assert not await kv.delete("c1", expected_version=2)
    assert await kv.delete("c1", expected_version=3)
    assert await kv.get("c1") is None and not await kv.delete("c1")


async def test_kv_entries_expire(db: Database) -> None:
    clock = Clock()
    kv = KeyValue(db, "pending", clock=clock)
    await kv.put("p1", b"x", ttl=30)
    await kv.put("p2", b"y")
    clock.now += 31
    assert await kv.get("p1") is None
    assert (await kv.keys()).items == ["p2"]
    with pytest.raises(StaleVersion):
        await kv.put("p1", b"z", expected_version=1)  # an expired entry cannot be replaced...
    assert await kv.put("p1", b"z", expected_version=None) == 1  # ...only created again
    clock.now += 1
    await kv.put("p3", b"w", ttl=1)
    clock.now += 2
    assert await kv.purge_expired() == 1


async def test_kv_keys_page_by_prefix(db: Database) -> None:
    kv = KeyValue(db, "n")
    for i in range(25):
        await kv.put(f"a/{i:02d}", b"v")
    await kv.put("b/0", b"v")
    first = await kv.keys(prefix="a/", limit=10)
    second = await kv.keys(prefix="a/", limit=10, cursor=first.next_cursor)
    third = await kv.keys(prefix="a/", limit=10, cursor=second.next_cursor)
    assert first.items + second.items + third.items == [f"a/{i:02d}" for i in range(25)]
    assert third.next_cursor is None
    assert (await KeyValue(db, "other").keys()).items == []


async def _raw_bytes(db: Database, db_url: str) -> bytes:
    if db.dialect == "sqlite":
        path = Path(db_url.removeprefix("sqlite://"))
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    rows = await db.fetch("SELECT namespace, key, value FROM kv")
    return b"".join(r["namespace"].encode() + r["key"].encode() + bytes(r["value"]) for r in rows)


async def test_sealed_values_are_never_stored_in_clear(db: Database, db_url: str) -> None:
    canary = "test-token-" + os.urandom(8).hex()
    sealed = KeyValue(db, "pending_secrets", sealer=AesGcmSealer(KEY))
    await sealed.put("sess_1/sec_1", canary.encode())
    assert (await sealed.get("sess_1/sec_1")).value == canary.encode()  # type: ignore[union-attr]
    assert canary.encode() not in await _raw_bytes(db, db_url)
    with pytest.raises(VaultError, match="cannot be opened"):
        await KeyValue(db, "pending_secrets", sealer=AesGcmSealer(bytes(32))).get("sess_1/sec_1")
    # a sealed value moved under another key does not open (the key is associated data)
    row = await db.fetchrow("SELECT value FROM kv WHERE key = 'sess_1/sec_1'")
    await db.execute("INSERT INTO kv (namespace, key, value, version, updated_at) VALUES ($1, $2, $3, 1, 'x')",
                     "pending_secrets", "sess_2/sec_1", bytes(row["value"]))  # type: ignore[index]
    with pytest.raises(VaultError):
        await sealed.get("sess_2/sec_1")


# -- conversations across instances ---------------------------------------------------------------

async def test_a_conversation_started_on_one_instance_is_continued_on_another(db_url: str) -> None:
    a, b = await open_database(db_url), await open_database(db_url)
    on_a, on_b = Conversations(a, sealer=AesGcmSealer(KEY)), Conversations(b, sealer=AesGcmSealer(KEY))
    canary = "test-token-" + os.urandom(8).hex()
    try:
        await on_a.create("sess_1", sandbox_id="sb_1", key_id="key_1",
                          state={"pending": {"id": "conf_1", "tool": "register_source"}})
        await on_a.put_secret("sess_1", "sec_1", canary)
        await on_a.append_events("sess_1", "run_1", [("run_started", {}), ("confirmation_required", {"id": "conf_1"})])
        loaded = await on_b.get("sess_1")
        assert loaded is not None and loaded["state"]["pending"]["id"] == "conf_1" and loaded["version"] == 1
        assert await on_b.get_secret("sess_1", "sec_1") == canary
        version = await on_b.save("sess_1", {"pending": None}, expected_version=1)
        with pytest.raises(StaleVersion) as caught:  # A's copy is stale: no silent overwrite
            await on_a.save("sess_1", {"pending": {"id": "conf_1"}}, expected_version=1)
        assert caught.value.current == version == 2
        await on_b.append_events("sess_1", "run_2", [("agent_finish", {"stop_reason": "done"})])
        first = await on_a.events("sess_1", limit=2)
        rest = await on_a.events("sess_1", cursor=first.next_cursor)
        assert [e["type"] for e in first.items + rest.items] == ["run_started", "confirmation_required", "agent_finish"]
        await on_a.delete("sess_1")
        assert await on_b.get("sess_1") is None and await on_b.get_secret("sess_1", "sec_1") is None
        assert (await on_b.events("sess_1")).items == []
    finally:
        await a.aclose()
        await b.aclose()


# -- webhooks, keys, audit, pages ---------------------------------------------------------------------

async def test_a_replayed_webhook_event_is_stored_once_even_when_concurrent(db_url: str) -> None:
    a, b = await open_database(db_url), await open_database(db_url)
    stored: list[bool] = []
    try:
        async def deliver(db: Database) -> None:
            stored.append(await WebhookEvents(db).record("ds_1", "evt_1", {"n": 1}, content_type="application/json"))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(deliver, a if i % 2 else b)
        assert stored.count(True) == 1
        assert await WebhookEvents(b).seen("ds_1", "evt_1") and not await WebhookEvents(b).seen("ds_2", "evt_1")
        assert await WebhookEvents(a).record("ds_2", "evt_1", "text body")  # the id is per source
        page = await WebhookEvents(a).page("ds_1")
        assert [(e["event_id"], e["payload"]) for e in page.items] == [("evt_1", {"n": 1})]
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_key_revoked_on_one_instance_is_refused_on_every_other(db_url: str) -> None:
    a, b = await open_database(db_url), await open_database(db_url)
    try:
        for i in range(5):
            await ApiKeyRows(a).create({"id": f"key_{i}", "hash": f"h{i}", "prefix": "ck_abc", "sandbox_id": None,
                                        "role": "owner", "label": None, "created_at": f"2026-01-0{i + 1}",
                                        "last_used_at": None, "revoked_at": None})
        assert (await ApiKeyRows(b).live_by_hash("h3"))["id"] == "key_3"  # type: ignore[index]
        assert await ApiKeyRows(a).revoke("key_3", "2026-02-01") and not await ApiKeyRows(b).revoke("key_3", "x")
        assert await ApiKeyRows(b).live_by_hash("h3") is None
        assert await ApiKeyRows(b).active_count() == 4
        first = await ApiKeyRows(b).page(limit=3)
        second = await ApiKeyRows(b).page(limit=3, cursor=first.next_cursor)
        assert [k["id"] for k in first.items + second.items] == [f"key_{i}" for i in range(5)]
        live = await ApiKeyRows(b).page(include_revoked=False)
        assert "key_3" not in [k["id"] for k in live.items]
    finally:
        await a.aclose()
        await b.aclose()


async def test_audit_log_pages_newest_first(db: Database) -> None:
    log = AuditLog(db)
    for i in range(12):
        async with db.transaction() as cx:
            await log.append(cx, actor="local", action="source.update", object_type="source", object_id=f"ds_{i}",
                             sandbox_id="sb_1" if i % 2 else "sb_2", before={"n": i}, after=None)
    first = await log.page(limit=5)
    assert [e["object_id"] for e in first.items] == [f"ds_{i}" for i in (11, 10, 9, 8, 7)]
    assert first.items[0]["before"] == {"n": 11} and first.items[0]["after"] is None
    ids: list[str] = []
    cursor = None
    while True:
        page = await log.page(sandbox_id="sb_1", limit=4, cursor=cursor)
        ids += [e["object_id"] for e in page.items]
        if not (cursor := page.next_cursor):
            break
    assert ids == [f"ds_{i}" for i in (11, 9, 7, 5, 3, 1)]
    with pytest.raises(InvalidCursor) as caught:
        await log.page(cursor=(await SourceRows(db).page(limit=1)).next_cursor or "bm90IGEgY3Vyc29y")
    assert caught.value.field == "cursor"


async def test_source_pages_cover_every_source_once_even_with_equal_timestamps(db: Database) -> None:
    await add_sandbox(db)
    rows = SourceRows(db)
    async with db.transaction() as cx:
        for i in range(25):  # created in the same millisecond: the id breaks the tie
            await rows.insert(cx, source_row(f"ds_{i:02d}", "sb_1", f"ns{i}",
                                             status="disconnected" if i % 5 == 0 else "active"))
    seen: list[str] = []
    cursor = None
    while True:
        page = await rows.page(sandbox_id="sb_1", limit=10, cursor=cursor)
        seen += [r["id"] for r in page.items]
        assert all(r["ingest_tool_calls"] == [] for r in page.items)  # JSON decoded
        if not (cursor := page.next_cursor):
            break
    assert seen == [f"ds_{i:02d}" for i in range(25)]
    live = await rows.page(include_disconnected=False, limit=100)
    assert len(live.items) == 20 and live.next_cursor is None
    assert len((await rows.page(status="disconnected")).items) == 5
    with pytest.raises(InvalidCursor, match="another list"):
        await rows.page(cursor=(await AuditLog(db).page(limit=1)).next_cursor or _audit_cursor())


def _audit_cursor() -> str:
    from concierge.store.pages import encode_cursor

    return encode_cursor("audit", [1])
