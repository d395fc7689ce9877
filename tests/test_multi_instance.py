"""Three real ``concierge serve`` processes on one PostgreSQL database (issue #10): any instance
serves any request. A source registered on A is listed on B; a rate cap of 5 a minute holds
across A+B+C together; a pause or revoke on C resets or drops the buckets everywhere; a chat
started on A gets its secret on C and its confirmation on B; 20 concurrent registrations of
one namespace spread over the three have exactly one winner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.instances import Instance, concierge_cli, serve_instances
from tests.mcp_servers import RunningServer
from tests.pg_fixtures import PgServer
from tests.server_fixtures import BEARER_CANARY

SB = "/api/v1/storage/sandboxes/default"


@pytest.fixture(scope="module")
def cluster(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Instance], str, str]]:
    url = pg_server.create_database("multi")
    root = tmp_path_factory.mktemp("instances")
    try:
        made = concierge_cli("keys", "create", "--role", "owner", "--json", home=root / "cli", database_url=url)
        assert made.returncode == 0, made.stderr
        key = json.loads(made.stdout)["key"]
        with serve_instances(root, url) as instances:
            yield instances, key, url
    finally:
        pg_server.drop_database(url)


def _clients(cluster: tuple[list[Instance], str, str]) -> list[httpx2.Client]:
    instances, key, _ = cluster
    return [i.client(key) for i in instances]


def _register(client: httpx2.Client, url: str, namespace: str, **extra: Any) -> httpx2.Response:
    return client.post(f"{SB}/sources/user-mcp", json={"name": namespace.title(), "base_url": url,
                                                      "auth_kind": "none", "app_namespace": namespace, **extra})


def test_a_source_registered_on_a_is_listed_on_b_and_c(cluster, open_mcp: RunningServer) -> None:
    a, b, c = _clients(cluster)
    made = _register(a, open_mcp.url(), "listed")
    assert made.status_code in (200, 201), made.text
    sid = made.json()["data_source_id"]
    for other in (b, c):
        listed = other.get(f"{SB}/sources").json()
        items = listed["items"] if isinstance(listed, dict) else listed
        assert sid in [s["id"] for s in items]


def test_a_cap_of_five_holds_across_three_instances_and_c_resets_it(cluster, open_mcp: RunningServer) -> None:
    a, b, c = _clients(cluster)
    sid = _register(a, open_mcp.url(), "capped", rate_cap_per_minute=5).json()["data_source_id"]
    assert b.post(f"{SB}/agents", json={"slug": "capbot", "tool_sources": ["user_mcp"],
                                        "tool_allowlist": ["capped_*"]}).status_code in (200, 201)
    tools = c.get(f"{SB}/agents/capbot/tools").json()
    assert "capped_echo" in [t["name"] for t in tools["tools"]]

    def call(client: httpx2.Client) -> httpx2.Response:
        return client.post(f"{SB}/agents/capbot/tools/call", json={"name": "capped_echo", "arguments": {"text": "x"}})

    with ThreadPoolExecutor(9) as pool:  # nine calls at once, three per instance
        answers = list(pool.map(call, [a, b, c] * 3))
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 5 + [429] * 4, [(r.status_code, r.text[:120]) for r in answers]
    assert all(r.json()["error"] == "rate_limited" for r in answers if r.status_code == 429)

    # Pause + resume on C: a fresh bucket for A and B too.
    assert c.post(f"{SB}/sources/{sid}/pause").status_code == 200
    assert c.post(f"{SB}/sources/{sid}/resume").json()["status"] == "active"
    assert call(a).status_code == 200 and call(b).status_code == 200

    # Revoke on C: the buckets are gone from the database, and A and B refuse the source.
    assert c.post(f"{SB}/sources/{sid}/user-mcp/revoke").json()["status"] == "disconnected"
    for client in (a, b):
        refused = call(client)
        assert refused.status_code in (404, 409), refused.text
        assert refused.json()["error"] != "rate_limited"


def test_buckets_are_gone_after_revoke_on_c(cluster, open_mcp: RunningServer, pg_server: PgServer) -> None:
    a, b, c = _clients(cluster)
    sid = _register(a, open_mcp.url(), "evicted", rate_cap_per_minute=3).json()["data_source_id"]
    b.post(f"{SB}/agents", json={"slug": "evbot", "tool_allowlist": ["evicted_*"]})
    for client in (a, b):
        called = client.post(f"{SB}/agents/evbot/tools/call", json={"name": "evicted_echo", "arguments": {"text": "x"}})
        assert called.status_code == 200, called.text
    _, _, url = cluster
    database = url.rsplit("/", 1)[1]
    assert pg_server.psql(f"SELECT count(*) FROM rate_buckets WHERE subject = '{sid}'", database).strip() == "1"
    assert c.post(f"{SB}/sources/{sid}/user-mcp/revoke").status_code == 200
    assert pg_server.psql(f"SELECT count(*) FROM rate_buckets WHERE subject = '{sid}'", database).strip() == "0"


def _stream(client: httpx2.Client, path: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, r.read()
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                events.append((name, json.loads(line[6:])))
    return events


def _only(events: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    found = [d for e, d in events if e == kind]
    assert len(found) == 1, (kind, [e for e, _ in events])
    return found[0]


def test_a_chat_started_on_a_gets_its_secret_on_c_and_its_yes_on_b(cluster, demo_mcp: RunningServer) -> None:
    a, b, c = _clients(cluster)
    chat = f"{SB}/concierge/chat"
    first = _stream(a, chat, {"message": f"Add my MCP server at {demo_mcp.url()} with a bearer token"})
    session = _only(first, "agent_finish")["session_id"]
    second = _stream(a, chat, {"message": "Acme", "session_id": session})
    asked = _only(second, "secret_required")
    path = f"{SB}/concierge/sessions/{session}"

    resumed = _stream(c, path + "/secret", {"id": asked["id"], "value": BEARER_CANARY})  # on C
    card = _only(resumed, "confirmation_required")
    done = _stream(b, path + "/confirm", {"id": card["id"], "approved": True})  # on B
    result = _only(done, "agent_tool_result")
    assert result["name"] == "register_source" and result["result"]["status"] == "active"  # C's secret worked

    history = a.get(path).json()  # A, whose memory holds the conversation as it was, reloads it
    names = [e["event"] for e in history["events"]]
    assert "user_secret" in names and "user_confirm" in names and history["pending"] is None
    sources = a.get(f"{SB}/sources").json()
    items = sources["items"] if isinstance(sources, dict) else sources
    assert any(s["name"] == "Acme" and s["has_token"] for s in items)
    assert BEARER_CANARY not in json.dumps(history) + json.dumps(done) + json.dumps(resumed)


def test_twenty_concurrent_registrations_of_one_namespace_have_one_winner(cluster, open_mcp: RunningServer) -> None:
    clients = _clients(cluster)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: _register(clients[i % 3], open_mcp.url(), "contested"), range(20)))
    won = [r for r in answers if r.status_code in (200, 201)]
    lost = [r for r in answers if r.status_code == 409]
    assert len(won) == 1 and len(lost) == 19, [(r.status_code, r.text[:100]) for r in answers]
    assert all(r.json()["error"] == "namespace_taken" for r in lost)


MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "lb-test", "version": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}


def _mcp(client: httpx2.Client, path: str, body: dict[str, Any], session: str | None = None) -> httpx2.Response:
    headers = MCP_HEADERS | ({"Mcp-Session-Id": session} if session else {})
    return client.post(path, json=body, headers=headers)


def test_with_stateless_mcp_any_instance_answers_an_agents_mcp_requests(
        pg_server: PgServer, tmp_path: Path, open_mcp: RunningServer) -> None:
    """Behind a load balancer the next request of an MCP client lands on another instance:
    `serve --stateless-mcp` answers it there; without the flag the other instance does not know
    the session the first one handed out."""
    url = pg_server.create_database("stateless")
    try:
        made = concierge_cli("keys", "create", "--role", "owner", "--json", home=tmp_path / "cli", database_url=url)
        key = json.loads(made.stdout)["key"]
        for flag, expect_shared in (("--stateless-mcp", True), (None, False)):
            extra = (flag,) if flag else ()
            with serve_instances(tmp_path / (flag or "stateful").strip("-"), url, ("A", "B"), *extra) as (a, b):
                ca, cb = a.client(key), b.client(key)
                ns = "lb" + ("s" if expect_shared else "f")
                assert _register(ca, open_mcp.url(), ns).status_code in (200, 201)
                slug = f"bot-{ns}"
                assert ca.post(f"{SB}/agents", json={"slug": slug}).status_code in (200, 201)
                path = f"{SB}/agents/{slug}/mcp"
                first = _mcp(ca, path, INIT)
                assert first.status_code == 200, first.text
                session = first.headers.get("mcp-session-id")
                second = _mcp(cb, path, LIST, session)  # the balancer sent it to B
                if expect_shared:
                    assert session is None  # nothing to stick to
                    assert second.status_code == 200, second.text
                    assert f"{ns}_echo" in second.text
                else:
                    assert session is not None and second.status_code in (400, 404), second.text
    finally:
        pg_server.drop_database(url)
