"""Webhooks over real HTTP: the secret issued once at registration, HMAC-SHA256 signatures,
replays acknowledged but stored once, the per-source cap, rotation, revoke."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from typing import Any

import httpx2
import pytest


from concierge.registry.vault import webhook_key
from concierge.registry.webhooks import sign
from tests.mcp_servers import RunningServer
from tests.server_fixtures import ApiServer

pytestmark = pytest.mark.usefixtures("engine")

SB = "/api/v1/storage/sandboxes"


@pytest.fixture(scope="module")
def owner(api_server: ApiServer) -> httpx2.Client:
    return api_server.client(api_server.key("owner"))


@pytest.fixture
def source(owner: httpx2.Client, open_mcp: RunningServer, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A fresh source; ``request.param`` may carry extra registration fields."""
    extra = getattr(request, "param", {})
    ns = "wh" + hashlib.sha1(request.node.name.encode()).hexdigest()[:8]
    out = owner.post(f"{SB}/default/sources/user-mcp", json={
        "name": "hooks", "base_url": open_mcp.url(), "auth_kind": "none", "app_namespace": ns, **extra}).json()
    assert out["status"] == "active"
    return out


def deliver(api: ApiServer, source_id: str, secret: str, payload: Any, *, event_id: str | None = None,
            ts: int | None = None, body: bytes | None = None, signature: str | None = None) -> httpx2.Response:
    raw = body if body is not None else json.dumps(payload).encode()
    stamp = str(ts if ts is not None else int(time.time()))
    headers = {"Content-Type": "application/json", "X-Concierge-Timestamp": stamp,
               "X-Concierge-Signature": signature or sign(secret, stamp, raw, event_id=event_id or "")}
    if event_id:
        headers["X-Concierge-Event-Id"] = event_id
    with httpx2.Client(base_url=api.url) as c:  # no API key: senders only sign
        return c.post(f"/api/v1/webhooks/user-mcp/{source_id}", content=raw, headers=headers)


def events(owner: httpx2.Client, source_id: str) -> list[dict[str, Any]]:
    return owner.get(f"{SB}/default/sources/{source_id}/webhook-events").json()["items"]


def test_the_signature_is_hmac_sha256_over_timestamp_event_id_and_body():
    expected = hmac.new(b"whsec_k", b"1700000000.evt_1.{\"a\":1}", hashlib.sha256).hexdigest()
    assert sign("whsec_k", 1700000000, b'{"a":1}', event_id="evt_1") == f"sha256={expected}"
    in_body = hmac.new(b"whsec_k", b"1700000000..{\"id\":1}", hashlib.sha256).hexdigest()
    assert sign("whsec_k", 1700000000, b'{"id":1}') == f"sha256={in_body}"


def test_a_signed_event_is_stored_and_a_replay_is_acknowledged_once(api_server, owner, source):
    sid, secret = source["data_source_id"], source["webhook_secret"]
    first = deliver(api_server, sid, secret, {"type": "doc.created", "n": 1}, event_id="evt_1")
    assert first.status_code == 200 and first.json() == {
        "status": "stored", "event_id": "evt_1", "data_source_id": sid}
    again = deliver(api_server, sid, secret, {"type": "doc.created", "n": 1}, event_id="evt_1")
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    by_body = deliver(api_server, sid, secret, {"id": "evt_2", "type": "doc.deleted"})
    assert by_body.json()["event_id"] == "evt_2"
    stored = events(owner, sid)
    assert [e["event_id"] for e in stored] == ["evt_2", "evt_1"]
    assert stored[1]["payload"] == {"type": "doc.created", "n": 1}
    r = deliver(api_server, sid, secret, {"type": "no id"})
    assert r.status_code == 400 and r.json()["field"] == "event_id"


def test_bad_signatures_are_refused_and_nothing_is_stored(api_server, owner, source):
    sid, secret = source["data_source_id"], source["webhook_secret"]
    payload = {"id": "evt_bad"}
    raw = json.dumps(payload).encode()
    ts = int(time.time())
    attempts = [
        deliver(api_server, sid, "whsec_not-the-secret", payload),
        deliver(api_server, sid, secret, payload, body=raw + b" ", signature=sign(secret, ts, raw), ts=ts),
        deliver(api_server, sid, secret, payload, ts=ts - 301),  # signed, but too old
        deliver(api_server, sid, secret, payload, signature="sha256=" + "0" * 64),
    ]
    for r in attempts:
        assert r.status_code == 401 and r.json()["error"] == "invalid_signature", r.text
    with httpx2.Client(base_url=api_server.url) as c:
        unsigned = c.post(f"/api/v1/webhooks/user-mcp/{sid}", json=payload)
    assert unsigned.status_code == 401 and "missing" in unsigned.json()["detail"]
    assert events(owner, sid) == []
    assert deliver(api_server, sid, secret, payload).json()["status"] == "stored"  # the real one works


