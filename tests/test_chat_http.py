"""The concierge over HTTP with the offline planner: SSE chat, the one-shot endpoint, answering a
confirmation and handing over a secret out of band, and conversations surviving a restart."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from concierge.agent.models import FunctionModel, OfflinePlanner, text
from concierge.server.auth import KeyStore
from tests.mcp_servers import RunningServer
from tests.server_fixtures import BEARER_CANARY, start_api_server

pytestmark = pytest.mark.usefixtures("engine")  # conversations on SQLite and on PostgreSQL

SB = "/api/v1/storage/sandboxes/default"
CHAT = SB + "/concierge/chat"


class Chat:
    """A client of one served registry, speaking the chat endpoints."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.raw: list[str] = []  # everything the server sent, to search for canaries

    def stream(self, path: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        with self.http.stream("POST", path, json=body) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in r.iter_lines():
                self.raw.append(line)
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    assert name is not None
                    events.append((name, json.loads(line[6:])))
                    name = None
        return events

    def say(self, message: str, session_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        body: dict[str, Any] = {"message": message}
        if session_id:
            body["session_id"] = session_id
        return self.stream(CHAT, body)

    def session_path(self, session_id: str) -> str:
        return f"{SB}/concierge/sessions/{session_id}"

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningServer, Any, Path]]:
    home = tmp_path / "chat-home"
    server, registry = start_api_server(home, model_factory=OfflinePlanner)
    try:
        yield server, registry, home
    finally:
        server.stop()
        registry.close()


@pytest.fixture
def chat(served) -> Iterator[Chat]:
    server, registry, _ = served
    client = Chat(server.url_base, KeyStore(registry.store).create(role="editor").key)
    yield client
    client.close()


