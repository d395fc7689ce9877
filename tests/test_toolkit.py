"""The model-facing tools: definitions in step with tools/, reads vs writes, rules, summaries."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from concierge.agent import prompts
from concierge.agent.secrets import InMemorySecretStore
from concierge.agent.toolkit import (
    ToolArgumentError,
    ToolContext,
    default_toolkit,
    health_hint,
    main,
    resolve_source,
    write_definitions,
)
from concierge.agent.toolkit._sources import GENERIC_HINT, HEALTH_HINTS
from concierge.backend import LocalBackend
from concierge.errors import Conflict, NotFound, ValidationFailed
from concierge.mcp_client.kinds import ErrorKind
from tests.mcp_servers import RunningServer

ROOT = Path(__file__).resolve().parent.parent
WRITES = {"register_source", "update_source", "pause_source", "resume_source", "revoke_source",
          "create_agent", "create_sandbox", "update_agent", "accept_tool_changes"}


def test_tools_folder_is_in_step_with_the_code() -> None:
    toolkit = default_toolkit()
    files = {p.stem: json.loads(p.read_text()) for p in (ROOT / "tools").glob("*.json")}
    assert set(files) == set(toolkit.tools), "run: python -m concierge.agent.toolkit --write"
    for tool in toolkit:
        expected = tool.definition() | {"x-concierge": {"kind": tool.kind}}
        assert files[tool.name] == expected, f"tools/{tool.name}.json is stale; run --write"


def test_write_regenerates_and_removes_stale_files(tmp_path: Path) -> None:
    (tmp_path / "old_tool.json").write_text("{}")
    assert main(["--write", "--dir", str(tmp_path)]) == 0
    assert {p.stem for p in tmp_path.glob("*.json")} == set(default_toolkit().tools)
    write_definitions(tmp_path)  # idempotent
    assert (tmp_path / "register_source.json").read_text() == (ROOT / "tools" / "register_source.json").read_text()


def test_definitions_are_valid_for_openai() -> None:
    toolkit = default_toolkit()
    assert toolkit.writes == WRITES
    for definition in toolkit.definitions():
        fn = definition["function"]
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", fn["name"])
        assert 20 < len(fn["description"]) < 450
        params = fn["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        blob = json.dumps(params)
        assert '"title"' not in blob and '{"type": "null"}' not in blob
        for name, prop in params["properties"].items():
            assert "description" in prop, f"{fn['name']}.{name} has no description"
        assert "token" not in params["properties"] and "confirmed" not in params["properties"]
    for name in WRITES:
        assert "confirm" in toolkit.get(name).description.lower()


@pytest.mark.parametrize("raw", [{"confirmed": True}, {"Approved": "yes"}, {"token": "x"},
                                 {"password": "x"}, {"unknown": 1}, {"url": "x", "auth_kind": "none"},
                                 {"name": "x", "url": "https://a.example", "auth_kind": "basic"}])
def test_bad_arguments_are_refused_with_a_reason(raw: dict[str, Any]) -> None:
    with pytest.raises(ToolArgumentError) as info:
        default_toolkit().get("register_source").parse(raw)
    assert info.value.detail


def test_health_hints_are_looked_up_by_the_stored_kind() -> None:
    assert "token" in health_hint(ErrorKind.UNAUTHORIZED)
    assert "running" in health_hint("connection_refused")
    assert "/mcp" in health_hint(ErrorKind.NOT_FOUND)
    assert "timeout" in health_hint(ErrorKind.TIMEOUT)
    assert health_hint(None) is None
    assert health_hint(ErrorKind.UNKNOWN) == health_hint("a kind from a newer version") == GENERIC_HINT
    assert set(HEALTH_HINTS) == set(ErrorKind) - {ErrorKind.UNKNOWN}  # every kind has its advice


def _ctx(backend: LocalBackend) -> ToolContext:
    return ToolContext(backend, InMemorySecretStore())


@pytest.mark.anyio
async def test_sources_resolve_by_id_name_namespace_or_unique_word(
        backend: LocalBackend, open_server: RunningServer) -> None:
    a = await backend.register_source({"name": "Acme prod", "base_url": open_server.url(),
                                       "auth_kind": "none", "app_namespace": "acme_prod"})
    await backend.register_source({"name": "Acme staging", "base_url": open_server.url(),
                                   "auth_kind": "none", "app_namespace": "acme_staging"})
    ctx = _ctx(backend)
    assert (await resolve_source(ctx, a.data_source_id, None)).name == "Acme prod"
    assert (await resolve_source(ctx, "acme PROD", None)).id == a.data_source_id
    assert (await resolve_source(ctx, "acme_prod", None)).id == a.data_source_id
    assert (await resolve_source(ctx, "staging", None)).name == "Acme staging"
    with pytest.raises(Conflict, match="several sources match 'acme'") as info:
        await resolve_source(ctx, "acme", None)
    assert info.value.error == "ambiguous"
    with pytest.raises(NotFound, match="Acme prod"):
        await resolve_source(ctx, "billing", None)


@pytest.mark.anyio
async def test_register_prepare_asks_the_registrys_own_rules(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Rules are checked once, in the registry: prepare refuses exactly what it would refuse,
    with the registry's message (field names as the tool calls them)."""
    tool, ctx = default_toolkit().get("register_source"), _ctx(backend)
    cases = [
        ({"url": "http://mcp.acme.example/mcp"}, "https"),
        ({"name": ""}, "name"),
        ({"auth_kind": "header_token"}, "auth_header"),
        ({"auth_header": "Content-Type", "auth_kind": "header_token"}, "transport"),
        ({"app_namespace": "has space"}, "app_namespace"),
        ({"rate_cap_per_minute": 9000}, "rate_cap_per_minute"),
    ]
    for change, words in cases:
        raw = {"name": "x", "url": open_server.url(), "auth_kind": "none"} | change
        args = tool.parse(raw)
        with pytest.raises(ValidationFailed, match=words) as info:
            await tool.prepare(ctx, args)
        body = {"base_url" if k == "url" else k: v for k, v in raw.items()}
        if body["auth_kind"] != "none":
            body["token"] = "placeholder-token-for-validation"
        with pytest.raises(ValidationFailed) as registry:
            backend.registry.parse_register(body)
        assert info.value.detail == registry.value.detail.replace("base_url", "url"), change
    with pytest.raises(NotFound, match="no sandbox"):
        await tool.prepare(ctx, tool.parse({"name": "x", "url": open_server.url(), "auth_kind": "none",
                                            "sandbox": "nope"}))