@pytest.mark.parametrize("source", [{"webhook_rate_cap_per_minute": 2}], indirect=True)
def test_the_cap_is_the_sources_webhook_rate_cap(api_server, owner, source):
    sid, secret = source["data_source_id"], source["webhook_secret"]
    assert [deliver(api_server, sid, secret, {"id": f"e{i}"}).status_code for i in range(2)] == [200, 200]
    capped = deliver(api_server, sid, secret, {"id": "e2"})
    assert capped.status_code == 429 and capped.json()["error"] == "rate_limited"
    assert int(capped.headers["retry-after"]) >= 1 and capped.json()["retry_after"] > 0
    # A replay of a stored event is still acknowledged (it costs nothing) and not stored again.
    assert deliver(api_server, sid, secret, {"id": "e0"}).json()["status"] == "duplicate"
    assert len(events(owner, sid)) == 2
    # Raising the cap starts a fresh bucket.
    owner.patch(f"{SB}/default/sources/{sid}/user-mcp", json={"webhook_rate_cap_per_minute": 100})
    assert deliver(api_server, sid, secret, {"id": "e2"}).json()["status"] == "stored"


def test_rotation_replaces_the_secret_at_once(api_server, owner, source):
    sid, old = source["data_source_id"], source["webhook_secret"]
    rotated = owner.post(f"{SB}/default/sources/{sid}/user-mcp/webhook-secret")
    assert rotated.status_code == 200
    new = rotated.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != old
    assert deliver(api_server, sid, old, {"id": "r1"}).status_code == 401
    assert deliver(api_server, sid, new, {"id": "r1"}).json()["status"] == "stored"
    viewer = api_server.client(api_server.key("viewer"))
    assert viewer.post(f"{SB}/default/sources/{sid}/user-mcp/webhook-secret").status_code == 403
    shown = owner.get(f"{SB}/default/sources/{sid}").text + owner.get(f"{SB}/default/audit").text
    assert new not in shown and old not in shown
    assert "source.webhook_secret_rotate" in [e["action"] for e in owner.get(f"{SB}/default/audit").json()["items"]]


def test_revoke_deletes_the_secret_and_the_endpoint(api_server, owner, source):
    sid, secret = source["data_source_id"], source["webhook_secret"]
    assert deliver(api_server, sid, secret, {"id": "v1"}).status_code == 200
    assert sid in api_server.services.webhooks.limiter  # the bucket exists ...
    owner.post(f"{SB}/default/sources/{sid}/user-mcp/revoke")
    assert sid not in api_server.services.webhooks.limiter  # ... and revoke evicted it
    assert api_server.registry.store.query("SELECT key FROM vault WHERE key = ?", (webhook_key(sid),)) == []
    gone = deliver(api_server, sid, secret, {"id": "v2"})
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert owner.post(f"{SB}/default/sources/{sid}/user-mcp/webhook-secret").status_code == 409
    owner.delete(f"{SB}/default/sources/{sid}")
    assert api_server.registry.store.query("SELECT * FROM webhook_events WHERE source_id = ?", (sid,)) == []


def test_unknown_paused_and_oversized(api_server, owner, source):
    sid, secret = source["data_source_id"], source["webhook_secret"]
    assert deliver(api_server, "ds_01NOSUCH000000000000000000", secret, {"id": "x"}).status_code == 404
    owner.post(f"{SB}/default/sources/{sid}/pause")
    paused = deliver(api_server, sid, secret, {"id": "p1"})
    assert paused.status_code == 409 and paused.json()["error"] == "source_inactive"
    owner.post(f"{SB}/default/sources/{sid}/resume")
    big = deliver(api_server, sid, secret, {"id": "big", "blob": "x" * (256 * 1024)})
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
    assert events(owner, sid) == []


def test_concurrent_deliveries_of_one_event_store_one_row(api_server, owner, source):
    sid, secret = source["data_source_id"], source["webhook_secret"]
    statuses: list[str] = []

    def send() -> None:
        statuses.append(deliver(api_server, sid, secret, {"id": "same"}).json()["status"])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == ["duplicate"] * 7 + ["stored"]
    assert len(events(owner, sid)) == 1
