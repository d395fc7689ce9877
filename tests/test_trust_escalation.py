"""The cross-sandbox escalation of issue #12: an editor key of sandbox *attacker* registers a
source whose URL is the server's own per-agent MCP endpoint of sandbox *victim*. The server's
outbound requests come from 127.0.0.1 and, with ``allow_anonymous_loopback``, used to pass as an
anonymous owner: the attacker listed the victim's tools and called them with the victim's
stored credentials. Each layer that now stops it has its own test here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from concierge.backend import LocalBackend
from concierge.mcp_client.url_policy import UrlPolicy
from concierge.server import build_app
from concierge.server.auth import KeyStore
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import RunningServer, demo_app, free_port, serve_in_thread

SB = "/api/v1/storage/sandboxes"
VICTIM_TOKEN = "victim-canary-token-5c1e"


@pytest.fixture(scope="module")
def victim_mcp() -> Iterator[RunningServer]:
    with serve_in_thread(demo_app(token=VICTIM_TOKEN)) as srv:
        yield srv


def _serve(home: Path, **options: Any) -> tuple[RunningServer, LocalBackend]:
    """``build_app`` on loopback with anonymous loopback on, as ``serve --allow-anonymous-loopback``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "master.key").write_text(TEST_MASTER_KEY + "\n")
    backend = LocalBackend.open(str(home))
    port = options.pop("port", None) or free_port()
    app = build_app(backend_factory=lambda: backend, allow_anonymous_loopback=True, **options)
    server = RunningServer(app, factory=None, host="127.0.0.1", port=port)
    server.start()
    return server, backend


class _Unaware(UrlPolicy):
    """A policy that never learns Concierge's own addresses (the layer under test is another)."""

    def add_self(self, host: str, port: int) -> None:
        return None


def _setup_victim(owner: httpx2.Client, victim_url: str) -> None:
    for name in ("victim", "attacker"):
        assert owner.post(SB, json={"name": name}).status_code in (200, 201)
    r = owner.post(f"{SB}/victim/sources/user-mcp", json={
        "name": "Victim tools", "base_url": victim_url, "auth_kind": "bearer", "token": VICTIM_TOKEN,
        "app_namespace": "vic"})
    assert r.status_code == 200 and r.json()["status"] == "active", r.text
    assert owner.post(f"{SB}/victim/agents", json={"slug": "vbot"}).status_code in (200, 201)


def _attack(server: RunningServer, attacker: httpx2.Client) -> dict[str, Any]:
    """Register the victim's agent endpoint as a source of sandbox attacker; try to use it."""
    url = f"{server.url_base}{SB}/victim/agents/vbot/mcp"
    r = attacker.post(f"{SB}/attacker/sources/user-mcp", json={
        "name": "Loot", "base_url": url, "auth_kind": "none", "app_namespace": "loot"})
    out: dict[str, Any] = {"register": r}
    if r.status_code == 200:
        attacker.post(f"{SB}/attacker/agents", json={"slug": "abot"})
        out["tools"] = attacker.get(f"{SB}/attacker/agents/abot/tools").json()
        out["call"] = attacker.post(f"{SB}/attacker/agents/abot/tools/call", json={
            "name": "loot_vic_echo", "arguments": {"text": "stolen"}})
    return out


def test_a_source_at_the_servers_own_agent_endpoint_is_refused(tmp_path: Path, victim_mcp: RunningServer) -> None:
    """The server knows its bind address and port: the URL is refused at registration (400
    naming base_url), whatever the path, and nothing of the victim's is reached."""
    port = free_port()
    server, backend = _serve(tmp_path / "home", host="127.0.0.1", port=port,
                             anonymous_with_scoped_keys=True)
    try:
        keys = KeyStore(backend.registry.store)
        owner = httpx2.Client(base_url=server.url_base, timeout=30)
        _setup_victim(owner, victim_mcp.url())
        attacker_key = keys.create(role="editor", sandbox_id=backend.registry.get_sandbox("attacker").id)
        attacker = httpx2.Client(base_url=server.url_base, timeout=30,
                                 headers={"Authorization": f"Bearer {attacker_key.key}"})
        result = _attack(server, attacker)
        r = result["register"]
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["field"] == "base_url" and "Concierge" in body["detail"], body
        assert not [s for s in backend.registry.list_sources(sandbox="attacker")]
        for host in ("localhost", "[::1]", "0.0.0.0", "127.0.0.1", "2130706433", "0x7f000001"):
            for path in ("/", "/api/v1/storage/sandboxes/victim/agents/vbot/mcp", "/healthz"):
                r = attacker.post(f"{SB}/attacker/sources/user-mcp", json={
                    "name": "Loot", "base_url": f"http://{host}:{port}{path}", "auth_kind": "none"})
                assert r.status_code == 400 and r.json()["field"] == "base_url", (host, path, r.text)
        owner.close()
        attacker.close()
    finally:
        server.stop()


