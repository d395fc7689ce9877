"""Pages of every list: the registry's keyset pages, the HTTP list routes ({items, next_cursor,
total, more} with limit/cursor), the CLI's --limit/--cursor, and a list served off the event
loop (``/healthz`` answers while a list is held in flight)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from concierge.backend import LocalBackend
from concierge.errors import InvalidCursor, ValidationFailed
from concierge.ids import new_id
from concierge.registry import Registry
from concierge.registry.store import Store, now_iso
from concierge.server import build_app
from tests.cli_fixtures import run_cli
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import RunningServer

SB = "/api/v1/storage/sandboxes"


def add_sources(reg: Registry, n: int, *, sandbox: str | None = None, status: str = "active",
                stamp: str | None = None) -> list[str]:
    """``n`` source rows written straight through the registry's store (no health check);
    ``stamp`` gives them all one created_at, so only the id orders them."""
    sb = reg.get_sandbox(sandbox)
    ids = []
    with reg.store.transaction() as cx:
        for i in range(n):
            sid, now = new_id("ds"), stamp or now_iso()
            Store.insert(cx, "sources", {
                "id": sid, "sandbox_id": sb.id, "kind": "user_mcp", "name": f"src {sid[-6:]}",
                "base_url": "http://127.0.0.1:9/mcp", "transport": "auto", "auth_kind": "none",
                "app_namespace": f"ns{sid[-10:].lower()}", "ingest_tool_calls": [],
                "rate_cap_per_minute": 60, "webhook_rate_cap_per_minute": 60, "connect_timeout": 5.0,
                "call_timeout": 30.0, "status": status, "created_at": now, "updated_at": now})
            ids.append(sid)
    return ids


def walk(fetch: Any, **kwargs: Any) -> tuple[list[Any], list[Any]]:
    """Every page of a list: (all items, every page)."""
    items, pages, cursor = [], [], None
    while True:
        page = fetch(**kwargs, cursor=cursor)
        pages.append(page)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items, pages


def test_pages_walk_every_source_once_in_order_and_say_how_many_remain(reg: Registry) -> None:
    ids = add_sources(reg, 23) + add_sources(reg, 7, stamp="2020-01-01T00:00:00.000Z")  # ties on created_at
    items, pages = walk(reg.page_sources, limit=5)
    assert len(pages) == 6 and [len(p.items) for p in pages] == [5] * 6
    assert sorted(s.id for s in items) == sorted(ids) and len({s.id for s in items}) == 30
    assert [(s.created_at, s.id) for s in items] == sorted((s.created_at, s.id) for s in items)
    assert [p.more for p in pages] == [25, 20, 15, 10, 5, 0] and {p.total for p in pages} == {30}
    assert pages[-1].next_cursor is None
    assert [s.id for s in reg.list_sources()] == [s.id for s in items]  # the unpaged path agrees


def test_a_source_added_meanwhile_is_neither_skipped_nor_repeated(reg: Registry) -> None:
    add_sources(reg, 10)
    first = reg.page_sources(limit=4)
    late = add_sources(reg, 1)
    rest, _ = walk(reg.page_sources, limit=4)
    seen = [s.id for s in first.items]
    cursor = first.next_cursor
    while cursor:
        page = reg.page_sources(limit=4, cursor=cursor)
        seen += [s.id for s in page.items]
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 11 and late[0] in seen
    assert [s.id for s in rest] == seen


def test_filters_hold_across_pages(reg: Registry) -> None:
    reg.create_sandbox("other")
    add_sources(reg, 6)
    add_sources(reg, 4, status="paused")
    add_sources(reg, 5, sandbox="other")
    paused, _ = walk(reg.page_sources, status="paused", limit=3)
    assert len(paused) == 4 and {s.status.value for s in paused} == {"paused"}
    mine, pages = walk(reg.page_sources, sandbox="default", limit=4)
    assert len(mine) == 10 and pages[0].total == 10
    everything, _ = walk(reg.page_sources, limit=1000)
    assert len(everything) == 15


def test_agents_sandboxes_and_audit_are_paged_too(reg: Registry) -> None:
    for i in range(7):
        reg.create_agent({"slug": f"agent-{i}"})
        reg.create_sandbox(f"team-{i}")
    agents, pages = walk(reg.page_agents, limit=3)
    assert sorted(a.slug for a in agents) == [f"agent-{i}" for i in range(7)] and pages[0].more == 4
    assert [(a.created_at, a.id) for a in agents] == sorted((a.created_at, a.id) for a in agents)
    sandboxes, _ = walk(reg.page_sandboxes, limit=2)
    assert sandboxes[0].name == "default" and len(sandboxes) == 8
    audit, pages = walk(reg.page_audit, limit=4)
    assert [e.id for e in audit] == sorted((e.id for e in audit), reverse=True)  # newest first
    assert len(audit) == pages[0].total == 15


def test_bad_limits_and_cursors_are_refused_naming_the_parameter(reg: Registry) -> None:
    add_sources(reg, 3)
    reg.create_agent({"slug": "one"})  # two audit entries: a page of one has a cursor
    for bad in (0, 1001, -1, "many", 2.5, True):
        with pytest.raises(ValidationFailed) as caught:
            reg.page_sources(limit=bad)  # type: ignore[arg-type]
        assert caught.value.field == "limit"
    agents_cursor = reg.page_audit(limit=1).next_cursor
    sources_cursor = reg.page_sources(limit=1).next_cursor
    assert agents_cursor and sources_cursor
    for bad in ("0", "not-a-cursor", agents_cursor, sources_cursor[:-3], sources_cursor + "x"):
        with pytest.raises(InvalidCursor) as caught:
            reg.page_sources(limit=1, cursor=bad)
        assert caught.value.field == "cursor"


# -- HTTP ---------------------------------------------------------------------------------------

class HeldPages:
    """Holds every source page until released (a list that takes as long as the test wants)."""

    def __init__(self, reg: Registry) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        inner = reg.page_sources

        def held(**kwargs: Any) -> Any:
            self.arrived.set()
            assert self.release.wait(30), "never released"
            return inner(**kwargs)

        reg.page_sources = held  # type: ignore[method-assign]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Registry, HeldPages]]:
    home = tmp_path / "served"
    home.mkdir()
    (home / "master.key").write_text(TEST_MASTER_KEY + "\n")
    reg = Registry.open(home)
    held = HeldPages(reg)
    held.release.set()
    server = RunningServer(None, host="127.0.0.1", port=None, factory=lambda: build_app(
        backend_factory=lambda: LocalBackend(reg), allow_anonymous_loopback=True))
    server.start()
    try:
        yield server.url_base, reg, held
    finally:
        held.release.set()
        server.stop()
        reg.close()


def test_http_lists_are_pages_that_walk_to_the_end(served: tuple[str, Registry, HeldPages]) -> None:
    url, reg, _ = served
    add_sources(reg, 12)
    reg.create_agent({"slug": "one"})
    with httpx2.Client(base_url=url, timeout=10) as c:
        seen, cursor, bodies = [], None, []
        while True:
            body = c.get(f"{SB}/default/sources", params={"limit": 5, **({"cursor": cursor} if cursor else {})}).json()
            bodies.append(body)
            seen += [s["id"] for s in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        ids = [s.id for s in reg.list_sources()]  # ids made in one millisecond sort by id
        assert seen == ids and [b["more"] for b in bodies] == [7, 2, 0] and bodies[0]["total"] == 12
        everywhere = c.get("/api/v1/storage/sources", params={"limit": 1000}).json()
        assert [s["id"] for s in everywhere["items"]] == ids and everywhere["next_cursor"] is None
        assert c.get(f"{SB}/default/sources").json()["items"][0]["id"] == ids[0]  # default limit
        for params, field in (({"limit": 0}, "limit"), ({"limit": "x"}, "limit"), ({"limit": 1001}, "limit"),
                              ({"cursor": "bogus"}, "cursor"), ({"cursor": ""}, "cursor")):
            r = c.get(f"{SB}/default/sources", params=params)
            assert r.status_code == 400 and r.json()["field"] == field, (params, r.text)
        agents_cursor = c.get(f"{SB}/default/audit", params={"limit": 1}).json()["next_cursor"]
        r = c.get(f"{SB}/default/agents", params={"cursor": agents_cursor})
        assert r.status_code == 400 and r.json()["error"] == "invalid_cursor"


def test_healthz_answers_while_a_list_is_in_flight(served: tuple[str, Registry, HeldPages]) -> None:
    """The list runs in a worker thread: held there, it leaves the event loop free."""
    url, reg, held = served
    add_sources(reg, 3)
    held.release.clear()
    result: dict[str, Any] = {}

    def list_sources() -> None:
        with httpx2.Client(base_url=url, timeout=30) as c:
            result["body"] = c.get(f"{SB}/default/sources").json()

    lister = threading.Thread(target=list_sources)
    lister.start()
    try:
        assert held.arrived.wait(10), "the list request never reached the registry"
        with httpx2.Client(base_url=url, timeout=5) as c:
            for _ in range(3):
                assert c.get("/healthz").json()["status"] == "ok"  # a blocked loop would time out here
            assert c.get("/api/v1/me").status_code == 200
        assert "body" not in result  # the list was still held all along
    finally:
        held.release.set()
        lister.join(30)
    assert len(result["body"]["items"]) == 3


# -- CLI ----------------------------------------------------------------------------------------

def test_cli_lists_take_limit_and_cursor_and_say_what_is_left(tmp_path: Path) -> None:
    home = tmp_path / "cli"
    for name in ("alpha", "beta", "gamma"):
        assert run_cli("agent", "create", name, home=home).returncode == 0
    first = run_cli("agent", "list", "--limit", "2", home=home)
    assert first.returncode == 0 and "alpha" in first.stdout and "gamma" not in first.stdout
    hint = first.stdout.strip().splitlines()[-1]
    assert hint.startswith("(2 of 3 shown) 1 more: --cursor ")
    cursor = hint.rsplit(" ", 1)[1]
    second = run_cli("agent", "list", "--limit", "2", "--cursor", cursor, home=home)
    assert second.returncode == 0 and "gamma" in second.stdout and "alpha" not in second.stdout and "--cursor" not in second.stdout
    as_json = run_cli("agent", "list", "--limit", "2", "--json", home=home)
    import json

    page = json.loads(as_json.stdout)
    assert [a["slug"] for a in page["items"]] == ["alpha", "beta"] and page["next_cursor"] == cursor
    bad = run_cli("agent", "list", "--limit", "0", home=home)
    assert bad.returncode == 1 and "--limit must be from 1 to 1000" in bad.stderr
    bad = run_cli("agent", "list", "--cursor", "nope", home=home)
    assert bad.returncode == 1 and "--cursor" in bad.stderr
    bad = run_cli("audit", "--limit", "x", home=home)
    assert bad.returncode == 2 and "--limit" in bad.stderr


# -- chat ---------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_chat_lists_a_page_says_how_many_more_and_still_finds_any_source_by_name(
        backend: LocalBackend) -> None:
    from concierge.agent.models import OfflinePlanner
    from concierge.agent.session import ConciergeSession
    from tests.agent_fixtures import collect, events_of, text_of

    reg = backend.registry
    ids = add_sources(reg, 30, stamp="2026-01-01T00:00:00.000Z")
    last = reg.get_source(sorted(ids)[-1])  # the 30th: on no chat page but the last
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send("list my sources"))
    result = events_of(events, "agent_tool_result")[0].result
    assert result["count"] == 25 and result["total"] == 30 and result["more"] == 5 and result["next_cursor"]
    answer = text_of(events)
    assert 'You have 30 sources in sandbox "default"; the first 25:' in answer
    assert "… and 5 more sources (of 30) — name the one you mean" in answer and last.name not in answer
    events = await collect(session.send(f"show {last.name}"))
    assert last.id in text_of(events), text_of(events)  # the planner looked in the whole list

    toolkit_page = await collect(session.send("list my agents"))
    assert "There are no agents here yet" in text_of(toolkit_page)
    for i in range(27):
        reg.create_agent({"slug": f"bot-{i:02d}"})
    events = await collect(session.send("list my agents"))
    assert "… and 2 more agents (of 27)" in text_of(events)


@pytest.mark.anyio
async def test_the_http_client_pages_like_the_local_backend(served: tuple[str, Registry, HeldPages]) -> None:
    from concierge.remote import RemoteBackend

    url, reg, _ = served
    add_sources(reg, 7)
    local = LocalBackend(reg)
    remote = RemoteBackend(url)
    try:
        for backend in (local, remote):
            first = await backend.page_sources(limit=3)
            second = await backend.page_sources(limit=3, cursor=first.next_cursor)
            assert (len(first.items), first.more, second.more) == (3, 4, 1)
            everything = await backend.list_sources(sandbox="default")  # the unpaged path: all pages
            assert [s.id for s in everything] == [s.id for s in reg.list_sources()]
            assert (await backend.page_agents(limit=1)).total == 0
            assert (await backend.page_sandboxes()).items[0].name == "default"
            assert (await backend.page_audit(limit=1)).total >= 1
            with pytest.raises(InvalidCursor):
                await backend.page_sources(cursor="bogus")
        assert ([s.id for s in (await remote.page_sources(limit=5)).items]
                == [s.id for s in (await local.page_sources(limit=5)).items])
    finally:
        await remote.aclose()
