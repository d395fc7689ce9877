"""The API-key list (``keys list``) and a source's webhook events (``GET …/webhook-events``)
are pages like every other list: ``{items, next_cursor, total, more}``, ``--limit/--cursor``
on the CLI, ``limit``/``cursor`` over HTTP; a cursor that is not theirs is a 400 naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from concierge.backend import LocalBackend
from concierge.errors import InvalidCursor, ValidationFailed
from concierge.registry import Registry
from concierge.registry.webhook_rows import WebhookEventRows
from concierge.server import build_app
from concierge.server.auth import KeyStore
from tests.cli_fixtures import run_cli
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import RunningServer
from tests.test_pages import add_sources, walk

SB = "/api/v1/storage/sandboxes"


def test_key_pages_walk_every_key_once_oldest_first(reg: Registry) -> None:
    keys = KeyStore(reg.store)
    made = [keys.create(role="viewer", label=f"k{i}").id for i in range(5)]
    keys.revoke(made[1])
    listed, pages = walk(keys.page, limit=2)
    assert [k.id for k in listed] == [k.id for k in keys.list()] and sorted(k.id for k in listed) == sorted(made)
    assert [len(p.items) for p in pages] == [2, 2, 1] and pages[0].total == 5 and pages[0].more == 3
    live, _ = walk(keys.page, limit=2, include_revoked=False)
    assert sorted(k.id for k in live) == sorted(set(made) - {made[1]})
    add_sources(reg, 2)
    other = reg.page_sources(limit=1).next_cursor
    assert other
    for bad in ("nope", other, pages[0].next_cursor[:-2] + "x"):  # type: ignore[index]
        with pytest.raises(InvalidCursor) as caught:
            keys.page(limit=2, cursor=bad)
        assert caught.value.field == "cursor"
    with pytest.raises(ValidationFailed) as refused:
        keys.page(limit=0)
    assert refused.value.field == "limit"


def test_cli_keys_list_takes_limit_and_cursor(tmp_path: Path) -> None:
    home = tmp_path / "keys"
    env = {"CONCIERGE_MASTER_KEY": TEST_MASTER_KEY}
    for label in ("one", "two", "three"):
        assert run_cli("keys", "create", "--label", label, home=home, env=env).returncode == 0
    first = run_cli("keys", "list", "--limit", "2", home=home, env=env)
    assert first.returncode == 0 and "one" in first.stdout and "three" not in first.stdout
    hint = first.stdout.strip().splitlines()[-1]
    assert hint.startswith("(2 of 3 shown) 1 more: --cursor ")
    cursor = hint.rsplit(" ", 1)[1]
    second = run_cli("keys", "list", "--limit", "2", "--cursor", cursor, "--json", home=home, env=env)
    page = json.loads(second.stdout)
    assert [k["label"] for k in page["items"]] == ["three"] and page["next_cursor"] is None
    assert page["total"] == 3 and page["more"] == 0
    bad = run_cli("keys", "list", "--cursor", "nope", home=home, env=env)
    assert bad.returncode == 1 and "--cursor" in bad.stderr
    bad = run_cli("keys", "list", "--limit", "0", home=home, env=env)
    assert bad.returncode == 1 and "--limit must be from 1 to 1000" in bad.stderr


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Registry]]:
    home = tmp_path / "served"
    home.mkdir()
    (home / "master.key").write_text(TEST_MASTER_KEY + "\n")
    reg = Registry.open(home)
    server = RunningServer(None, host="127.0.0.1", port=None, factory=lambda: build_app(
        backend_factory=lambda: LocalBackend(reg), allow_anonymous_loopback=True))
    server.start()
    try:
        yield server.url_base, reg
    finally:
        server.stop()
        reg.close()


def test_webhook_event_pages_walk_every_event_once_newest_first(served: tuple[str, Registry]) -> None:
    url, reg = served
    source, other = add_sources(reg, 2)
    rows = WebhookEventRows(reg.store)
    for i in range(5):
        assert rows.record(source, f"evt_{i}", {"n": i}, content_type="application/json")
    assert rows.record(other, "evt_x", "text", content_type=None)
    events = f"{SB}/default/sources/{source}/webhook-events"
    with httpx2.Client(base_url=url, timeout=10) as c:
        seen, bodies, cursor = [], [], None
        while True:
            body = c.get(events, params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            bodies.append(body)
            seen += [(e["event_id"], e["payload"]) for e in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == [(f"evt_{i}", {"n": i}) for i in reversed(range(5))]  # each once, newest first
        assert [b["more"] for b in bodies] == [3, 1, 0] and bodies[0]["total"] == 5
        assert len(c.get(events).json()["items"]) == 5  # the default limit
        sources_cursor = c.get("/api/v1/storage/sources", params={"limit": 1}).json()["next_cursor"]
        assert sources_cursor  # another list's cursor
        for params, field in (({"cursor": "bogus"}, "cursor"), ({"cursor": ""}, "cursor"),
                              ({"cursor": sources_cursor}, "cursor"), ({"limit": 0}, "limit"),
                              ({"limit": 1001}, "limit")):
            r = c.get(events, params=params)
            assert r.status_code == 400 and r.json()["field"] == field, (params, r.text)
        assert c.get(f"{SB}/default/sources/ds_nope/webhook-events").status_code == 404
