"""OAuth and stdio sources over the HTTP API of a real `serve` app on loopback: register
answers ``auth_required`` with the link, the callback route finishes the sign-in; stdio
sources only with ``allow_stdio`` and an owner key; the CLI against the server (--api-url)."""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from concierge.server.auth import KeyStore
from tests.cli_fixtures import CliResult, run_cli
from tests.oauth_servers import OAuthServers, follow, oauth_servers
from tests.server_fixtures import ApiServer, start_api_server


@pytest.fixture
def servers() -> Iterator[OAuthServers]:
    with oauth_servers() as srv:
        yield srv


def _api(tmp_path: Path, **options: object) -> Iterator[ApiServer]:
    home = tmp_path / "api-home"
    server, registry = start_api_server(home, **options)
    api = ApiServer(server=server, home=home, keys=KeyStore(registry.store), registry=registry)
    try:
        yield api
    finally:
        api.close()
        server.stop()
        registry.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    yield from _api(tmp_path)


@pytest.fixture
def stdio_api(tmp_path: Path) -> Iterator[ApiServer]:
    yield from _api(tmp_path, allow_stdio=True)


SOURCES = "/api/v1/storage/sandboxes/default/sources"


def wait_status(client, source_id: str, status: str, timeout: float = 15) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        source = client.get(f"{SOURCES}/{source_id}").json()
        if source["status"] == status:
            return source  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"{source_id} is {source['status']}, not {status}")


def test_register_answers_the_link_and_the_callback_route_signs_in(api: ApiServer, servers: OAuthServers):
    client = api.client(api.key("editor"))
    answer = client.post(f"{SOURCES}/user-mcp", json={"name": "Acme", "base_url": servers.mcp_url,
                                                      "auth_kind": "oauth"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "auth_required" and body["authorize_url"].startswith(servers.as_url + "/authorize?")
    assert "open this link to sign in" in body["detail"]
    assert f"redirect_uri={api.url.replace(':', '%3A').replace('/', '%2F')}%2Fapi%2Fv1%2Foauth%2Fcallback" \
        in body["authorize_url"]
    page = anyio.run(follow, body["authorize_url"])  # the browser lands on serve's callback route
    assert page.status_code == 200 and "Signed in" in page.text
    source = wait_status(client, body["data_source_id"], "active")
    assert source["signed_in"] is True and source["tool_count"] == 4
    for token in servers.auth.issued:
        assert token not in answer.text + client.get(f"{SOURCES}/{body['data_source_id']}").text
    # the same link again: nobody waits for it any more
    again = anyio.run(follow, body["authorize_url"])
    assert "No sign-in is waiting" in again.text and "Signed in" not in again.text

    # a new sign-in on request (e.g. after a refused refresh)
    started = client.post(f"{SOURCES}/{body['data_source_id']}/user-mcp/authorize")
    assert started.status_code == 200 and started.json()["authorize_url"].startswith(servers.as_url)


def test_the_callback_route_needs_no_key_and_refuses_unknown_states(api: ApiServer):
    anonymous = api.client()
    answer = anonymous.get("/api/v1/oauth/callback", params={"code": "x", "state": "forged"})
    assert answer.status_code == 200 and "No sign-in is waiting" in answer.text
    assert answer.headers["cache-control"] == "no-store" and answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["content-type"].startswith("text/html")


def test_serve_refuses_stdio_sources_without_allow_stdio(api: ApiServer):
    client = api.client(api.key("owner"))
    answer = client.post(f"{SOURCES}/user-mcp", json={
        "name": "Time", "transport": "stdio", "auth_kind": "none", "command": sys.executable,
        "args": ["-m", "mcp_server_time"]})
    assert answer.status_code == 403 and "--allow-stdio" in answer.json()["detail"]
    assert client.get(SOURCES).json()["items"] == []


def test_with_allow_stdio_only_owners_register_stdio_sources(stdio_api: ApiServer):
    body = {"name": "Time", "transport": "stdio", "auth_kind": "none", "command": sys.executable,
            "args": ["-m", "mcp_server_time"], "secret_env": {"TIME_KEY": "test-token-http-4242"}}
    editor = stdio_api.client(stdio_api.key("editor"))
    refused = editor.post(f"{SOURCES}/user-mcp", json=body)
    assert refused.status_code == 403 and "needs the owner role" in refused.json()["detail"]
    owner = stdio_api.client(stdio_api.key("owner"))
    answer = owner.post(f"{SOURCES}/user-mcp", json=body)
    assert answer.status_code == 200 and answer.json()["status"] == "active", answer.text
    source_id = answer.json()["data_source_id"]
    shown = owner.get(f"{SOURCES}/{source_id}").json()
    assert shown["command_line"] == f"{sys.executable} -m mcp_server_time" and shown["secret_env"] == ["TIME_KEY"]
    assert "test-token-http" not in answer.text + str(shown)
    changed = editor.patch(f"{SOURCES}/{source_id}/user-mcp", json={"args": ["-m", "other"]})
    assert changed.status_code == 403
    assert editor.patch(f"{SOURCES}/{source_id}/user-mcp", json={"name": "Clock"}).status_code == 200


def test_the_cli_signs_in_through_the_server(api: ApiServer, servers: OAuthServers):
    key = api.key("editor")
    err = io.StringIO()
    box: dict[str, CliResult] = {}
    args = ("--api-url", api.url, "source", "user-mcp", "add", "Acme", "--url", servers.mcp_url,
            "--auth", "oauth")
    runner = threading.Thread(target=lambda: box.setdefault("r", run_cli(
        *args, env={"CONCIERGE_API_KEY": key.key}, stderr=err)))
    runner.start()
    deadline = time.monotonic() + 30
    match = None
    while match is None and time.monotonic() < deadline:
        match = re.search(r"Open this URL to authorize: (\S+)", err.getvalue())
        time.sleep(0.02)
    assert match is not None, err.getvalue()
    page = anyio.run(follow, match.group(1))
    assert page.status_code == 200
    runner.join(30)
    result = box["r"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "status=active" in result.stdout