def test_the_toolkit_states_no_registry_rule() -> None:
    """No validation rule is re-stated in the tools: their messages come from the registry."""
    source = "".join(p.read_text() for p in (ROOT / "concierge" / "agent" / "toolkit").glob("*.py"))
    for phrase in ("is required when auth_kind", "only allowed for localhost", "already used by",
                   "1-64 characters", "must be a full https"):
        assert phrase not in source, phrase
    schema = json.dumps(default_toolkit().definitions())
    assert "maximum" not in schema and "minLength" not in schema  # bounds live in the registry


@pytest.mark.anyio
async def test_a_taken_namespace_is_refused_by_the_registry_in_plain_words(
        backend: LocalBackend, open_server: RunningServer) -> None:
    from concierge.agent.session import ConciergeSession
    from concierge.agent.models import ScriptedModel, tool_call
    from tests.agent_fixtures import collect, events_of

    await backend.register_source({"name": "acme", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "acme"})
    session = ConciergeSession(backend, ScriptedModel([
        tool_call("register_source", name="x", url=open_server.url(), auth_kind="none", app_namespace="ACME"),
        "Taken."]))
    events = await collect(session.send("add"))
    session.confirm(events_of(events, "confirmation_required")[0].id, True)
    result = events_of(await collect(session.resume()), "agent_tool_result")[0]
    assert result.error == "namespace_taken" and "already used by 'acme'" in result.result["detail"]
    assert len(await backend.list_sources()) == 1


@pytest.mark.anyio
async def test_summaries_say_what_where_sandbox_auth_and_namespace(
        backend: LocalBackend, open_server: RunningServer) -> None:
    toolkit, ctx = default_toolkit(), _ctx(backend)
    tool = toolkit.get("register_source")
    args = tool.parse({"name": "Acme", "url": open_server.url() + "/", "auth_kind": "header_token",
                       "auth_header": "X-Api-Key", "app_namespace": "acme", "token_ref": "sec_0123abcd"})
    prep = await tool.prepare(ctx, args)
    summary = tool.summary(args, prep)
    for part in ('"Acme"', open_server.url(), 'sandbox "default"', "X-Api-Key header", "••••", "acme"):
        assert part in summary
    assert "sec_0123abcd" not in summary and open_server.url() + "/" not in summary
    need = tool.needs_secret(ctx, args, prep)
    assert need is not None and need.field == "token_ref"  # the reference is unknown to the store
    assert "X-Api-Key token" in need.purpose
    ctx.secrets.put("sec_0123abcd", "value-1234567")
    assert tool.needs_secret(ctx, args, prep) is None

    outcome = await backend.register_source({"name": "Old", "base_url": open_server.url(), "auth_kind": "none"})
    update = toolkit.get("update_source")
    args = update.parse({"source": outcome.data_source_id, "name": "New", "rate_cap_per_minute": 30})
    summary = update.summary(args, await update.prepare(ctx, args))
    assert '"Old"' in summary and 'rename it to "New"' in summary and "30 calls per minute" in summary
    revoke = toolkit.get("revoke_source")
    args = revoke.parse({"source": "Old"})
    assert "disconnected for good" in revoke.summary(args, await revoke.prepare(ctx, args))


def test_prompts_found_in_a_checkout() -> None:
    assert prompts.prompts_dir() == ROOT / "prompts"
    assert prompts.tools_dir() == ROOT / "tools"
    assert "Concierge" in prompts.system_prompt()


def test_prompts_found_in_an_installed_wheel_layout(tmp_path: Path) -> None:
    # The wheel force-includes prompts/ and tools/ at concierge/_data/ (pyproject.toml).
    package = tmp_path / "site-packages" / "concierge"
    (package / "agent").mkdir(parents=True)
    shutil.copy(ROOT / "concierge" / "agent" / "prompts.py", package / "agent" / "prompts.py")
    shutil.copytree(ROOT / "prompts", package / "_data" / "prompts")
    shutil.copytree(ROOT / "tools", package / "_data" / "tools")
    spec = importlib.util.spec_from_file_location("wheel_prompts", package / "agent" / "prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    assert module.prompts_dir() == package / "_data" / "prompts"
    assert module.tools_dir() == package / "_data" / "tools"
    assert module.system_prompt() == prompts.system_prompt()
    shutil.rmtree(package / "_data")
    with pytest.raises(FileNotFoundError, match="reinstall"):
        module.prompts_dir()


def test_pyproject_ships_prompts_and_tools_in_the_wheel() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"prompts" = "concierge/_data/prompts"' in text and '"tools" = "concierge/_data/tools"' in text
