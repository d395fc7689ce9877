"""The REST API through real HTTP on loopback: every route, shapes (checked against the published
OpenAPI document), 400/401/403/404/409/429, sandbox-scoped and role-limited keys, request ids,
and no credential in any response."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from concierge.cli.server_cmds import check_bind
from concierge.errors import NotFound
from concierge.registry import Registry
from concierge.registry.webhooks import sign
from concierge.server.app import ROUTE_TABLE
from concierge.server.auth import KeyStore
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import RunningServer, free_port
from tests.cli_fixtures import CliResult, run_cli
from tests.server_fixtures import BEARER_CANARY, ApiServer, OpenApiChecker, start_api_server

SB = "/api/v1/storage/sandboxes"


@pytest.fixture(scope="module")
def checker(api_server: ApiServer) -> OpenApiChecker:
    with api_server.client() as c:
        return OpenApiChecker(c.get("/openapi.json").json())


@pytest.fixture(scope="module")
def owner(api_server: ApiServer) -> httpx2.Client:
    return api_server.client(api_server.key("owner", label="test owner"))


def register_body(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "Demo", "base_url": url, "auth_kind": "bearer", "token": BEARER_CANARY, **extra}


def make_sandbox(client: httpx2.Client, name: str) -> dict[str, Any]:
    r = client.post(SB, json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def error_of(response: httpx2.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail"} <= set(body) and body["detail"], body
    if code is not None:
        assert body["error"] == code, body
    return body


# -- every route ------------------------------------------------------------------------------

def test_every_route_answers_with_its_documented_shape(api_server, checker, demo_mcp, owner):
    """One walk through the whole API; each answer is validated against /openapi.json, and at
    the end every documented operation must have been called."""
    hooks = {"response": [lambda r: (r.read(), checker.check(r))]}
    c = api_server.client(owner.headers["authorization"].split(" ", 1)[1], event_hooks=hooks)
    anon = api_server.client(event_hooks=hooks)

    assert anon.get("/healthz").json()["status"] == "ok"
    assert anon.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "widget.js" in anon.get("/").text
    assert anon.get("/widget.js").headers["content-type"].startswith("application/javascript")
    assert c.get("/api/v1/me").json()["role"] == "owner"

    sb = make_sandbox(c, "walk")
    assert "walk" in [s["name"] for s in c.get(SB).json()["items"]]
    assert c.get(f"{SB}/walk").json()["id"] == sb["id"]

    reg = c.post(f"{SB}/walk/sources/user-mcp", json=register_body(
        demo_mcp.url(), app_namespace="walk", ingest_tool_calls=[{"name": "echo", "arguments": {"text": "x"}}]))
    out = reg.json()
    assert out["status"] == "active" and out["webhook_secret"].startswith("whsec_")
    sid = out["data_source_id"]
    src = f"{SB}/walk/sources/{sid}"
    assert [s["id"] for s in c.get(f"{SB}/walk/sources").json()["items"]] == [sid]
    assert sid in [s["id"] for s in c.get("/api/v1/storage/sources", params={"status": "active"}).json()["items"]]
    assert c.get(f"/api/v1/storage/sources/{sid}").json()["sandbox_id"] == sb["id"]
    shown = c.get(src).json()
    assert shown["has_token"] is True and shown["app_namespace"] == "walk"

    assert c.patch(f"{src}/user-mcp", json={"name": "Walk demo"}).json()["name"] == "Walk demo"
    assert c.post(f"{src}/user-mcp/test").json()["status"] == "active"
    assert c.get(f"{src}/user-mcp/held-tools").json() == []  # the demo server's tools do not change
    assert c.post(f"{src}/user-mcp/approve", json={}).json()["approved"] == []
    not_oauth = c.post(f"{src}/user-mcp/authorize")  # a bearer source: nothing to sign in to
    assert not_oauth.status_code == 409 and "does not use OAuth" in not_oauth.json()["detail"]
    assert "No sign-in is waiting" in anon.get("/api/v1/oauth/callback", params={"state": "x"}).text
    assert c.post(f"{src}/pause").json()["status"] == "paused"
    assert c.post(f"{src}/resume").json()["status"] == "active"
    pulled = c.post(f"{src}/pull").json()
    assert (pulled["calls"], pulled["stored"]) == (1, 1)

    assert c.post(f"{SB}/walk/agents", json={"slug": "support"}).json()["slug"] == "support"
    assert [a["slug"] for a in c.get(f"{SB}/walk/agents").json()["items"]] == ["support"]
    assert c.get(f"{SB}/walk/agents/support").json()["tool_allowlist"] == []
    patched = c.patch(f"{SB}/walk/agents/support", json={"tool_allowlist": ["walk_*"]}).json()
    assert patched["tool_allowlist"] == ["walk_*"]
    tools = c.get(f"{SB}/walk/agents/support/tools").json()
    assert tools["count"] == 4 and tools["by_app"] == {"walk": sorted(tools["by_app"]["walk"])}
    assert "walk_echo" in tools["by_app"]["walk"] and tools["trace"]["sources_resolved"] == [sid]
    assert c.get(f"{SB}/walk/tools", params={"app": "walk"}).json()["count"] == 4
    called = c.post(f"{SB}/walk/agents/support/tools/call",
                    json={"name": "walk_echo", "arguments": {"text": "hi there"}}).json()
    assert called["is_error"] is False and "hi there" in called["text"]

    # The agent's catalog as an MCP endpoint, behind the same key.
    async def over_mcp() -> list[str]:
        async with httpx2.AsyncClient(headers={"Authorization": owner.headers["authorization"]},
                                      event_hooks={"response": [_async_check(checker)]}) as http, \
                Client(streamable_http_client(f"{api_server.url}{SB}/walk/agents/support/mcp",
                                              http_client=http)) as mcp:
            listed = await mcp.list_tools()
            result = await mcp.call_tool("walk_echo", {"text": "via mcp"})
            assert not result.is_error and "via mcp" in json.dumps(result.model_dump(mode="json"))
            return sorted(t.name for t in listed.tools)

    assert anyio.run(over_mcp) == tools["by_app"]["walk"]
    for method in ("GET", "DELETE"):  # legacy-protocol stream and session end: routed, not refused
        raw = c.request(method, f"{SB}/walk/agents/support/mcp")
        assert raw.status_code not in (401, 403, 404), raw.text

    secret = c.post(f"{src}/user-mcp/webhook-secret").json()["webhook_secret"]
    assert secret != out["webhook_secret"]
    body = json.dumps({"id": "evt_walk_1", "type": "doc.updated"}).encode()
    ts = str(int(time.time()))
    hook = anon.post(f"/api/v1/webhooks/user-mcp/{sid}", content=body, headers={
        "X-Concierge-Timestamp": ts, "X-Concierge-Signature": sign(secret, ts, body),
        "Content-Type": "application/json"})
    assert hook.json() == {"status": "stored", "event_id": "evt_walk_1", "data_source_id": sid}
    assert [e["event_id"] for e in c.get(f"{src}/webhook-events").json()["items"]] == ["evt_walk_1"]

    assert "source.register" in [e["action"] for e in c.get("/api/v1/storage/audit").json()["items"]]
    assert all(e["sandbox_id"] == sb["id"] for e in c.get(f"{SB}/walk/audit", params={"limit": 5}).json()["items"])

    one = c.post(f"{SB}/walk/concierge/test", json={"message": "list my sources"}).json()
    assert one["status"] == "succeeded" and "Walk demo" in one["output_text"]
    session = one["session_id"]
    with c.stream("POST", f"{SB}/walk/concierge/chat",
                  json={"message": "help", "session_id": session}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line.split(": ", 1)[1] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[0] == "run_started" and events[-1] == "agent_finish"
    history = c.get(f"{SB}/walk/concierge/sessions/{session}").json()
    assert [e["event"] for e in history["events"]].count("user_message") == 2
    nothing = c.post(f"{SB}/walk/concierge/sessions/{session}/confirm", json={"id": "confirm_x", "approved": False})
    error_of(nothing, 409, "conflict")
    nothing = c.post(f"{SB}/walk/concierge/sessions/{session}/secret", json={"id": "secret_x", "value": "v"})
    error_of(nothing, 409, "conflict")
    assert c.delete(f"{SB}/walk/concierge/sessions/{session}").json()["deleted"] is True

    assert c.post(f"{src}/user-mcp/revoke").json()["status"] == "disconnected"
    assert c.delete(src).json() == {"data_source_id": sid, "deleted": True}

    documented = checker.operations()
    assert documented - checker.hit == set(), "documented operations never called"
    assert {(r.method, r.path) for r in ROUTE_TABLE} <= documented


def _async_check(checker: OpenApiChecker):  # type: ignore[no-untyped-def]
    async def hook(response: httpx2.Response) -> None:
        assert response.status_code < 400, response.status_code
        checker.hit.add((response.request.method, checker.template(response.request.url.path) or "?"))
    return hook


# -- authentication and authorization -----------------------------------------------------------

def _concrete(path: str) -> str:
    return (path.replace("{sandbox_id}", "default").replace("{source_id}", "ds_X")
            .replace("{slug}", "x").replace("{session_id}", "cs_x"))


def test_every_keyed_route_refuses_a_missing_or_unknown_key(api_server):
    anon = api_server.client()
    bogus = api_server.client("ck_not-a-real-key")
    keyed = [r for r in ROUTE_TABLE if r.role is not None]
    assert len(keyed) > 25
    for route in keyed:
        for client in (anon, bogus):
            r = client.request(route.method, _concrete(route.path), json={})
            body = error_of(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "key" in body["detail"]
    r = api_server.client(headers={"Authorization": "Basic dXNlcjpwYXNz"}).get(f"{SB}")
    assert "Bearer" in error_of(r, 401)["detail"]
    # The MCP mount too.
    error_of(anon.post(f"{SB}/default/agents/x/mcp", json={}), 401, "unauthorized")


def test_public_routes_need_no_key(api_server):
    anon = api_server.client()
    for route in ROUTE_TABLE:
        if route.access == "public":
            assert anon.get(route.path).status_code == 200, route.path


def test_a_key_of_one_sandbox_is_refused_on_another(api_server, demo_mcp, owner):
    make_sandbox(owner, "tenant-a")
    make_sandbox(owner, "tenant-b")
    b_src = owner.post(f"{SB}/tenant-b/sources/user-mcp",
                       json=register_body(demo_mcp.url(), app_namespace="bee")).json()["data_source_id"]
    a = api_server.client(api_server.key("owner", sandbox="tenant-a"))

    assert [s["name"] for s in a.get(SB).json()["items"]] == ["tenant-a"]
    assert a.get("/api/v1/me").json()["default_sandbox"]["name"] == "tenant-a"
    error_of(a.get(f"{SB}/tenant-b"), 403, "forbidden")
    error_of(a.get(f"{SB}/tenant-b/sources"), 403)
    error_of(a.post(f"{SB}/tenant-b/sources/user-mcp", json=register_body(demo_mcp.url())), 403)
    error_of(a.post(f"{SB}/tenant-b/sources/{b_src}/user-mcp/revoke"), 403)
    error_of(a.get(f"{SB}/tenant-b/agents"), 403)
    error_of(a.post(f"{SB}/tenant-b/concierge/test", json={"message": "list my sources"}), 403)
    error_of(a.get(f"{SB}/no-such-sandbox"), 403)  # no probing for other tenants' sandboxes
    error_of(a.get(f"/api/v1/storage/sources/{b_src}"), 404)
    assert b_src not in [s["id"] for s in a.get("/api/v1/storage/sources").json()["items"]]
    b_id = owner.get(f"{SB}/tenant-b").json()["id"]
    assert all(e["sandbox_id"] != b_id for e in a.get("/api/v1/storage/audit", params={"limit": 500}).json()["items"])
    error_of(a.post(SB, json={"name": "tenant-c"}), 403)  # a scoped key cannot create sandboxes
    # ... and a source id from another sandbox under its own sandbox's path is simply unknown.
    error_of(a.get(f"{SB}/tenant-a/sources/{b_src}"), 404, "not_found")
    assert owner.get(f"{SB}/tenant-b/sources/{b_src}").json()["status"] == "active"  # untouched


def test_a_viewer_is_refused_every_write(api_server, demo_mcp, owner):
    make_sandbox(owner, "viewing")
    sid = owner.post(f"{SB}/viewing/sources/user-mcp",
                     json=register_body(demo_mcp.url(), app_namespace="v")).json()["data_source_id"]
    owner.post(f"{SB}/viewing/agents", json={"slug": "bot"})
    viewer = api_server.client(api_server.key("viewer", sandbox="viewing"))
    src = f"{SB}/viewing/sources/{sid}"
    writes = [
        ("POST", f"{SB}/viewing/sources/user-mcp", register_body(demo_mcp.url())),
        ("PATCH", f"{src}/user-mcp", {"name": "nope"}),
        ("POST", f"{src}/user-mcp/revoke", None), ("POST", f"{src}/pause", None),
        ("POST", f"{src}/resume", None), ("POST", f"{src}/pull", None), ("DELETE", src, None),
        ("POST", f"{src}/user-mcp/webhook-secret", None),
        ("POST", f"{SB}/viewing/agents", {"slug": "x"}),
        ("PATCH", f"{SB}/viewing/agents/bot", {"name": "x"}),
        ("POST", f"{SB}/viewing/agents/bot/tools/call", {"name": "v_echo", "arguments": {"text": "x"}}),
        ("POST", f"{SB}/viewing/agents/bot/mcp", {}),
    ]
    for method, path, body in writes:
        r = viewer.request(method, path, json=body)
        assert "viewer" in error_of(r, 403, "forbidden")["detail"], (method, path)
    assert viewer.post(f"{src}/user-mcp/test").json()["status"] == "active"  # a check, not a change
    # Reads work, and nothing changed.
    assert viewer.get(src).json()["name"] == "Demo" and viewer.get(src).json()["status"] == "active"
    assert viewer.get(f"{SB}/viewing/agents/bot/tools").json()["count"] == 4
    assert viewer.post(f"{SB}/viewing/concierge/test",
                       json={"message": "list my sources"}).json()["status"] == "succeeded"


def test_editor_and_owner_limits(api_server, demo_mcp, owner):
    make_sandbox(owner, "editing")
    editor = api_server.client(api_server.key("editor"))
    sid = editor.post(f"{SB}/editing/sources/user-mcp",
                      json=register_body(demo_mcp.url(), app_namespace="ed")).json()["data_source_id"]
    assert "owner" in error_of(editor.delete(f"{SB}/editing/sources/{sid}"), 403)["detail"]
    error_of(editor.post(SB, json={"name": "by-editor"}), 403)
    assert editor.post(f"{SB}/editing/sources/{sid}/user-mcp/revoke").json()["status"] == "disconnected"


def test_a_revoked_key_is_refused_from_the_next_request(api_server):
    key = api_server.key("viewer")
    client = api_server.client(key)
    assert client.get(SB).status_code == 200
    api_server.keys.revoke(key.id)
    error_of(client.get(SB), 401, "unauthorized")
    listed = {k.id: k for k in api_server.keys.list()}
    assert listed[key.id].revoked_at is not None and listed[key.id].last_used_at is not None


def test_anonymous_loopback_only_when_started_so(tmp_path, open_mcp):
    server, registry = start_api_server(tmp_path / "anon", allow_anonymous_loopback=True)
    try:
        with httpx2.Client(base_url=server.url_base) as c:
            assert c.get("/api/v1/me").json() == {
                "key_id": None, "role": "owner", "sandbox_id": None,
                "default_sandbox": c.get(f"{SB}/default").json()}
            out = c.post(f"{SB}/default/sources/user-mcp",
                         json={"name": "o", "base_url": open_mcp.url(), "auth_kind": "none"}).json()
            assert out["status"] == "active"
            assert registry.audit(limit=1)[0].actor == "local-http"
            # A key that is sent must still be valid.
            error_of(c.get(SB, headers={"Authorization": "Bearer ck_wrong"}), 401)
    finally:
        server.stop()
        registry.close()


def test_anonymous_access_refuses_other_origins_and_hosts(tmp_path, open_mcp):
    """Anonymous loopback mode must not let a web page elsewhere drive the local server."""
    server, registry = start_api_server(tmp_path / "anon-origin", allow_anonymous_loopback=True)
    body = {"name": "o", "base_url": open_mcp.url(), "auth_kind": "none"}
    try:
        with httpx2.Client(base_url=server.url_base) as c:
            same = c.post(f"{SB}/default/concierge/test", json={"message": "help"},
                          headers={"Origin": server.url_base})
            assert same.status_code == 200  # the demo page at / is same-origin
            for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                            {"Host": "evil.example"}, {"Host": f"rebind.example:{server.port}"}):
                r = c.post(f"{SB}/default/sources/user-mcp", json=body, headers=headers)
                assert error_of(r, 403, "forbidden_origin")
                error_of(c.post(f"{SB}/default/sources/ds_x/pause", headers=headers), 403)
            assert registry.list_sources() == []
            key = KeyStore(registry.store).create(role="editor").key
            keyed = c.post(f"{SB}/default/sources/user-mcp", json=body,
                           headers={"Origin": "https://app.example", "Authorization": f"Bearer {key}"})
            assert keyed.json()["status"] == "active"  # a key is a key, whatever the page
    finally:
        server.stop()
        registry.close()


def test_cors_only_for_configured_origins(tmp_path):
    allowed, other = "https://app.example", "https://other.example"
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    server, registry = start_api_server(tmp_path / "cors", cors_origins=[allowed])
    plain, plain_registry = start_api_server(tmp_path / "no-cors")
    try:
        with httpx2.Client(base_url=server.url_base) as c:
            ok = c.options(f"{SB}/default/concierge/chat", headers={"Origin": allowed, **preflight})
            assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == allowed
            assert "authorization" in ok.headers["access-control-allow-headers"].lower()
            assert c.options(f"{SB}/default/concierge/chat",
                             headers={"Origin": other, **preflight}).status_code == 400
            got = c.get("/healthz", headers={"Origin": allowed})
            assert got.headers["access-control-allow-origin"] == allowed
            assert "x-request-id" in got.headers["access-control-expose-headers"].lower()
        with httpx2.Client(base_url=plain.url_base) as c:
            r = c.options(f"{SB}/default/concierge/chat", headers={"Origin": allowed, **preflight})
            assert "access-control-allow-origin" not in r.headers
    finally:
        server.stop()
        plain.stop()
        registry.close()
        plain_registry.close()


# -- errors -------------------------------------------------------------------------------------

def test_validation_failures_answer_400_naming_the_field(api_server, owner):
    url = f"{SB}/default/sources/user-mcp"
    cases = [
        (owner.post(url, content=b"{not json", headers={"Content-Type": "application/json"}), "body"),
        (owner.post(url, json=["a list"]), "body"),
        (owner.post(url, json={"base_url": "https://x.example.com", "auth_kind": "none"}), "name"),
        (owner.post(url, json={"name": "x", "base_url": "http://mcp.example.com/mcp", "auth_kind": "none"}),
         "base_url"),
        (owner.post(url, json={"name": "x", "base_url": "https://a.example.com", "auth_kind": "bearer"}),
         "token"),
        (owner.post(url, json={"name": "x", "base_url": "https://a.example.com", "auth_kind": "none",
                               "rate_cap_per_minute": 601}), "rate_cap_per_minute"),
        (owner.post(url, json={"name": "x", "base_url": "https://a.example.com", "auth_kind": "none",
                               "surprise": 1}), "surprise"),
        (owner.get(f"{SB}/default/sources", params={"status": "sleeping"}), "status"),
        (owner.get("/api/v1/storage/audit", params={"limit": "many"}), "limit"),
        (owner.post(f"{SB}/default/concierge/test", json={"message": "x" * 4001}), "message"),
        (owner.post(SB, json={"name": "has spaces"}), "name"),
    ]
    text_plain = owner.post(url, content=b'{"name": "x"}', headers={"Content-Type": "text/plain"})
    assert error_of(text_plain, 415, "unsupported_media_type")["field"] == "body"
    for response, field in cases:
        body = error_of(response, 400, "validation_error")
        assert body.get("field") == field or field in body["detail"], (field, body)
        assert set(body) <= {"error", "detail", "field"}


def test_unknown_ids_answer_404(api_server, owner):
    error_of(owner.get(f"{SB}/nowhere"), 404, "not_found")
    error_of(owner.get(f"{SB}/default/sources/ds_01NOSUCHSOURCE0000000000000"), 404)
    error_of(owner.post(f"{SB}/default/sources/ds_01NOSUCHSOURCE0000000000000/user-mcp/test"), 404)
    error_of(owner.get(f"{SB}/default/agents/ghost"), 404)
    error_of(owner.get(f"{SB}/default/agents/ghost/tools"), 404)
    error_of(owner.post(f"{SB}/default/agents/ghost/mcp", json={}), 404)
    error_of(owner.get(f"{SB}/default/concierge/sessions/cs_nope"), 404)
    error_of(owner.get("/api/v1/nothing-here"), 404, "not_found")
    r = owner.put(f"{SB}/default")
    error_of(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET"


def test_conflicts_answer_409(api_server, demo_mcp, owner):
    make_sandbox(owner, "clash")
    first = owner.post(f"{SB}/clash/sources/user-mcp", json=register_body(demo_mcp.url(), app_namespace="dup"))
    assert first.json()["status"] == "active"
    body = error_of(owner.post(f"{SB}/clash/sources/user-mcp",
                               json=register_body(demo_mcp.url(), app_namespace="dup")), 409, "namespace_taken")
    assert "dup" in body["detail"]
    sid = first.json()["data_source_id"]
    owner.post(f"{SB}/clash/sources/{sid}/user-mcp/revoke")
    error_of(owner.patch(f"{SB}/clash/sources/{sid}/user-mcp", json={"name": "again"}), 409, "conflict")
    error_of(owner.post(SB, json={"name": "clash"}), 409)


def test_rate_cap_answers_429_with_retry_after(api_server, demo_mcp, owner):
    make_sandbox(owner, "capped")
    owner.post(f"{SB}/capped/sources/user-mcp",
               json=register_body(demo_mcp.url(), app_namespace="cap", rate_cap_per_minute=1))
    owner.post(f"{SB}/capped/agents", json={"slug": "a"})
    call = {"name": "cap_echo", "arguments": {"text": "x"}}
    assert owner.post(f"{SB}/capped/agents/a/tools/call", json=call).status_code == 200
    r = owner.post(f"{SB}/capped/agents/a/tools/call", json=call)
    body = error_of(r, 429, "rate_limited")
    assert body["retry_after"] > 0 and int(r.headers["retry-after"]) >= 1


def test_every_response_carries_a_request_id(api_server, owner):
    anon = api_server.client()
    responses = [anon.get("/healthz"), anon.get(SB), anon.get("/nope"), owner.put(f"{SB}/default"),
                 owner.get(f"{SB}/nowhere"), anon.get("/widget.js"),
                 owner.post(f"{SB}/default/sources/user-mcp", json={})]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids) and len(set(ids)) == len(ids)
    assert anon.get("/healthz", headers={"X-Request-Id": "trace-42"}).headers["x-request-id"] == "trace-42"
    replaced = anon.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"}).headers["x-request-id"]
    assert replaced.startswith("req_")


def test_writes_are_audited_under_the_calling_key(api_server, open_mcp, owner):
    key = api_server.key("editor", label="auditor")
    c = api_server.client(key)
    make_sandbox(owner, "audited")
    c.post(f"{SB}/audited/sources/user-mcp", json={"name": "a", "base_url": open_mcp.url(), "auth_kind": "none"})
    actors = {(e["action"], e["actor"]) for e in owner.get(f"{SB}/audited/audit").json()["items"]}
    assert ("source.register", f"key:{key.id}") in actors
    assert ("source.health_check", f"key:{key.id}") in actors


# -- secrets ------------------------------------------------------------------------------------

@pytest.fixture
def server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def test_no_credential_in_any_response(api_server, demo_mcp, owner, server_logs):
    """The bearer canary goes in at registration and rotation; nothing ever gives it back."""
    make_sandbox(owner, "canary")
    seen: list[str] = []
    c = api_server.client(owner.headers["authorization"].split(" ", 1)[1],
                          event_hooks={"response": [lambda r: (r.read(), seen.append(
                              r.text + json.dumps(dict(r.headers))))]})
    out = c.post(f"{SB}/canary/sources/user-mcp", json=register_body(demo_mcp.url(), app_namespace="can")).json()
    sid = out["data_source_id"]
    c.patch(f"{SB}/canary/sources/{sid}/user-mcp", json={"token": BEARER_CANARY})
    c.post(f"{SB}/canary/agents", json={"slug": "a"})
    for path in (SB, f"{SB}/canary/sources", f"{SB}/canary/sources/{sid}", "/api/v1/storage/sources",
                 f"/api/v1/storage/sources/{sid}", f"{SB}/canary/agents/a/tools", f"{SB}/canary/tools",
                 "/api/v1/storage/audit", f"{SB}/canary/audit"):
        assert c.get(path, params={"limit": 1000} if "audit" in path else None).status_code == 200
    c.post(f"{SB}/canary/sources/{sid}/user-mcp/test")
    c.post(f"{SB}/canary/agents/a/tools/call", json={"name": "can_echo", "arguments": {"text": "t"}})
    c.post(f"{SB}/canary/concierge/test", json={"message": f"my token is {BEARER_CANARY}"})
    c.post(f"{SB}/canary/sources/{sid}/user-mcp/revoke")
    assert len(seen) >= 15
    for text in seen:
        assert BEARER_CANARY not in text
    assert BEARER_CANARY not in server_logs.text
    shown = c.get(f"{SB}/canary/sources/{sid}").json()
    assert shown["has_token"] is False and shown["token_last4"] is None


def test_the_webhook_secret_is_shown_once(api_server, open_mcp, owner):
    make_sandbox(owner, "hooks-once")
    out = owner.post(f"{SB}/hooks-once/sources/user-mcp",
                     json={"name": "h", "base_url": open_mcp.url(), "auth_kind": "none"}).json()
    secret = out["webhook_secret"]
    sid = out["data_source_id"]
    bodies = [owner.get(p).text for p in (f"{SB}/hooks-once/sources/{sid}", f"{SB}/hooks-once/sources",
                                          f"{SB}/hooks-once/audit", "/api/v1/storage/sources")]
    bodies.append(owner.patch(f"{SB}/hooks-once/sources/{sid}/user-mcp", json={"name": "h2"}).text)
    bodies.append(owner.post(f"{SB}/hooks-once/sources/{sid}/user-mcp/test").text)
    assert all(secret not in b for b in bodies)


def test_server_keeps_serving_after_a_bad_request(api_server):
    """A body that is not UTF-8 is a 400, one too large a 413, never a crash."""
    anon = api_server.client(api_server.key("owner"))
    r = anon.post(f"{SB}/default/sources/user-mcp", content=b"\xff\xfe\x00",
                  headers={"Content-Type": "application/json"})
    error_of(r, 400, "validation_error")
    r = anon.post(f"{SB}/default/sources/user-mcp", content=b"x" * (1024 * 1024 + 1),
                  headers={"Content-Type": "application/json"})
    error_of(r, 413, "payload_too_large")
    assert anon.get("/healthz").status_code == 200


def test_module_fixture_demo_mcp_is_gated(demo_mcp: RunningServer):
    """The canary server really requires the token (otherwise the canary tests prove little)."""
    with httpx2.Client() as c:
        r = c.post(demo_mcp.url(), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401


# -- the CLI: serve and keys ------------------------------------------------------------------

def _cli(home, *args: str) -> CliResult:
    return run_cli(*args, home=home, env={"CONCIERGE_MASTER_KEY": TEST_MASTER_KEY})


def test_keys_are_printed_once_and_stored_as_hashes(tmp_path):
    home = tmp_path / "keys-home"
    made = _cli(home, "keys", "create", "--role", "viewer", "--sandbox", "default", "--label", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.split()[0]
    assert key.startswith("ck_") and len(key) > 40 and "only time the key is shown" in made.stdout
    listed = _cli(home, "keys", "list", "--json")
    [row] = json.loads(listed.stdout)["items"]
    assert key not in listed.stdout and row["role"] == "viewer" and row["label"] == "ci"
    assert key[:9] == row["prefix"] and row["sandbox_id"].startswith("sb_")
    assert key.encode() not in (home / "concierge.db").read_bytes()
    assert hashlib.sha256(key.encode()).hexdigest().encode() in (home / "concierge.db").read_bytes()
    assert _cli(home, "keys", "revoke", row["id"]).returncode == 0
    assert json.loads(_cli(home, "keys", "list", "--all", "--json").stdout)["items"][0]["revoked_at"]
    registry = Registry.open(home)
    try:
        keys = KeyStore(registry.store)
        assert keys.list(include_revoked=False) == [] and keys.authenticate(key) is None
        with pytest.raises(NotFound, match="no API key 'key_nope'"):
            keys.revoke("key_nope")
    finally:
        registry.close()


def test_serve_refuses_unsafe_binds_with_a_clear_message(tmp_path):
    home = tmp_path / "serve-home"
    wide = _cli(home, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert wide.returncode == 1 and "refusing to listen on 0.0.0.0 without API keys" in wide.stderr
    assert "local use only" in str(check_bind("0.0.0.0", active_keys=1, allow_anonymous_loopback=True))
    nokeys = _cli(home, "serve", "--port", str(free_port()))
    assert nokeys.returncode == 1 and "concierge keys create" in nokeys.stderr
    assert check_bind("10.0.0.5", active_keys=1, allow_anonymous_loopback=False) is None
    assert check_bind("127.0.0.1", active_keys=0, allow_anonymous_loopback=True) is None


def test_serve_runs_the_service(tmp_path):
    home, port = tmp_path / "served-home", free_port()
    env = {**os.environ, "CONCIERGE_HOME": str(home), "CONCIERGE_MASTER_KEY": TEST_MASTER_KEY}
    proc = subprocess.Popen([sys.executable, "-m", "concierge", "serve", "--port", str(port),
                             "--allow-anonymous-loopback"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.05)
        assert httpx2.get(url + "/api/v1/me").json()["role"] == "owner"
        assert httpx2.get(url + "/").headers["content-type"].startswith("text/html")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"serving on http://127.0.0.1:{port}" in err


# -- conformance fixes found by schemathesis ------------------------------------------------------


def test_auth_rules_a_body_breaks_are_400_those_of_the_stored_source_409(owner, open_mcp, checker):
    make_sandbox(owner, "authrules")
    out = owner.post(f"{SB}/authrules/sources/user-mcp",
                     json={"name": "o", "base_url": open_mcp.url(), "auth_kind": "none"}).json()
    patch = f"{SB}/authrules/sources/{out['data_source_id']}/user-mcp"
    alone = owner.patch(patch, json={"auth_kind": "none", "token": "test-token-x1y2z3"})
    checker.check(alone)
    assert error_of(alone, 400, "validation_error")["field"] == "token"
    stored = owner.patch(patch, json={"auth_kind": "bearer"})  # valid, but this source has no token
    checker.check(stored)
    body = error_of(stored, 409, "validation_error")
    assert body["field"] == "token" and "token is required when auth_kind is 'bearer'" in body["detail"]


def test_an_unknown_tool_is_409_an_unknown_agent_404(owner, checker):
    make_sandbox(owner, "toolcall")
    owner.post(f"{SB}/toolcall/agents", json={"slug": "bot"})
    r = owner.post(f"{SB}/toolcall/agents/bot/tools/call", json={"name": "nope"})
    checker.check(r)
    assert "has no tool 'nope'" in error_of(r, 409, "unknown_tool")["detail"]
    r = owner.post(f"{SB}/toolcall/agents/ghost/tools/call", json={"name": "nope"})
    checker.check(r)
    error_of(r, 404, "not_found")


def _keys_of(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _keys_of(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys_of(value)


def test_the_document_states_constraints_in_json_schema_terms(checker):
    doc = checker.doc
    keys = {k for k, _ in _keys_of(doc["components"])}
    assert not keys & {"ge", "le", "gt", "lt"}, "pydantic's names are not JSON Schema keywords"
    assert "UNSET" not in json.dumps(doc)
    assert "Unset" not in doc["components"]["schemas"]
    update = doc["components"]["schemas"]["UpdateSource"]["properties"]
    assert {"type": "integer", "minimum": 1, "maximum": 600} in update["rate_cap_per_minute"]["anyOf"]
    assert {"type": "null"} in update["name"]["anyOf"]  # null means "keep" there
    agent = doc["components"]["schemas"]["AgentUpdate"]["properties"]
    assert "anyOf" not in agent["tool_sources"] and agent["tool_sources"]["type"] == "array"  # no null
    chat = doc["paths"][f"{SB}/{{sandbox_id}}/concierge/chat"]["post"]["responses"]["200"]["content"]
    assert chat["text/event-stream"]["schema"]["properties"]["data"]["type"] == "string"
