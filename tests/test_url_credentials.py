"""A key in a source's URL (``…/mcp?api_key=…``, Tavily's ``?tavilyApiKey=``): the server gets it,
nobody sees it. Real demo servers on loopback that read their key from the query string, a real
registry on SQLite, the CLI in a real process, the offline planner through the engine."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from concierge.agent.models import OfflinePlanner
from concierge.agent.secrets import InMemorySecretStore, redact
from concierge.agent.session import ConciergeSession
from concierge.backend import LocalBackend
from concierge.errors import ValidationFailed
from concierge.registry import Registry
from concierge.url_secrets import split, unmask
from tests.agent_fixtures import collect, events_of, text_of
from tests.cli_fixtures import run_cli
from tests.mcp_servers import RunningServer, demo_server_fixture

pytestmark = pytest.mark.anyio

KEY = "canary-URLKEY-7f3a9c2e51"
NEW_KEY = "canary-URLKEY-NEW-b81d44"
keyed_server = demo_server_fixture(token=KEY, query="api_key")
rotated_server = demo_server_fixture(token=NEW_KEY, query="api_key")


def _files_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())


# -- the URL as stored and as dialled ---------------------------------------------------------

def test_each_credential_value_is_masked_in_place_and_put_back_in_order() -> None:
    url = "https://mcp.example.com/mcp?region=eu&tavilyApiKey=tvly-abc%2Fdef&page=2&access-token=t1&key="
    stored, values = split(url)
    assert stored == "https://mcp.example.com/mcp?region=eu&tavilyApiKey=••••&page=2&access-token=••••&key="
    assert values == [("tavilyApiKey", "tvly-abc%2Fdef"), ("access-token", "t1")]  # an empty value is no key
    assert unmask(stored, values) == url
    # given back as shown (also percent-encoded, as a browser copies it): the stored values
    assert split(stored, values) == (stored, values)
    assert split(stored.replace("••••", "%E2%80%A2%E2%80%A2%E2%80%A2%E2%80%A2"), values) == (stored, values)
    assert split("https://mcp.example.com/mcp?region=eu") == ("https://mcp.example.com/mcp?region=eu", [])


# -- the registry -----------------------------------------------------------------------------

async def test_the_server_gets_the_key_and_no_row_file_or_view_holds_it(
        registry: Registry, keyed_server: RunningServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{keyed_server.url()}?api_key={KEY}&region=eu"
    outcome = await registry.register({"name": "Keyed", "base_url": url, "auth_kind": "none"})
    assert outcome.status == "active", outcome.health_error  # the demo server answers 401 without its key
    view = registry.get_source(str(outcome.data_source_id))
    assert view.base_url == f"{keyed_server.url()}?api_key=••••&region=eu"
    assert view.has_token is False
    audit = [e.model_dump(mode="json") for e in registry.audit(limit=10)]
    assert KEY not in json.dumps(audit) and KEY not in json.dumps(view.model_dump(mode="json"))
    assert KEY.encode() not in _files_under(tmp_path / "home")  # the vault holds it encrypted
    assert KEY not in caplog.text  # httpx2 logs every request's URL: scrubbed
    assert "api_key=••••" in caplog.text

    # a call through the gateway reaches the server with the key
    result = await registry_backend_call(registry, str(outcome.data_source_id))
    assert "Cannot log in" in result


async def registry_backend_call(registry: Registry, source_id: str) -> str:
    backend = LocalBackend(registry)
    try:
        await backend.create_agent({"slug": "k", "name": "k", "tool_sources": ["user_mcp"]})
        catalog = await backend.agent_tools("k")
        name = next(t.name for t in catalog.tools if t.name.endswith("get_ticket"))
        result = await backend.call_tool(name, {"ticket_id": "T-1001"}, agent="k")
        return json.dumps(result.model_dump(mode="json"))
    finally:
        if backend._catalog is not None:
            await backend._catalog.aclose()


async def test_an_update_keeps_rotates_or_drops_the_key_as_the_url_given_says(
        registry: Registry, keyed_server: RunningServer, rotated_server: RunningServer, tmp_path: Path) -> None:
    outcome = await registry.register({"name": "Keyed", "base_url": f"{keyed_server.url()}?api_key={KEY}",
                                       "auth_kind": "none"})
    sid = str(outcome.data_source_id)
    shown = registry.get_source(sid).base_url
    # the URL as shown (with ••••), e.g. to change something else: the stored key is kept
    kept = await registry.update(sid, {"base_url": shown + "&region=eu"})
    assert kept.status == "active", kept.health_error
    assert registry.get_source(sid).base_url == f"{keyed_server.url()}?api_key=••••&region=eu"
    # a new key (another server that wants it): replaced, still never shown
    moved = await registry.update(sid, {"base_url": f"{rotated_server.url()}?api_key={NEW_KEY}"})
    assert moved.status == "active", moved.health_error
    assert registry.get_source(sid).base_url == f"{rotated_server.url()}?api_key=••••"
    assert NEW_KEY.encode() not in _files_under(tmp_path / "home")
    entry = registry.audit(limit=5)
    assert any((e.after or {}).get("url_credentials") == "replaced" for e in entry)
    # a URL without the parameter drops the key: the server refuses, the source says so
    dropped = await registry.update(sid, {"base_url": rotated_server.url()})
    assert dropped.status == "error" and "401" in (dropped.health_error or "")
    assert registry.get_source(sid).base_url == rotated_server.url()


async def test_a_masked_value_with_nothing_stored_is_refused_naming_base_url(
        registry: Registry, keyed_server: RunningServer) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await registry.register({"name": "Copied", "base_url": f"{keyed_server.url()}?api_key=••••",
                                 "auth_kind": "none"})
    assert caught.value.field == "base_url"
    assert str(caught.value) == ("base_url has api_key=••••, which stands for a stored value, but none is stored "
                                 "for api_key: give the value itself")
    assert registry.list_sources() == []  # nothing was written


# -- the CLI, as a real process ---------------------------------------------------------------

def test_the_cli_registers_it_and_neither_its_output_nor_its_log_shows_the_key(
        keyed_server: RunningServer, tmp_path: Path) -> None:
    env = {**os.environ, "CONCIERGE_HOME": str(tmp_path / "cli-home")}
    url = f"{keyed_server.url()}?api_key={KEY}"
    added = subprocess.run([sys.executable, "-m", "concierge", "-v", "source", "user-mcp", "add", "Keyed",
                            "--url", url, "--auth", "none"], capture_output=True, text=True, env=env, timeout=60)
    assert added.returncode == 0, added.stderr
    assert "status=active" in added.stdout
    listed = subprocess.run([sys.executable, "-m", "concierge", "-v", "--json", "source", "list"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(listed.stdout)["items"][0]["base_url"] == f"{keyed_server.url()}?api_key=••••"
    everything = added.stdout + added.stderr + listed.stdout + listed.stderr
    assert "HTTP Request: POST" in added.stderr  # -v logs each request's URL ...
    assert KEY not in everything  # ... scrubbed
    assert KEY.encode() not in _files_under(tmp_path / "cli-home")


# -- the conversation -------------------------------------------------------------------------

def test_a_key_in_any_credential_parameter_is_caught_before_the_model_sees_it() -> None:
    """Tavily's and Exa's documented URLs take the key as ``tavilyApiKey`` / ``exaApiKey``:
    those went to the model in clear (only ``api_key``, ``token``, ``key``… were caught)."""
    store = InMemorySecretStore()
    for said, value in (("add https://mcp.tavily.com/mcp/?tavilyApiKey=tvly-dev-abc123def", "tvly-dev-abc123def"),
                        ("https://mcp.exa.ai/mcp?exaApiKey=0a1b2c3d-1111-2222", "0a1b2c3d-1111-2222"),
                        ("https://x.example.com/mcp?X-Amz-Signature=abcdef123456&x=1", "abcdef123456")):
        redacted = redact(said, store).text
        assert value not in redacted and "[secret:sec_" in redacted, redacted
    assert redact("https://x.example.com/mcp?region=eu-west-1", store).text.endswith("region=eu-west-1")


def _calls(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, e.arguments) for e in events_of(events, "agent_tool_call")]


async def test_the_concierge_keeps_the_key_in_the_url_by_reference(
        backend: LocalBackend, keyed_server: RunningServer) -> None:
    """It used to take the key out of the URL and send it as a bearer token, which a server
    that reads ``?api_key=`` refuses (and the auth question it asked had no right answer)."""
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send(f"add {keyed_server.url()}?api_key={KEY}&region=eu"))
    assert text_of(events).startswith("The key stays in the URL, where the server reads it: it is kept encrypted "
                                      "and shown as ••••, never in clear. What should I call it?")
    events = await collect(session.send("Keyed"))
    name, arguments = _calls(events)[-1]
    assert name == "register_source" and arguments["auth_kind"] == "none" and "token_ref" not in arguments
    assert arguments["url"].startswith(f"{keyed_server.url()}?api_key=[secret:sec_")
    assert session.pending is not None and f"{keyed_server.url()}?api_key=••••&region=eu" in session.pending.summary
    session.confirm(session.pending.id, True)
    done = text_of(await collect(session.resume()))
    assert "healthy" in done, done
    assert KEY not in json.dumps(session.to_state()) and KEY not in done
    sources = await backend.list_sources()
    assert [s.base_url for s in sources] == [f"{keyed_server.url()}?api_key=••••&region=eu"]


async def test_in_chat_a_new_key_is_a_new_url_and_a_refused_key_says_so(
        backend: LocalBackend, keyed_server: RunningServer) -> None:
    outcome = await backend.register_source({"name": "search", "base_url": f"{keyed_server.url()}?api_key={KEY}",
                                             "auth_kind": "none"})
    assert outcome.status == "active"
    session = ConciergeSession(backend, OfflinePlanner())
    shown = f"{keyed_server.url()}?api_key=••••"
    # "rotate the key": there is no token; the key is in the URL, and how to change it is said
    said = text_of(await collect(session.send("rotate the key of search")))
    assert said == (f'"search" takes its key in its URL ({shown}). To change the key, give the URL with the new '
                    f'key: "search moved to {keyed_server.url()}?api_key=NEW-KEY".')
    # the URL as listed is not a credential, and names the stored key
    assert "••••" in redact(f"search moved to {shown}", InMemorySecretStore()).text
    # a wrong new key: proposed as a change, refused by the server, with the hint for a URL key
    events = await collect(session.send(f"search moved to {keyed_server.url()}?api_key=wrong-key-9"))
    name, arguments = _calls(events)[-1]
    assert name == "update_source" and arguments["url"].startswith(f"{keyed_server.url()}?api_key=[secret:sec_")
    assert session.pending is not None and f"move it to {shown} (with the key given in it)" in session.pending.summary
    session.confirm(session.pending.id, True)
    done = text_of(await collect(session.resume()))
    assert "answered HTTP 401. Check the key in the URL; if it changed, give the URL again with the new key." in done
    assert "wrong-key-9" not in done + json.dumps(session.to_state())


def test_the_cli_reads_a_keyed_url_from_the_environment_and_names_that_flag(
        keyed_server: RunningServer, tmp_path: Path) -> None:
    """``--url "…?api_key=$KEY"`` puts the key in the process list: ``--url-env VAR`` keeps it out."""
    home = tmp_path / "env-home"
    added = run_cli("--json", "source", "user-mcp", "add", "Keyed", "--url-env", "KEYED_URL", "--auth", "none",
                    home=home, env={"KEYED_URL": f"{keyed_server.url()}?api_key={KEY}"})
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["status"] == "active" and KEY not in added.stdout + added.stderr
    missing = run_cli("source", "user-mcp", "add", "Other", "--url-env", "NO_SUCH_URL_VAR", "--auth", "none",
                      home=home, env={"NO_SUCH_URL_VAR": None})
    assert missing.returncode != 0
    assert "--url-env: the environment variable NO_SUCH_URL_VAR is not set" in missing.stderr
    refused = run_cli("source", "user-mcp", "add", "Other", "--url-env", "BAD_URL", "--auth", "none",
                      home=home, env={"BAD_URL": f"http://example.com/mcp?api_key={KEY}"})
    assert "--url-env: base_url must use https for example.com" in refused.stderr and KEY not in refused.stderr


async def test_an_oauth_source_refuses_a_key_in_its_url(registry: Registry, keyed_server: RunningServer) -> None:
    """The mcp SDK's sign-in sends the server URL, query and all, to the authorization server
    as the RFC 8707 resource: a key there would leave for a third party."""
    with pytest.raises(ValidationFailed) as caught:
        await registry.register({"name": "Signed", "base_url": f"{keyed_server.url()}?api_key={KEY}",
                                 "auth_kind": "oauth"})
    assert caught.value.field == "base_url" and str(caught.value) == (
        "base_url carries api_key in its query, which an OAuth sign-in would send to the authorization server "
        "(as the resource): with auth_kind 'oauth' the URL must hold no key")
    outcome = await registry.register({"name": "Keyed", "base_url": f"{keyed_server.url()}?api_key={KEY}",
                                       "auth_kind": "none"})
    with pytest.raises(ValidationFailed) as caught:
        await registry.update(str(outcome.data_source_id), {"auth_kind": "oauth"})
    assert "with auth_kind 'oauth' the URL must hold no key" in str(caught.value)
    assert registry.get_source(str(outcome.data_source_id)).auth_kind == "none"
