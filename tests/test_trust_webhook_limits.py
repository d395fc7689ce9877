"""Hostile callers of the HTTP API, over a real uvicorn server and raw sockets: a body over the
limit is refused before it is read (by its ``Content-Length``) or as soon as it passes the
limit (chunked); the webhook receiver checks the source and the signature headers before
reading any body; a captured delivery replayed under a fresh event id does not verify."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from concierge.registry.webhooks import MAX_BODY_BYTES, sign
from concierge.server.api import MAX_BODY_BYTES as API_MAX_BODY_BYTES
from tests.mcp_servers import RunningServer
from tests.server_fixtures import ApiServer

SB = "/api/v1/storage/sandboxes"
GIB = 1024 ** 3


@pytest.fixture(scope="module")
def owner_key(api_server: ApiServer) -> str:
    return api_server.key("owner").key


@pytest.fixture
def source(api_server: ApiServer, owner_key: str, open_mcp: RunningServer,
           request: pytest.FixtureRequest) -> dict[str, Any]:
    ns = "lim" + hashlib.sha1(request.node.name.encode()).hexdigest()[:8]
    with api_server.client(owner_key) as c:
        out = c.post(f"{SB}/default/sources/user-mcp", json={
            "name": "hooks", "base_url": open_mcp.url(), "auth_kind": "none", "app_namespace": ns}).json()
    assert out["status"] == "active", out
    return out


def _address(api: ApiServer) -> tuple[str, int]:
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of one HTTP/1.1 response (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, rest[:length]


@pytest.fixture
def raw(api_server: ApiServer) -> Iterator[socket.socket]:
    sock = socket.create_connection(_address(api_server), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def _headers(path: str, api: ApiServer, extra: dict[str, str]) -> bytes:
    host, port = _address(api)
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             *(f"{k}: {v}" for k, v in extra.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _send_chunks_until_answered(sock: socket.socket, *, most: int) -> int:
    """Send a chunked body until the server answers or stops reading (never more than
    ``most`` bytes); how many bytes were sent. The socket is left ready to read the answer."""
    chunk, sent = b"x" * 65536, 0
    try:
        sock.settimeout(0.05)
        while sent < most:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except TimeoutError:
                continue
    except (BrokenPipeError, ConnectionResetError, TimeoutError):  # the server stopped reading
        pass
    sock.settimeout(10)
    return sent


def _events(api: ApiServer, key: str, source_id: str) -> list[dict[str, Any]]:
    with api.client(key) as c:
        return c.get(f"{SB}/default/sources/{source_id}/webhook-events").json()["items"]


# -- the webhook receiver ----------------------------------------------------------------------

def test_an_unsigned_gigabyte_is_refused_before_a_byte_of_it_is_read(api_server, source, raw) -> None:
    # Only the headers are sent: the answer must come without the body (or the test would hang).
    raw.sendall(_headers(f"/api/v1/webhooks/user-mcp/{source['data_source_id']}", api_server,
                         {"Content-Length": str(GIB)}))
    status, body = _read_response(raw)
    assert status == 401 and b"missing" in body
    raw.settimeout(5)
    assert raw.recv(1) == b""  # and the connection is closed: the rest is never received


def test_a_signed_gigabyte_is_refused_by_its_content_length(api_server, source, raw) -> None:
    ts = str(int(time.time()))
    raw.sendall(_headers(f"/api/v1/webhooks/user-mcp/{source['data_source_id']}", api_server, {
        "Content-Length": str(GIB), "X-Concierge-Timestamp": ts, "X-Concierge-Event-Id": "evt_big",
        "X-Concierge-Signature": "sha256=" + "0" * 64}))
    status, body = _read_response(raw)
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"
    assert str(GIB) in json.loads(body)["detail"]


def test_an_unknown_source_is_refused_before_its_body_is_read(api_server, raw) -> None:
    raw.sendall(_headers("/api/v1/webhooks/user-mcp/ds_nope", api_server, {"Content-Length": str(GIB)}))
    status, _ = _read_response(raw)
    assert status == 404


def test_a_chunked_body_is_cut_off_at_the_limit(api_server, owner_key, source, raw) -> None:
    sid = source["data_source_id"]
    ts = str(int(time.time()))
    raw.sendall(_headers(f"/api/v1/webhooks/user-mcp/{sid}", api_server, {
        "Transfer-Encoding": "chunked", "X-Concierge-Timestamp": ts, "X-Concierge-Event-Id": "evt_chunked",
        "X-Concierge-Signature": sign(source["webhook_secret"], ts, b"x", event_id="evt_chunked")}))
    sent = _send_chunks_until_answered(raw, most=4 * MAX_BODY_BYTES)
    status, body = _read_response(raw)
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"
    assert sent <= 4 * MAX_BODY_BYTES
    assert _events(api_server, owner_key, sid) == []


def test_a_body_at_the_limit_is_still_accepted(api_server, owner_key, source) -> None:
    sid, secret = source["data_source_id"], source["webhook_secret"]
    prefix = b'{"id": "evt_full", "pad": "'
    raw_body = prefix + b"p" * (MAX_BODY_BYTES - len(prefix) - 2) + b'"}'
    assert len(raw_body) == MAX_BODY_BYTES
    ts = str(int(time.time()))
    with httpx2.Client(base_url=api_server.url) as c:
        r = c.post(f"/api/v1/webhooks/user-mcp/{sid}", content=raw_body, headers={
            "Content-Type": "application/json", "X-Concierge-Timestamp": ts,
            "X-Concierge-Signature": sign(secret, ts, raw_body)})
    assert r.status_code == 200 and r.json()["status"] == "stored", r.text


# -- replay ---------------------------------------------------------------------------------------

def test_a_delivery_replayed_under_a_fresh_event_id_is_refused_and_nothing_is_stored(
        api_server, owner_key, source) -> None:
    sid, secret = source["data_source_id"], source["webhook_secret"]
    body = json.dumps({"type": "payment.sent", "amount": 100}).encode()
    ts = str(int(time.time()))
    captured = {"Content-Type": "application/json", "X-Concierge-Timestamp": ts,
                "X-Concierge-Event-Id": "evt_1", "X-Concierge-Signature": sign(secret, ts, body, event_id="evt_1")}
    with httpx2.Client(base_url=api_server.url) as c:
        first = c.post(f"/api/v1/webhooks/user-mcp/{sid}", content=body, headers=captured)
        assert first.status_code == 200 and first.json()["status"] == "stored", first.text
        for fresh in ("evt_2", "evt_3", "evt_4"):
            replay = c.post(f"/api/v1/webhooks/user-mcp/{sid}", content=body,
                            headers=captured | {"X-Concierge-Event-Id": fresh})
            assert replay.status_code == 401 and replay.json()["error"] == "invalid_signature", replay.text
        stripped = {k: v for k, v in captured.items() if k != "X-Concierge-Event-Id"}
        assert c.post(f"/api/v1/webhooks/user-mcp/{sid}", content=body, headers=stripped).status_code == 401
        same = c.post(f"/api/v1/webhooks/user-mcp/{sid}", content=body, headers=captured)
        assert same.json()["status"] == "duplicate"
    assert [e["event_id"] for e in _events(api_server, owner_key, sid)] == ["evt_1"]


# -- every JSON route ------------------------------------------------------------------------------

def test_a_json_route_refuses_an_oversized_content_length_unread(api_server, owner_key, raw) -> None:
    raw.sendall(_headers(f"{SB}/default/agents", api_server, {
        "Content-Length": str(GIB), "Authorization": f"Bearer {owner_key}"}))
    status, body = _read_response(raw)
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"


def test_a_json_route_cuts_a_chunked_body_off_at_the_limit(api_server, owner_key) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        piece = b" " * 65536
        while sent < 8 * API_MAX_BODY_BYTES:
            sent += len(piece)
            yield piece

    with api_server.client(owner_key) as c:
        try:
            r = c.post(f"{SB}/default/agents", content=chunks(), headers={"Content-Type": "application/json"})
        except httpx2.HTTPError:  # the server may close the connection mid-upload after answering
            pytest.fail("the server should answer 413, not drop the connection")
    # (a body of spaces under the limit would be a 400 "must be a JSON object": 413 is the limit)
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large", r.text


def test_an_unauthenticated_caller_is_refused_before_its_body_is_read(api_server, raw) -> None:
    raw.sendall(_headers(f"{SB}/default/agents", api_server, {"Content-Length": str(GIB)}))
    status, _ = _read_response(raw)
    assert status == 401


# -- the per-agent MCP endpoint (the SDK buffers a POST whole: the limit comes first) ----------

@pytest.fixture
def agent_mcp(api_server: ApiServer, owner_key: str, source: dict[str, Any]) -> str:
    slug = "lim-" + source["data_source_id"][-6:].lower()
    with api_server.client(owner_key) as c:
        assert c.post(f"{SB}/default/agents", json={"slug": slug}).status_code in (200, 201)
    return f"{SB}/default/agents/{slug}/mcp"


def test_the_agent_mcp_endpoint_refuses_a_gigabyte_by_its_content_length(
        api_server, owner_key, agent_mcp, raw) -> None:
    from concierge.gateway_server import MAX_REQUEST_BYTES

    raw.sendall(_headers(agent_mcp, api_server, {"Content-Length": str(GIB), "Authorization": f"Bearer {owner_key}",
                                                 "Accept": "application/json, text/event-stream"}))
    status, body = _read_response(raw)  # answered without the body (or this would hang)
    assert status == 413 and b"too large" in body


def test_the_agent_mcp_endpoint_cuts_a_chunked_body_off_and_still_serves_a_normal_one(
        api_server, owner_key, agent_mcp, raw) -> None:
    from concierge.gateway_server import MAX_REQUEST_BYTES

    raw.sendall(_headers(agent_mcp, api_server, {"Transfer-Encoding": "chunked", "Authorization": f"Bearer {owner_key}",
                                                 "Accept": "application/json, text/event-stream"}))
    sent = _send_chunks_until_answered(raw, most=2 * MAX_REQUEST_BYTES)
    status, _ = _read_response(raw)
    assert status == 413 and sent <= 2 * MAX_REQUEST_BYTES  # cut off at the limit, not at the SDK's 4 MiB
    # an ordinary initialize still works through the limit (the body is handed on whole)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    with api_server.client(owner_key) as c:
        answer = c.post(agent_mcp, json=init, headers={"Accept": "application/json, text/event-stream"})
    assert answer.status_code == 200, answer.text
    assert "serverInfo" in answer.text
