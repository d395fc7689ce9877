"""One backend test-suite, run against `LocalBackend` and against `RemoteBackend` talking to a
real ``concierge serve`` app on loopback: same answers, same errors, same messages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from concierge.backend import Backend, LocalBackend
from concierge.errors import (
    Conflict,
    ConciergeError,
    ConnectorError,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from concierge.registry import Registry
from concierge.registry.models import RegisteredOutcome
from concierge.remote import RemoteBackend
from concierge.server.auth import KeyStore
from tests.conftest import TEST_MASTER_KEY
from tests.mcp_servers import RunningServer, closed_port_url, demo_app, free_port, serve_in_thread
from tests.cli_fixtures import CliResult, run_cli
from tests.server_fixtures import BEARER_CANARY, start_api_server

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("engine")]


@pytest.fixture(params=["local", "remote"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    home = tmp_path / "home"
    if request.param == "local":
        home.mkdir()
        local = LocalBackend(Registry.open(home))
        yield local
        await local.aclose()
        return
    server, registry = start_api_server(home)
    key = KeyStore(registry.store).create(role="owner")
    remote = RemoteBackend(server.url_base, api_key=key.key, timeout=20)
    try:
        yield remote
    finally:
        await remote.aclose()
        server.stop()
        registry.close()


def bearer(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "Acme", "base_url": url, "auth_kind": "bearer", "token": BEARER_CANARY, **extra}


def dump(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps([v.model_dump(mode="json") for v in value])
    return json.dumps(value.model_dump(mode="json"))


async def test_sandboxes(backend: Backend):
    assert (await backend.get_sandbox()).name == "default"
    made = await backend.create_sandbox("team-a")
    assert made.name == "team-a" and made.id.startswith("sb_")
    assert [s.name for s in await backend.list_sandboxes()] == ["default", "team-a"]
    assert (await backend.get_sandbox("team-a")).id == made.id
    assert (await backend.get_sandbox(made.id)).name == "team-a"
    with pytest.raises(Conflict, match="already exists"):
        await backend.create_sandbox("team-a")
    with pytest.raises(ValidationFailed, match="sandbox name") as bad:
        await backend.create_sandbox("no spaces please")
    assert bad.value.field == "name"
    with pytest.raises(NotFound, match="no sandbox 'ghost'"):
        await backend.get_sandbox("ghost")


async def test_register_show_list(backend: Backend, demo_mcp: RunningServer):
    out = await backend.register_source(bearer(demo_mcp.url(), app_namespace="acme"))
    assert out.status == "active" and out.health_error is None and out.detail.startswith("healthy: 4 tools")
    assert isinstance(out, RegisteredOutcome) and out.webhook_secret is not None
    assert "webhook_secret" not in out.model_dump()  # shown once, never passed on by accident
    sid = out.data_source_id
    src = await backend.get_source(sid)
    assert (src.name, src.status, src.has_token, src.tool_count, src.app_namespace) == (
        "Acme", "active", True, 4, "acme")
    assert src.token_last4 == BEARER_CANARY[-4:]
    assert (await backend.get_source(sid, sandbox="default")).id == sid
    assert [s.id for s in await backend.list_sources()] == [sid]
    assert [s.id for s in await backend.list_sources(sandbox="default", status="active")] == [sid]
    assert await backend.list_sources(status="paused") == []
    with pytest.raises(ValidationFailed, match="status must be one of"):
        await backend.list_sources(status="sleepy")
    await backend.create_sandbox("other")
    with pytest.raises(NotFound, match="in sandbox 'other'"):
        await backend.get_source(sid, sandbox="other")
    with pytest.raises(NotFound):
        await backend.get_source("ds_01UNKNOWN000000000000000000")
    assert BEARER_CANARY not in dump(await backend.list_sources()) + dump(src) + dump(out)


async def test_registration_errors(backend: Backend, open_mcp: RunningServer):
    with pytest.raises(ValidationFailed, match="must use https") as exc:
        await backend.register_source({"name": "x", "base_url": "http://mcp.example.com/mcp", "auth_kind": "none"})
    assert exc.value.field == "base_url"
    with pytest.raises(ValidationFailed, match="token is required") as exc:
        await backend.register_source({"name": "x", "base_url": open_mcp.url(), "auth_kind": "bearer"})
    failed = await backend.register_source({"name": "down", "base_url": closed_port_url(), "auth_kind": "none",
                                            "connect_timeout": 2})
    assert failed.status == "error" and "connection_refused" in failed.health_error
    assert (await backend.get_source(failed.data_source_id)).status == "error"  # kept, to fix later
    await backend.register_source({"name": "a", "base_url": open_mcp.url(), "auth_kind": "none",
                                   "app_namespace": "taken"})
    with pytest.raises(Conflict, match="already used") as clash:
        await backend.register_source({"name": "b", "base_url": open_mcp.url(), "auth_kind": "none",
                                       "app_namespace": "taken"})
    assert clash.value.error == "namespace_taken"


async def test_lifecycle(backend: Backend, demo_mcp: RunningServer, open_mcp: RunningServer):
    sid = (await backend.register_source(bearer(demo_mcp.url()))).data_source_id
    renamed = await backend.update_source(sid, {"name": "Acme prod", "rate_cap_per_minute": 30})
    assert (renamed.name, renamed.detail) == ("Acme prod", "updated")
    rotated = await backend.update_source(sid, {"token": BEARER_CANARY + "-wrong"})
    assert rotated.status == "error" and "401" in rotated.health_error
    assert (await backend.update_source(sid, {"token": BEARER_CANARY})).status == "active"
    with pytest.raises(ValidationFailed, match="nothing to update"):
        await backend.update_source(sid, {})
    assert (await backend.test_source(sid)).status == "active"
    assert (await backend.pause_source(sid)).status == "paused"
    assert (await backend.pause_source(sid)).detail == "already paused"
    assert (await backend.resume_source(sid)).status == "active"
    revoked = await backend.revoke_source(sid)
    assert revoked.status == "disconnected"
    assert (await backend.revoke_source(sid)).detail == "already revoked"
    for call in (backend.test_source(sid), backend.resume_source(sid), backend.update_source(sid, {"name": "x"})):
        with pytest.raises(Conflict, match="revoked"):
            await call
    assert not (await backend.get_source(sid)).has_token
    await backend.delete_source(sid)
    with pytest.raises(NotFound):
        await backend.get_source(sid)
    actions = [e.action for e in await backend.audit(limit=100)]
    for action in ("source.register", "source.update", "source.test", "source.pause", "source.resume",
                   "source.revoke", "source.delete"):
        assert action in actions
    assert len(await backend.audit(limit=2)) == 2
    assert BEARER_CANARY not in dump(await backend.audit(limit=100))


async def test_agents(backend: Backend):
    agent = await backend.create_agent({"slug": "support", "tool_allowlist": ["acme_*"]})
    assert (agent.slug, agent.name, agent.tool_sources) == ("support", "support", ["user_mcp"])
    assert [a.slug for a in await backend.list_agents()] == ["support"]
    assert (await backend.get_agent("support")).id == agent.id
    updated = await backend.update_agent("support", {"name": "Support bot", "tool_allowlist": []})
    assert (updated.name, updated.tool_allowlist) == ("Support bot", [])
    with pytest.raises(Conflict, match="already exists"):
        await backend.create_agent({"slug": "support"})
    with pytest.raises(ValidationFailed):
        await backend.create_agent({"slug": "Bad Slug!"})
    with pytest.raises(NotFound, match="no agent 'ghost'"):
        await backend.get_agent("ghost")


async def test_catalog_calls_and_pull(backend: Backend, demo_mcp: RunningServer):
    out = await backend.register_source(bearer(
        demo_mcp.url(), app_namespace="acme", rate_cap_per_minute=2,
        ingest_tool_calls=[{"name": "echo", "arguments": {"text": "pulled"}}]))
    await backend.create_agent({"slug": "support", "tool_allowlist": ["acme_echo", "acme_missing"]})
    catalog = await backend.agent_tools("support")
    assert [t.name for t in catalog.tools] == ["acme_echo"] and catalog.count == 1
    assert catalog.trace.allowlist_missing_entries == ["acme_missing"]
    assert catalog.trace.sources_resolved == [out.data_source_id]
    everything = await backend.agent_tools(None, app="acme")
    assert everything.count == 4 and everything.by_app == {"acme": sorted(everything.by_app["acme"])}
    result = await backend.call_tool("acme_echo", {"text": "hello"}, agent="support")
    assert not result.is_error and "hello" in result.text and result.original_name == "echo"
    with pytest.raises(PermissionDenied, match="tool_allowlist"):
        await backend.call_tool("acme_search_docs", {"query": "x"}, agent="support")
    pulled = await backend.pull_source(out.data_source_id)
    assert (pulled.calls, pulled.stored) == (1, 1)
    with pytest.raises(RateLimited) as limited:  # the cap of 2 is spent (one call, one pull)
        await backend.call_tool("acme_echo", {"text": "again"}, agent="support")
    assert limited.value.retry_after > 0
    with pytest.raises(NotFound):
        await backend.agent_tools("ghost")


async def test_a_dead_server_is_a_connector_error(backend: Backend):
    port = free_port()
    with serve_in_thread(demo_app(), port=port) as srv:
        sid = (await backend.register_source({"name": "brief", "base_url": srv.url(), "auth_kind": "none",
                                              "app_namespace": "brief", "connect_timeout": 2})).data_source_id
        await backend.create_agent({"slug": "a"})
        assert (await backend.call_tool("brief_echo", {"text": "up"}, agent="a")).text
    with pytest.raises(ConnectorError) as exc:
        await backend.call_tool("brief_echo", {"text": "down"}, agent="a")
    assert exc.value.kind == "connection_refused" and sid


async def test_errors_are_identical_across_backends(tmp_path: Path, open_mcp: RunningServer):
    """The same failing calls raise the same class, code and sentence locally and remotely."""
    server, registry = start_api_server(tmp_path / "shared")
    key = KeyStore(registry.store).create(role="owner")
    local = LocalBackend(Registry.open(tmp_path / "shared"))
    remote = RemoteBackend(server.url_base, api_key=key.key)
    failing = [
        lambda b: b.register_source({"name": "x", "base_url": "http://mcp.example.com", "auth_kind": "none"}),
        lambda b: b.register_source({"name": "x", "base_url": open_mcp.url(), "auth_kind": "header_token",
                                     "token": "abcdefgh"}),
        lambda b: b.register_source({"name": "x", "base_url": open_mcp.url(), "auth_kind": "none",
                                     "rate_cap_per_minute": 0}),
        lambda b: b.get_source("ds_01NOPE00000000000000000000"),
        lambda b: b.get_sandbox("ghost"),
        lambda b: b.create_sandbox("default"),
        lambda b: b.get_agent("ghost"),
        lambda b: b.list_sources(status="nope"),
    ]
    try:
        for make in failing:
            seen = []
            for b in (local, remote):
                with pytest.raises(ConciergeError) as exc:
                    await make(b)
                seen.append((type(exc.value), exc.value.error, exc.value.detail,
                             getattr(exc.value, "field", None)))
            assert seen[0] == seen[1]
    finally:
        await local.aclose()
        await remote.aclose()
        server.stop()
        registry.close()


async def test_remote_backend_reports_auth_and_connection_problems(tmp_path: Path):
    server, registry = start_api_server(tmp_path / "auth")
    try:
        nokey = RemoteBackend(server.url_base)
        with pytest.raises(PermissionDenied, match="API key is required") as exc:
            await nokey.list_sandboxes()
        assert exc.value.error == "unauthorized"
        await nokey.aclose()
        viewer = KeyStore(registry.store).create(role="viewer")
        readonly = RemoteBackend(server.url_base, api_key=viewer.key)
        assert [s.name for s in await readonly.list_sandboxes()] == ["default"]
        with pytest.raises(PermissionDenied, match="editor role"):
            await readonly.create_agent({"slug": "x"})
        await readonly.aclose()
    finally:
        server.stop()
        registry.close()
    gone = RemoteBackend(server.url_base, timeout=2)
    with pytest.raises(ConciergeError, match="cannot reach the concierge server") as exc:
        await gone.list_sandboxes()
    assert exc.value.error == "connection_error"
    await gone.aclose()


# -- the CLI over --api-url -------------------------------------------------------------------

def _cli(home: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> CliResult:
    return run_cli(*args, home=home, stdin=stdin,
                   env={"CONCIERGE_MASTER_KEY": TEST_MASTER_KEY, "CONCIERGE_API_URL": None, **(env or {})})


@pytest.fixture
def remote_cli(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    server, registry = start_api_server(tmp_path / "served")
    key = KeyStore(registry.store).create(role="editor")
    try:
        yield server.url_base, {"CONCIERGE_API_KEY": key.key}
    finally:
        server.stop()
        registry.close()


def test_the_cli_prints_the_same_against_a_remote_server(tmp_path, remote_cli, demo_mcp):
    url, env = remote_cli
    local_home, client_home = tmp_path / "local", tmp_path / "client"
    bad = ["source", "user-mcp", "add", "X", "--url", "http://mcp.example.com/mcp", "--auth", "none"]
    here = _cli(local_home, *bad)
    there = _cli(client_home, *bad, "--api-url", url, env=env)
    assert (here.returncode, here.stderr) == (there.returncode, there.stderr) == (1, here.stderr)
    assert "must use https" in there.stderr

    add = ["source", "user-mcp", "add", "Demo", "--url", demo_mcp.url(), "--auth", "bearer",
           "--token-stdin", "--namespace", "demo", "--json"]
    added = _cli(client_home, *add, "--api-url", url, env=env, stdin=BEARER_CANARY + "\n")
    assert added.returncode == 0, added.stderr
    outcome = json.loads(added.stdout)
    assert outcome["status"] == "active" and BEARER_CANARY not in added.stdout + added.stderr
    listed = _cli(client_home, "source", "list", "--api-url", url, env=env)
    assert "Demo" in listed.stdout and outcome["data_source_id"] in listed.stdout
    assert not (client_home / "concierge.db").exists()  # nothing was stored on the client side
    nokey = _cli(client_home, "source", "list", "--api-url", url)
    assert nokey.returncode == 1 and "API key is required" in nokey.stderr


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_api_url_sends_a_write_to_the_server_wherever_it_is_given(tmp_path, remote_cli, where):
    url, env = remote_cli
    client_home = tmp_path / "client"
    command = ["agent", "create", "support", "--json"]  # an editor key may do this
    if where == "before":
        res = _cli(client_home, "--api-url", url, *command, env=env)
    elif where == "after":
        res = _cli(client_home, *command, "--api-url", url, env=env)
    else:
        res = _cli(client_home, *command, env={**env, "CONCIERGE_API_URL": url})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["slug"] == "support"
    listed = _cli(client_home, "agent", "list", "--json", "--api-url", url, env=env)
    assert [a["slug"] for a in json.loads(listed.stdout)["items"]] == ["support"]
    assert not (client_home / "concierge.db").exists()  # nothing was written locally


def test_the_api_url_flag_wins_over_the_environment_and_the_settings_file(tmp_path, remote_cli):
    url, env = remote_cli
    settings = tmp_path / "settings.toml"
    settings.write_text('api_url = "http://127.0.0.1:9"\n')  # nothing listens on the discard port
    unreachable = _cli(tmp_path / "c1", "sandbox", "list", env={**env, "CONCIERGE_CONFIG": str(settings)})
    assert unreachable.returncode == 1 and "cannot reach the concierge server at http://127.0.0.1:9" in unreachable.stderr
    via_env = _cli(tmp_path / "c2", "sandbox", "list", "--json",
                   env={**env, "CONCIERGE_CONFIG": str(settings), "CONCIERGE_API_URL": url})
    assert via_env.returncode == 0, via_env.stderr
    via_flag = _cli(tmp_path / "c3", "--api-url", url, "sandbox", "list", "--json",
                    env={**env, "CONCIERGE_CONFIG": str(settings), "CONCIERGE_API_URL": "http://127.0.0.1:9"})
    assert via_flag.returncode == 0, via_flag.stderr
