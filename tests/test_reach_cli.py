"""OAuth and stdio sources through the real CLI (in-process), against the SDK-built OAuth
servers of tests/oauth_servers.py and the third-party stdio server ``mcp-server-time``.

A sign-in is followed as a person would: the test reads the URL the command prints on
standard error while the command waits, and opens it with an HTTP client."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from concierge.registry import Registry
from tests.cli_fixtures import CliResult, run_cli
from tests.oauth_servers import OAuthServers, follow, oauth_servers

URL_LINE = re.compile(r"Open this URL to authorize: (\S+)")


@pytest.fixture
def servers() -> Iterator[OAuthServers]:
    with oauth_servers() as srv:
        yield srv


def cli(home: Path, *args: str, stdin: str | None = None) -> CliResult:
    return run_cli(*args, home=home, stdin=stdin)


def signing_in(home: Path, *args: str, stdin: str | None = None, deny: bool = False) -> tuple[CliResult, str]:
    """Run a command that prints a sign-in URL and waits; open the URL (a person's browser)
    while it waits; the command's result and the URL."""
    err = io.StringIO()
    box: dict[str, CliResult] = {}
    runner = threading.Thread(target=lambda: box.setdefault("r", run_cli(*args, home=home, stdin=stdin,
                                                                          stderr=err)))
    runner.start()
    deadline = time.monotonic() + 30
    url = None
    while url is None and time.monotonic() < deadline and runner.is_alive():
        match = URL_LINE.search(err.getvalue())
        url = match.group(1) if match else None
        time.sleep(0.02)
    assert url is not None, err.getvalue()
    page = anyio.run(follow, url)
    assert page.status_code == (200 if not deny else 400) or "Signed in" in page.text, page.text[:200]
    runner.join(30)
    assert not runner.is_alive()
    return box["r"], url


def source_id_of(result: CliResult) -> str:
    last = json.loads(result.stdout[result.stdout.index("\n{") + 1:] if "\n{" in result.stdout
                      else result.stdout)
    return str(last["data_source_id"])


def vault_values(home: Path, source_id: str) -> list[str]:
    """Every secret the vault holds for the source, decrypted (to look for them elsewhere)."""
    registry = Registry.open(home)
    try:
        keys = [r["key"] for r in registry.store.query("SELECT key FROM vault WHERE key LIKE ?",
                                                        (f"user_mcp/{source_id}/%",))]
        return [v for v in (registry.vault.get(k) for k in keys) if v]
    finally:
        registry.close()


# -- OAuth -----------------------------------------------------------------------------------------

def test_add_with_oauth_prints_the_link_waits_and_runs_the_health_check(servers: OAuthServers, tmp_path: Path):
    home = tmp_path / "home"
    result, url = signing_in(home, "source", "user-mcp", "add", "Acme", "--url", servers.mcp_url,
                             "--auth", "oauth", "--scope", "mcp", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert json.loads(first) == {"authorize_url": url}  # first, before the outcome
    outcome = json.loads(rest)
    assert outcome["status"] == "active" and "healthy: 4 tools" in outcome["detail"]
    assert f"Open this URL to authorize: {url}" in result.stderr
    assert url.startswith(servers.as_url + "/authorize?") and "code_challenge=" in url

    shown = json.loads(cli(home, "source", "show", outcome["data_source_id"], "--json").stdout)
    assert shown["auth_kind"] == "oauth" and shown["signed_in"] is True and shown["grant"] == "authorization_code"
    assert shown["scopes"] == ["mcp"] and shown["status"] == "active"
    [listed] = json.loads(cli(home, "source", "list", "--json").stdout)["items"]
    assert listed["signed_in"] is True  # (read for the whole list in one query)
    # tokens, refresh tokens and the registered client are in the vault, and nowhere else
    secrets = vault_values(home, outcome["data_source_id"])
    issued = servers.auth.issued
    assert issued and all(any(t in v for v in secrets) for t in issued[-2:])
    audit = cli(home, "audit", "--json", "--limit", "50").stdout
    for token in issued:
        assert token not in result.stdout + result.stderr + audit + json.dumps(shown)

    tools = cli(home, "agent", "tools", "--json")
    assert tools.returncode == 0 and "whoami" in tools.stdout

    # revoke deletes every stored token (and the registered client)
    assert cli(home, "source", "user-mcp", "revoke", outcome["data_source_id"]).returncode == 0
    assert vault_values(home, outcome["data_source_id"]) == []


def test_no_wait_leaves_the_source_auth_required_and_authorize_signs_it_in(servers: OAuthServers, tmp_path: Path):
    home = tmp_path / "home"
    added = cli(home, "source", "user-mcp", "add", "Acme", "--url", servers.mcp_url, "--auth", "oauth",
                "--no-wait")
    assert added.returncode == 1
    source_id = added.stdout.split()[0]
    assert "status=auth_required" in added.stdout
    assert f"sign in with: concierge source user-mcp authorize {source_id}" in added.stdout
    listed = cli(home, "source", "list", "--status", "auth_required", "--json")
    assert [s["id"] for s in json.loads(listed.stdout)["items"]] == [source_id]
    trace = json.loads(cli(home, "agent", "tools", "--trace", "--json").stdout)
    [skipped] = trace["trace"]["sources_skipped"]
    assert skipped["reason"] == "auth_required" and "nobody has signed in" in skipped["detail"]

    result, _ = signing_in(home, "source", "user-mcp", "authorize", source_id)
    assert result.returncode == 0, result.stderr
    assert "status=active" in result.stdout


def test_an_expired_token_is_refreshed_and_a_revoked_refresh_token_gives_auth_required(tmp_path: Path):
    home = tmp_path / "home"
    with oauth_servers(access_ttl=2) as srv:
        result, _ = signing_in(home, "source", "user-mcp", "add", "Acme", "--url", srv.mcp_url, "--auth", "oauth",
                               "--namespace", "acme")
        assert result.returncode == 0, result.stderr
        source_id = result.stdout.split()[0]
        assert cli(home, "agent", "create", "bot").returncode == 0
        call = cli(home, "tool", "call", "acme_whoami", "--agent", "bot", "--json")
        assert call.returncode == 0, call.stderr
        time.sleep(2.2)  # the access token has expired now
        before = len(srv.auth.kinds("token"))
        call = cli(home, "tool", "call", "acme_whoami", "--agent", "bot", "--json")
        assert call.returncode == 0, call.stdout + call.stderr
        assert [e["grant"] for e in srv.auth.kinds("token")[before:]] == ["refresh_token"]

        srv.auth.revoke_refresh_tokens()
        srv.auth.expire_access_tokens()
        time.sleep(0.1)
        tested = cli(home, "source", "user-mcp", "test", source_id)
        assert tested.returncode == 1
        assert "status=auth_required" in tested.stdout and "sign in again" in tested.stdout
        shown = json.loads(cli(home, "source", "show", source_id, "--json").stdout)
        assert shown["status"] == "auth_required" and shown["health_error_kind"] == "auth_required"
        trace = json.loads(cli(home, "agent", "tools", "--trace", "--json").stdout)
        assert trace["tools"] == [] and trace["trace"]["sources_skipped"][0]["reason"] == "auth_required"


def test_a_refused_refresh_during_a_call_marks_the_source(tmp_path: Path):
    home = tmp_path / "home"
    with oauth_servers(access_ttl=2) as srv:
        result, _ = signing_in(home, "source", "user-mcp", "add", "Acme", "--url", srv.mcp_url, "--auth", "oauth",
                               "--namespace", "acme")
        source_id = result.stdout.split()[0]
        cli(home, "agent", "create", "bot")
        srv.auth.revoke_refresh_tokens()
        srv.auth.expire_access_tokens()
        call = cli(home, "tool", "call", "acme_whoami", "--agent", "bot")
        assert call.returncode == 1 and "sign in again" in call.stderr
        shown = json.loads(cli(home, "source", "show", source_id, "--json").stdout)
        assert shown["status"] == "auth_required" and "sign in again" in shown["health_error"]


def test_client_credentials_need_no_person(tmp_path: Path):
    home = tmp_path / "home"
    with oauth_servers() as srv:
        client_id, secret = srv.auth.add_client(grant_types=["client_credentials"], auth_method="client_secret_basic")
        assert secret is not None
        added = cli(home, "source", "user-mcp", "add", "M2M", "--url", srv.mcp_url, "--auth", "oauth",
                    "--client-id", client_id, "--client-secret-stdin", "--grant", "client_credentials",
                    "--json", stdin=secret + "\n")
        assert added.returncode == 0, added.stdout + added.stderr
        outcome = json.loads(added.stdout)
        assert outcome["status"] == "active" and "authorize_url" not in added.stderr
        assert secret not in added.stdout + added.stderr
        assert secret not in cli(home, "audit", "--json", "--limit", "20").stdout
        shown = json.loads(cli(home, "source", "show", outcome["data_source_id"], "--json").stdout)
        assert shown["client_id"] == client_id and shown["has_token"] is True and secret not in json.dumps(shown)
        # rotating the client secret deletes every stored token
        registry = Registry.open(home)
        try:
            assert registry.oauth_store.items_of(outcome["data_source_id"])
        finally:
            registry.close()
        issued = len(srv.auth.kinds("token"))
        rotated = cli(home, "source", "user-mcp", "update", outcome["data_source_id"], "--client-secret-stdin",
                      stdin="not-the-secret-123\n")
        assert rotated.returncode == 1 and "status=error" in rotated.stdout
        assert "refused the client credentials" in rotated.stdout and "check the client id and secret" in rotated.stdout
        registry = Registry.open(home)
        try:
            assert "tokens" not in registry.oauth_store.items_of(outcome["data_source_id"])
        finally:
            registry.close()
        rotated = cli(home, "source", "user-mcp", "update", outcome["data_source_id"], "--client-secret-stdin",
                      stdin=secret + "\n")
        assert rotated.returncode == 0 and "status=active" in rotated.stdout
        assert len(srv.auth.kinds("token")) == issued + 2  # a new token for each new secret


def test_oauth_flags_are_checked_by_name(tmp_path: Path):
    home = tmp_path / "home"
    bad = cli(home, "source", "user-mcp", "add", "x", "--url", "http://127.0.0.1:9/mcp", "--auth", "oauth",
              "--grant", "client_credentials")
    assert bad.returncode == 1 and "client_credentials' needs client_id and client_secret" in bad.stderr
    bad = cli(home, "source", "user-mcp", "add", "x", "--url", "http://127.0.0.1:9/mcp", "--auth", "bearer",
              "--client-id", "abc", "--token-stdin", stdin="test-token-123\n")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --client-id: client_id is only used")
    bad = cli(home, "source", "user-mcp", "add", "x", "--url", "http://127.0.0.1:9/mcp", "--auth", "oauth",
              "--scope", "a b")
    assert bad.returncode == 1 and "--scope: scopes: 'a b' is not a valid OAuth scope" in bad.stderr
    assert json.loads(cli(home, "source", "list", "--json").stdout)["items"] == []  # nothing was kept


# -- stdio -----------------------------------------------------------------------------------------

def programs_with(marker: str) -> list[int]:
    """Our processes whose environment holds ``marker`` (the stdio programs of one test)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def add_time_server(home: Path, marker: str, *extra: str) -> CliResult:
    return cli(home, "source", "user-mcp", "add", "Time", "--transport", "stdio", "--command", sys.executable,
               "--arg=-m", "--arg", "mcp_server_time", "--arg=--local-timezone=UTC", "--env", f"MARKER={marker}",
               "--env-secret", "TIME_API_KEY", "--namespace", "time", "--json", *extra,
               stdin="test-token-stdio-987654\n")


def test_stdio_source_with_mcp_server_time(tmp_path: Path):
    home, marker = tmp_path / "home", f"concierge-test-{uuid.uuid4().hex}"
    added = add_time_server(home, marker)
    assert added.returncode == 0, added.stdout + added.stderr
    outcome = json.loads(added.stdout)
    assert outcome["status"] == "active" and "healthy: 2 tools" in outcome["detail"]
    assert programs_with(marker) == []  # the health check's program is gone
    shown = json.loads(cli(home, "source", "show", outcome["data_source_id"], "--json").stdout)
    assert shown["transport"] == "stdio" and shown["command"] == sys.executable
    assert shown["args"] == ["-m", "mcp_server_time", "--local-timezone=UTC"]
    assert shown["env"] == {"MARKER": marker} and shown["secret_env"] == ["TIME_API_KEY"]
    assert shown["command_line"] == f"{sys.executable} -m mcp_server_time --local-timezone=UTC"
    assert "stderr_tail" in shown
    human = cli(home, "source", "show", outcome["data_source_id"]).stdout
    assert "TIME_API_KEY=***" in human and "test-token-stdio" not in human
    # `source user-mcp show` (which also lists held tools) is the same view, stderr included
    also = cli(home, "source", "user-mcp", "show", outcome["data_source_id"], "--log-lines", "5")
    assert also.returncode == 0, also.stderr
    assert "TIME_API_KEY=***" in also.stdout and "stderr:" in also.stdout
    # the audit log records the exact command; the secret value appears nowhere
    audit = cli(home, "audit", "--json", "--limit", "10").stdout
    assert f'"command_line": "{sys.executable} -m mcp_server_time --local-timezone=UTC"' in audit
    assert "test-token-stdio" not in added.stdout + added.stderr + audit + json.dumps(shown)

    cli(home, "agent", "create", "bot")
    call = cli(home, "tool", "call", "time_get_current_time", "--agent", "bot", "--args",
               '{"timezone": "UTC"}', "--json")
    assert call.returncode == 0, call.stdout + call.stderr
    assert '"timezone": "UTC"' in json.loads(call.stdout)["text"]
    assert programs_with(marker) == []  # the command ended: its program too
    for step in (("source", "pause"), ("source", "resume"), ("source", "user-mcp", "revoke")):
        assert cli(home, *step, outcome["data_source_id"]).returncode == 0
        assert programs_with(marker) == []


def test_the_gateway_keeps_one_program_and_pause_revoke_and_shutdown_stop_it(tmp_path: Path):
    home, marker = tmp_path / "home", f"concierge-test-{uuid.uuid4().hex}"
    assert add_time_server(home, marker).returncode == 0
    anyio.run(_gateway_rounds, home, marker)


async def _gateway_rounds(home: Path, marker: str) -> None:
    from concierge.backend import LocalBackend

    for stop in ("pause", "revoke", "shutdown"):
        backend = LocalBackend(Registry.open(home))
        try:
            source = (await backend.list_sources())[0]
            if stop == "pause" or source.status.value == "paused":
                await backend.resume_source(source.id)
            if not any(a.slug == "bot" for a in await backend.list_agents()):
                await backend.create_agent({"slug": "bot"})
            for _ in range(3):
                result = await backend.call_tool("time_get_current_time", {"timezone": "UTC"}, agent="bot")
                assert not result.is_error, result.text
            assert len(programs_with(marker)) == 1  # one pooled program for all three calls
            if stop == "pause":
                await backend.pause_source(source.id)
                await _gone(marker)
            elif stop == "revoke":
                await backend.revoke_source(source.id)
                await _gone(marker)
                break
        finally:
            await backend.aclose()
        await _gone(marker)
    assert programs_with(marker) == []


async def _gone(marker: str) -> None:
    with anyio.fail_after(10):
        while programs_with(marker):
            await anyio.sleep(0.05)


def test_stdio_flags_are_checked_by_name(tmp_path: Path):
    home = tmp_path / "home"
    bad = cli(home, "source", "user-mcp", "add", "x", "--transport", "stdio", "--command", "uvx mcp-server-git")
    assert bad.returncode == 1 and bad.stderr.startswith("error: --command: command 'uvx mcp-server-git' must be "
                                                         "the program alone")
    bad = cli(home, "source", "user-mcp", "add", "x", "--transport", "stdio", "--command", "uvx", "--env", "A")
    assert bad.returncode == 1 and "--env takes NAME=VALUE" in bad.stderr
    bad = cli(home, "source", "user-mcp", "add", "x", "--transport", "stdio", "--command", "uvx", "--env",
              "LD_PRELOAD=/tmp/x.so")
    assert bad.returncode == 1 and "--env: env: LD_PRELOAD is not allowed" in bad.stderr
    bad = cli(home, "source", "user-mcp", "add", "x", "--transport", "stdio", "--command", "uvx",
              "--url", "https://example.com/mcp")
    assert bad.returncode == 1 and "base_url is not used when transport is 'stdio'" in bad.stderr
    bad = cli(home, "source", "user-mcp", "add", "x", "--transport", "stdio", "--command", "uvx",
              "--env-secret", "KEY")
    assert bad.returncode == 1 and "--env-secret KEY: no value was read" in bad.stderr
    bad = cli(home, "source", "user-mcp", "add", "x", "--url", "https://example.com/mcp", "--auth", "none",
              "--header-value", "X-Tenant")
    assert bad.returncode == 1 and "--header-value takes NAME=VALUE" in bad.stderr
    assert json.loads(cli(home, "source", "list", "--json").stdout)["items"] == []


def test_extra_headers_reach_the_server(tmp_path: Path):
    home = tmp_path / "home"
    with oauth_servers() as srv:  # (any loopback MCP server would do: the protected one echoes its 401s)
        added = cli(home, "source", "user-mcp", "add", "H", "--url", srv.mcp_url, "--auth", "none",
                    "--header-value", "X-Tenant=acme", "--json")
        shown = json.loads(cli(home, "source", "show", json.loads(added.stdout)["data_source_id"], "--json").stdout)
        assert shown["headers"] == {"X-Tenant": "acme"}


def test_a_refused_refresh_in_a_pooled_call_marks_the_source(tmp_path: Path):
    """The catalog is cached (no new listing): the gateway's own call meets the refusal."""
    home = tmp_path / "home"
    with oauth_servers(access_ttl=2) as srv:
        result, _ = signing_in(home, "source", "user-mcp", "add", "Acme", "--url", srv.mcp_url, "--auth", "oauth",
                               "--namespace", "acme")
        source_id = result.stdout.split()[0]
        anyio.run(_call_after_refusal, home, srv, source_id)


async def _call_after_refusal(home: Path, srv: OAuthServers, source_id: str) -> None:
    from concierge.backend import LocalBackend
    from concierge.errors import ConnectorError

    backend = LocalBackend(Registry.open(home))
    try:
        await backend.create_agent({"slug": "bot"})
        assert not (await backend.call_tool("acme_whoami", {}, agent="bot")).is_error
        srv.auth.revoke_refresh_tokens()
        srv.auth.expire_access_tokens()
        await anyio.sleep(2.1)  # the held access token has expired too
        with pytest.raises(ConnectorError) as refused:
            await backend.call_tool("acme_whoami", {}, agent="bot")
        assert refused.value.kind.value == "auth_required" and "sign in again" in refused.value.detail
        source = await backend.get_source(source_id)
        assert source.status.value == "auth_required" and "sign in again" in (source.health_error or "")
    finally:
        await backend.aclose()


def test_closing_the_backend_ends_a_sign_in_nobody_finished(servers: OAuthServers, tmp_path: Path):
    """Found by running the conversation corpus: a chat that started an OAuth sign-in and ended
    (the REPL quit) left the sign-in running; it then wrote to the closed store ("the store is
    closed", an unretrieved task exception). Closing the backend ends it first."""
    from concierge.backend import LocalBackend

    async def run() -> list[BaseException | None]:
        backend = LocalBackend(Registry.open(tmp_path / "home"))
        outcome = await backend.register_source({"name": "Acme", "base_url": servers.mcp_url,
                                                 "auth_kind": "oauth", "scopes": ["mcp"]})
        url = await backend.start_sign_in(outcome.data_source_id)
        assert url and url.startswith(servers.as_url)
        tasks = list(backend._sign_ins)
        assert len(tasks) == 1 and not tasks[0].done()
        await backend.aclose()
        assert all(t.done() for t in tasks)  # ended before the store was closed, not after it
        return [None if t.cancelled() else t.exception() for t in tasks]

    assert anyio.run(run) == [None]