def test_the_servers_own_requests_are_never_an_anonymous_owner(tmp_path: Path, victim_mcp: RunningServer) -> None:
    """Even when the registry was not told the server's port (an app embedded without bind
    info, or a name that reaches it), a request the server makes itself is refused as
    anonymous: the health check fails, the victim's tools are not listed, the call fails."""
    server, backend = _serve(tmp_path / "home", anonymous_with_scoped_keys=True)
    try:
        keys = KeyStore(backend.registry.store)
        owner = httpx2.Client(base_url=server.url_base, timeout=30)
        _setup_victim(owner, victim_mcp.url())
        backend.registry.url_policy = _Unaware()  # as if it did not know where it listens
        attacker_key = keys.create(role="editor", sandbox_id=backend.registry.get_sandbox("attacker").id)
        attacker = httpx2.Client(base_url=server.url_base, timeout=30,
                                 headers={"Authorization": f"Bearer {attacker_key.key}"})
        result = _attack(server, attacker)
        r = result["register"]
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "error" and "401" in r.json()["health_error"], r.json()
        assert result["tools"]["tools"] == []
        assert result["call"].status_code in (409, 502), result["call"].text
        assert "stolen" not in result["call"].text
        owner.close()
        attacker.close()
    finally:
        server.stop()


def test_anonymous_loopback_is_refused_while_scoped_keys_exist(tmp_path: Path, victim_mcp: RunningServer) -> None:
    """With a sandbox-scoped (or non-owner) key in the database, anonymous loopback access is
    off unless the server was started with the explicit opt-in: every anonymous request is
    a 401 that names the flag."""
    server, backend = _serve(tmp_path / "home")
    try:
        owner = httpx2.Client(base_url=server.url_base, timeout=30)
        assert owner.get(SB).status_code == 200  # no scoped keys yet: anonymous works
        keys = KeyStore(backend.registry.store)
        keys.create(role="editor", sandbox_id=backend.registry.get_sandbox(None).id)
        r = owner.get(SB)
        assert r.status_code == 401, r.text
        assert "--allow-anonymous-loopback-with-scoped-keys" in r.json()["detail"]
        owner.close()
    finally:
        server.stop()


def test_a_key_does_not_make_the_servers_own_request_a_caller(tmp_path: Path, victim_mcp: RunningServer) -> None:
    """The attacker stores an owner key of their own as the source's token (a key that could
    do anything): the request the server sends itself is still refused."""
    server, backend = _serve(tmp_path / "home", anonymous_with_scoped_keys=True)
    try:
        keys = KeyStore(backend.registry.store)
        owner_key = keys.create(role="owner")
        owner = httpx2.Client(base_url=server.url_base, timeout=30,
                              headers={"Authorization": f"Bearer {owner_key.key}"})
        _setup_victim(owner, victim_mcp.url())
        backend.registry.url_policy = _Unaware()
        r = owner.post(f"{SB}/attacker/sources/user-mcp", json={
            "name": "Loop", "base_url": f"{server.url_base}{SB}/victim/agents/vbot/mcp", "auth_kind": "bearer",
            "token": owner_key.key, "app_namespace": "loop"})
        assert r.status_code == 200 and r.json()["status"] == "error", r.text
        assert "401" in r.json()["health_error"]
        owner.close()
    finally:
        server.stop()


def test_serve_refuses_anonymous_loopback_while_scoped_keys_exist(capsys: pytest.CaptureFixture[str]) -> None:
    from concierge.cli import main
    from concierge.cli.server_cmds import ANONYMOUS_WITH_SCOPED_KEYS_FLAG, check_bind
    from concierge.registry import Registry
    from concierge.server.auth import ANONYMOUS_WITH_SCOPED_KEYS_FLAG as SERVER_FLAG

    assert ANONYMOUS_WITH_SCOPED_KEYS_FLAG == SERVER_FLAG
    registry = Registry.open()
    try:
        KeyStore(registry.store).create(role="viewer")
    finally:
        registry.close()
    assert main(["serve", "--allow-anonymous-loopback", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert "--allow-anonymous-loopback is refused while 1 API key(s)" in err and SERVER_FLAG in err
    assert check_bind("127.0.0.1", active_keys=1, allow_anonymous_loopback=True, scoped_keys=1,
                      anonymous_with_scoped_keys=True) is None
    assert check_bind("127.0.0.1", active_keys=1, allow_anonymous_loopback=True, scoped_keys=0) is None