def kinds(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [e for e, _ in events]


def only(events: list[tuple[str, dict[str, Any]]], kind: str) -> dict[str, Any]:
    found = [d for e, d in events if e == kind]
    assert len(found) == 1, (kind, kinds(events))
    return found[0]


def walk_to_secret(chat: Chat, url: str) -> tuple[str, dict[str, Any]]:
    first = chat.say(f"Add my MCP server at {url} with a bearer token")
    assert kinds(first)[0] == "run_started" and kinds(first)[-1] == "agent_finish"
    session = only(first, "agent_finish")["session_id"]
    assert only(first, "run_started")["session_id"] == session
    second = chat.say("Acme", session)
    assert only(second, "agent_finish")["stop_reason"] == "awaiting_secret"
    return session, only(second, "secret_required")


def test_register_over_sse_with_the_secret_out_of_band(chat, served, demo_mcp, engine):
    server, registry, home = served
    session, asked = walk_to_secret(chat, demo_mcp.url())
    assert asked["tool"] == "register_source" and "bearer token" in asked["purpose"]

    resumed = chat.stream(chat.session_path(session) + "/secret", {"id": asked["id"], "value": BEARER_CANARY})
    card = only(resumed, "confirmation_required")
    assert only(resumed, "agent_finish")["stop_reason"] == "awaiting_confirmation"
    assert "Acme" in card["summary"] and BEARER_CANARY not in json.dumps(card)
    assert registry.list_sources() == []  # nothing happens before the yes

    done = chat.stream(chat.session_path(session) + "/confirm", {"id": card["id"], "approved": True})
    result = only(done, "agent_tool_result")
    assert result["name"] == "register_source" and result["result"]["status"] == "active"
    assert only(done, "agent_finish")["stop_reason"] == "end_turn"
    [source] = registry.list_sources()
    assert (source.status, source.name, source.has_token) == ("active", "Acme", True)

    history = chat.http.get(chat.session_path(session)).json()
    names = [e["event"] for e in history["events"]]
    assert names.count("user_message") == 2 and "user_secret" in names and "user_confirm" in names
    assert history["pending"] is None and history["running"] is False
    # The credential never came back: not in a stream, the history, the stored state or events.
    stored = json.dumps(registry.store.query("SELECT * FROM concierge_sessions")) + json.dumps(
        registry.store.query("SELECT * FROM concierge_events"))
    assert BEARER_CANARY not in "\n".join(chat.raw) + json.dumps(history) + stored
    if engine == "sqlite":
        assert BEARER_CANARY.encode() not in (home / "concierge.db").read_bytes()  # encrypted at rest
    else:  # every table's every value, as PostgreSQL holds it
        dump = repr([registry.store.query(f"SELECT * FROM {t}") for t in registry.store.run(lambda db: db.tables())])
        assert BEARER_CANARY not in dump and len(dump) > 1000
    assert registry.audit(limit=5)[0].actor.endswith("via concierge")


def test_a_declined_confirmation_changes_nothing(chat, served, open_mcp):
    _, registry, _ = served
    first = chat.say(f"Add my MCP server at {open_mcp.url()} with no auth, call it Plain")
    session = only(first, "agent_finish")["session_id"]
    assert only(first, "agent_finish")["stop_reason"] == "awaiting_confirmation"
    card = only(first, "confirmation_required")
    declined = chat.stream(chat.session_path(session) + "/confirm", {"id": card["id"], "approved": False})
    assert only(declined, "agent_tool_result")["result"]["status"] == "declined"
    assert registry.list_sources() == [] and registry.audit(limit=50)[0].action == "sandbox.create"
    again = chat.http.post(chat.session_path(session) + "/confirm", json={"id": card["id"], "approved": True})
    assert again.status_code == 409  # an answered (and closed) request cannot be approved later


def test_a_viewer_may_decline_but_not_approve(served, open_mcp):
    server, registry, _ = served
    viewer = Chat(server.url_base, KeyStore(registry.store).create(role="viewer").key)
    try:
        first = viewer.say(f"Add my MCP server at {open_mcp.url()} with no auth, call it Plain")
        session = only(first, "agent_finish")["session_id"]
        card = only(first, "confirmation_required")
        refused = viewer.http.post(viewer.session_path(session) + "/confirm",
                                   json={"id": card["id"], "approved": True})
        assert refused.status_code == 403 and "editor" in refused.json()["detail"]
        still = viewer.http.get(viewer.session_path(session)).json()["pending"]
        assert still["event"] == "confirmation_required" and still["data"]["id"] == card["id"]
        declined = viewer.stream(viewer.session_path(session) + "/confirm", {"id": card["id"], "approved": False})
        assert only(declined, "agent_tool_result")["result"]["status"] == "declined"
        assert registry.list_sources() == []
    finally:
        viewer.close()


def test_the_one_shot_endpoint_reports_writes_instead_of_running_them(chat, served, open_mcp):
    _, registry, _ = served
    url = f"{SB}/concierge/test"
    r = chat.http.post(url, json={"message": f"Add my MCP server at {open_mcp.url()} with no auth, call it Plain"})
    out = r.json()
    assert set(out) >= {"run_id", "status", "output_text", "tokens_in", "tokens_out", "duration_ms",
                        "error_message"}
    assert out["status"] == "succeeded" and out["stop_reason"] == "awaiting_confirmation"
    pending = out["pending_confirmation"]
    assert pending["tool"] == "register_source" and pending["summary"] in out["output_text"]
    assert "waits for your confirmation" in out["output_text"]
    assert registry.list_sources() == []
    confirmed = chat.http.post(pending["answer_url"], json={"id": pending["id"], "approved": True},
                               headers={"Accept": "application/json"}).json()
    assert confirmed["status"] == "succeeded" and confirmed["stop_reason"] == "end_turn"
    assert "registered" in confirmed["output_text"]
    assert [(c["name"], c["result"]["status"]) for c in confirmed["tool_calls"]] == [("register_source", "active")]
    assert [s.status for s in registry.list_sources()] == ["active"]
    long = chat.http.post(url, json={"message": "x" * 4001})
    assert long.status_code == 400 and long.json()["field"] == "message"


def test_the_one_shot_outcome_is_the_same_fold_as_ask(chat, served, open_mcp):
    """``outcome`` says what came of it, as `concierge ask`'s exit status does."""
    from tests.mcp_servers import closed_port_url

    _, registry, _ = served
    url = f"{SB}/concierge/test"

    def outcome(message: str) -> dict[str, Any]:
        r = chat.http.post(url, json={"message": message})
        assert r.status_code == 200, r.text
        return r.json()

    assert outcome("list my sources")["outcome"] == "done"
    asked = outcome("add https://mcp.example.com/mcp")
    assert asked["outcome"] == "needs_info" and asked["questions"][0].startswith("How does it authenticate")
    assert outcome(f"Add {open_mcp.url()} with no auth, call it Plain")["outcome"] == "needs_confirmation"
    assert outcome(f"Add {open_mcp.url()} with a bearer token, call it Locked")["outcome"] == "needs_secret"
    asyncio.run(registry.register({"name": "Dead", "base_url": closed_port_url(), "auth_kind": "none",
                                   "app_namespace": "dead"}))
    failing = outcome("test Dead")
    assert failing["outcome"] == "error" and failing["status"] == "succeeded"
    assert outcome("blah blah")["outcome"] == "error"  # not understood


def test_a_typed_yes_or_no_answers_the_open_confirmation(chat, served, open_mcp):
    """In the streamed chat "yes please" while a card is open confirms it (as in the REPL) and
    "nah" declines it; the one-shot /test never runs a write, typed yes or not."""
    _, registry, _ = served

    def ask_to_register(name: str) -> tuple[str, dict[str, Any]]:
        first = chat.say(f"Add my MCP server at {open_mcp.url()} with no auth, call it {name}")
        return only(first, "agent_finish")["session_id"], only(first, "confirmation_required")

    session, card = ask_to_register("Plain")
    done = chat.say("yes please", session)
    assert ("user_confirm", {"id": card["id"], "approved": True}) in done
    assert only(done, "agent_tool_result")["result"]["status"] == "active"
    assert [s.name for s in registry.list_sources()] == ["Plain"]

    session, card = ask_to_register("Other")
    declined = chat.say("nah", session)
    assert ("user_confirm", {"id": card["id"], "approved": False}) in declined
    assert only(declined, "agent_tool_result")["result"]["status"] == "declined"

    session, card = ask_to_register("Third")
    one_shot = chat.http.post(f"{SB}/concierge/test", json={"message": "yes", "session_id": session}).json()
    assert one_shot["outcome"] == "needs_confirmation"  # asked again, not run
    assert [s.name for s in registry.list_sources()] == ["Plain"]


def test_a_blank_message_is_refused_naming_the_field(chat):
    for blank in ("", "   ", "\n\t"):
        r = chat.http.post(f"{SB}/concierge/test", json={"message": blank})
        assert r.status_code == 400 and r.json()["field"] == "message", r.text
        assert "empty" in r.json()["detail"] or "at least 1" in r.json()["detail"]


def test_tool_calls_carry_a_plain_words_label(chat):
    events = chat.say("list my sources")
    call = only(events, "agent_tool_call")
    assert call["name"] == "list_sources" and call["label"] == "Looking up your sources"


def test_a_conversation_survives_a_server_restart(chat, served, demo_mcp):
    server, registry, _ = served
    session, asked = walk_to_secret(chat, demo_mcp.url())
    resumed = chat.stream(chat.session_path(session) + "/secret", {"id": asked["id"], "value": BEARER_CANARY})
    card = only(resumed, "confirmation_required")
    before = chat.http.get(chat.session_path(session)).json()

    server.restart()  # a new app over the same database, as after a process restart

    after = chat.http.get(chat.session_path(session)).json()
    assert after["events"] == before["events"]
    assert after["pending"]["data"]["id"] == card["id"]
    done = chat.stream(chat.session_path(session) + "/confirm", {"id": card["id"], "approved": True})
    assert only(done, "agent_tool_result")["result"]["status"] == "active"  # the stored secret still works
    follow = chat.say("list my sources", session)
    assert "Acme" in "".join(d["text"] for e, d in follow if e == "agent_text_delta")


def test_a_pasted_credential_is_redacted_everywhere(chat, served):
    _, registry, _ = served
    events = chat.say(f"my api key is {BEARER_CANARY} please remember")
    session = only(events, "agent_finish")["session_id"]
    history = chat.http.get(chat.session_path(session)).json()
    said = next(e for e in history["events"] if e["event"] == "user_message")["data"]["text"]
    assert BEARER_CANARY not in said and "[secret:sec_" in said
    assert BEARER_CANARY not in "\n".join(chat.raw) + json.dumps(history)


def test_sessions_belong_to_their_key_and_sandbox(chat, served):
    server, registry, _ = served
    session = only(chat.say("help"), "agent_finish")["session_id"]
    other = Chat(server.url_base, KeyStore(registry.store).create(role="editor").key)
    try:
        assert other.http.get(other.session_path(session)).status_code == 404
        assert other.http.post(CHAT, json={"message": "hi", "session_id": session}).status_code == 404
        registry.create_sandbox("elsewhere")
        wrong_sb = chat.http.get(f"/api/v1/storage/sandboxes/elsewhere/concierge/sessions/{session}")
        assert wrong_sb.status_code == 404
        assert chat.http.post(CHAT, json={"message": "hi", "session_id": "cs_missing"}).status_code == 404
    finally:
        other.close()
    deleted = chat.http.delete(chat.session_path(session))
    assert deleted.json() == {"session_id": session, "deleted": True}
    assert chat.http.get(chat.session_path(session)).status_code == 404


@pytest.fixture
def slow_served(tmp_path: Path) -> Iterator[tuple[RunningServer, str]]:
    async def slow(messages: Any, tools: Any) -> Any:
        await asyncio.sleep(1.5)
        return text("finally")

    server, registry = start_api_server(tmp_path / "slow", model_factory=lambda: FunctionModel(slow),
                                        chat_run_timeout=0.4)
    key = KeyStore(registry.store).create(role="editor").key
    try:
        yield server, key
    finally:
        server.stop()
        registry.close()


def test_busy_sessions_and_timeouts(slow_served):
    server, key = slow_served
    chat = Chat(server.url_base, key)
    try:
        out = chat.http.post(f"{SB}/concierge/test", json={"message": "hello"}).json()
        assert out["status"] == "timeout" and "0.4" in out["error_message"]
        session = out["session_id"]
        got: list[list[tuple[str, dict[str, Any]]]] = []
        first = threading.Thread(target=lambda: got.append(chat.say("again", session)))
        first.start()
        deadline = 50
        while deadline and not chat.http.get(chat.session_path(session)).json()["running"]:
            deadline -= 1
            threading.Event().wait(0.02)
        busy = chat.http.post(CHAT, json={"message": "third", "session_id": session})
        assert busy.status_code == 409 and busy.json()["error"] == "session_busy"
        first.join(10)
        assert kinds(got[0])[-1] == "agent_finish"  # the streamed run is not cut by the one-shot timeout
        assert "finally" in "".join(d.get("text", "") for _, d in got[0])
    finally:
        chat.close()


def test_a_run_finishes_and_is_stored_when_the_client_goes_away(slow_served):
    server, key = slow_served
    chat = Chat(server.url_base, key)
    try:
        with chat.http.stream("POST", CHAT, json={"message": "hello"}) as r:
            first = next(line for line in r.iter_lines() if line.startswith("data: "))
        session = json.loads(first[6:])["session_id"]  # run_started; then the page went away
        for _ in range(200):
            history = chat.http.get(chat.session_path(session)).json()
            if not history["running"]:
                break
            threading.Event().wait(0.02)
        names = [e["event"] for e in history["events"]]
        assert names == ["user_message", "run_started", "agent_text_delta", "agent_finish"]
        assert history["events"][2]["data"]["text"] == "finally"
    finally:
        chat.close()


def test_conversations_are_capped_per_key_and_forgotten_after_the_retention_period(chat, served, demo_mcp):
    server, registry, _ = served
    service = server._server.config.app.state.services.chat
    service.max_per_key = 2
    first = only(chat.say("hello"), "agent_finish")["session_id"]
    second = only(chat.say("hello again"), "agent_finish")["session_id"]
    assert chat.http.get(chat.session_path(first)).status_code == 200
    third = only(chat.say("and again"), "agent_finish")["session_id"]  # the key's oldest goes
    assert chat.http.get(chat.session_path(first)).status_code == 404
    assert [chat.http.get(chat.session_path(s)).status_code for s in (second, third)] == [200, 200]
    assert registry.store.query("SELECT COUNT(*) AS n FROM concierge_events WHERE session_id = ?",
                                (first,)) == [{"n": 0}]

    service.max_per_key = 10
    held, asked = walk_to_secret(chat, demo_mcp.url())
    chat.stream(chat.session_path(held) + "/secret", {"id": asked["id"], "value": BEARER_CANARY})
    secrets = lambda: [r["key"] for r in registry.store.query(  # noqa: E731
        "SELECT key FROM vault WHERE key LIKE 'concierge/secrets/%'")]
    assert len(secrets()) == 1
    with registry.store.transaction() as cx:  # idle for longer than the retention period
        cx.execute("UPDATE concierge_sessions SET updated_at = ? WHERE id = ?", ("2020-01-01T00:00:00.000Z", held))
    only(chat.say("a new conversation"), "agent_finish")
    assert chat.http.get(chat.session_path(held)).status_code == 404
    assert secrets() == []  # its credential went with it
