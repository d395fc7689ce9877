"""Every operation by chat, with the offline planner, through a real session and registry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from concierge.agent.models import OfflinePlanner
from concierge.agent.secrets import new_ref, ref_text
from concierge.agent.session import ConciergeSession, PendingConfirmation, PendingSecret
from concierge.backend import LocalBackend
from tests.agent_fixtures import BEARER, HEADER, collect, events_of, text_of
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.anyio


def calls(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, e.arguments) for e in events_of(events, "agent_tool_call")]


async def say(session: ConciergeSession, text: str) -> list[Any]:
    return await collect(session.send(text))


async def yes(session: ConciergeSession) -> list[Any]:
    assert isinstance(session.pending, PendingConfirmation), session.pending
    session.confirm(session.pending.id, True)
    return await collect(session.resume())


async def source(backend: LocalBackend, name: str) -> Any:
    return next(s for s in await backend.list_sources() if s.name == name)


async def demo(backend: LocalBackend, url: str, **extra: Any) -> None:
    await backend.register_source({"name": "Demo", "base_url": url, "auth_kind": "none",
                                   "app_namespace": "demo", **extra})


async def test_set_and_clear_a_sources_allowlist(backend: LocalBackend, open_server: RunningServer) -> None:
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "only allow search docs and echo on demo")
    assert calls(events)[-1] == ("update_source", {"source": "Demo", "allowed_tools": ["search_docs", "echo"]})
    assert "offer only search_docs, echo" in session.pending.summary
    assert "now offering only search_docs, echo" in text_of(await yes(session))
    assert (await source(backend, "Demo")).allowed_tools == ["search_docs", "echo"]
    events = await say(session, "allow all tools on demo again")
    assert calls(events)[-1] == ("update_source", {"source": "Demo", "allow_all_tools": True})
    await yes(session)
    assert (await source(backend, "Demo")).allowed_tools is None


async def test_switch_auth_asks_for_the_new_credential_out_of_band(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    await backend.register_source({"name": "Wiki", "base_url": bearer_server.url(), "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "Wiki now needs a bearer token")
    assert calls(events)[-1] == ("update_source", {"source": "Wiki", "auth_kind": "bearer"})
    assert isinstance(session.pending, PendingSecret) and "bearer token" in session.pending.purpose
    session.provide_secret(session.pending.id, BEARER)
    events = await collect(session.resume())
    assert "switch to a bearer token (••••)" in events_of(events, "confirmation_required")[0].summary
    assert "now using a bearer token" in text_of(await yes(session))
    wiki = await source(backend, "Wiki")
    assert wiki.auth_kind.value == "bearer" and wiki.has_token and wiki.status.value == "active"
    events = await say(session, "switch wiki to no auth")
    assert calls(events)[-1] == ("update_source", {"source": "Wiki", "auth_kind": "none"})
    await yes(session)
    wiki = await source(backend, "Wiki")
    assert wiki.auth_kind.value == "none" and not wiki.has_token


async def test_switch_to_a_header_token(backend: LocalBackend, header_server: RunningServer) -> None:
    await backend.register_source({"name": "Keyed", "base_url": header_server.url(), "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "change keyed's auth to a header token in X-Api-Key")
    assert calls(events)[-1] == ("update_source", {"source": "Keyed", "auth_kind": "header_token",
                                                   "auth_header": "X-Api-Key"})
    session.provide_secret(session.pending.id, HEADER)
    await collect(session.resume())
    await yes(session)
    keyed = await source(backend, "Keyed")
    assert keyed.auth_header == "X-Api-Key" and keyed.status.value == "active"


async def test_move_a_source_to_a_new_url_with_its_auth(
        backend: LocalBackend, open_server: RunningServer, bearer_server: RunningServer) -> None:
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    ref = new_ref()
    session.secrets.put(ref, BEARER)
    events = await say(session, f"demo moved to {bearer_server.url()} and uses bearer token {ref_text(ref)}")
    assert calls(events)[-1] == ("update_source", {"source": "Demo", "url": bearer_server.url(),
                                                   "auth_kind": "bearer", "token_ref": ref_text(ref)})
    assert "healthy" in text_of(await yes(session))
    moved = await source(backend, "Demo")
    assert moved.base_url == bearer_server.url() and moved.auth_kind.value == "bearer"


async def test_show_one_sources_details_with_the_secret_masked(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    await backend.register_source({"name": "Secure", "base_url": bearer_server.url(), "auth_kind": "bearer",
                                   "token": BEARER, "rate_cap_per_minute": 45, "allowed_tools": ["echo"]})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "tell me about secure")
    assert calls(events)[-1] == ("show_source", {"source": "Secure"})
    reply = text_of(events)
    for part in ("active, 4 tools", "Auth: a bearer token (••••)", "45 tool calls per minute",
                 "600 webhook events per minute", "Allowed tools: echo", "Last check:"):
        assert part in reply, part
    assert BEARER not in reply and BEARER[-4:] not in json.dumps([e.to_dict() for e in events])


async def test_show_a_failing_sources_last_error(backend: LocalBackend) -> None:
    from tests.mcp_servers import closed_port_url

    await backend.register_source({"name": "Legacy", "base_url": closed_port_url(), "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    reply = text_of(await say(session, "why is legacy failing?"))
    assert "failing its health check" in reply and "error: nothing is listening" in reply


async def test_health_check_all_sources_at_once(backend: LocalBackend, open_server: RunningServer) -> None:
    from tests.mcp_servers import closed_port_url

    await demo(backend, open_server.url())
    await backend.register_source({"name": "Legacy", "base_url": closed_port_url(), "auth_kind": "none"})
    revoked = await backend.register_source({"name": "Old", "base_url": open_server.url(), "auth_kind": "none"})
    await backend.revoke_source(revoked.data_source_id)
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "is everything healthy?")
    assert calls(events) == [("test_all_sources", {})]
    reply = text_of(events)
    assert reply.startswith('Checked 2 sources in sandbox "default": 1 healthy, 1 failing.')
    assert "- Demo — healthy, 4 tools" in reply and "- Legacy — failing: nothing is listening" in reply
    assert "(plus 1 revoked, not checked)" in reply


async def test_what_one_tool_does_and_its_arguments(backend: LocalBackend, open_server: RunningServer) -> None:
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "what arguments does search_docs take?")
    assert calls(events) == [("list_agent_tools", {}), ("describe_tool", {"tool": "demo_search_docs"})]
    schema = events_of(events, "agent_tool_result")[-1].result["input_schema"]
    assert schema["required"] == ["query"]
    reply = text_of(events)
    assert reply.startswith("demo_search_docs (search_docs on Demo): Search the product documentation")
    assert "- query (string, required) — Words to look for" in reply
    assert "- limit (integer, optional, default 5)" in reply
    assert "concierge tool call demo_search_docs --agent SLUG" in reply


def test_agent_tools_json_has_the_input_schema(open_server: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    from concierge.cli import main

    assert main(["source", "user-mcp", "add", "Demo", "--url", open_server.url(), "--auth", "none",
                 "--namespace", "demo"]) == 0
    capsys.readouterr()
    assert main(["agent", "tools", "--json"]) == 0
    tools = {t["name"]: t for t in json.loads(capsys.readouterr().out)["tools"]}
    schema = tools["demo_search_docs"]["input_schema"]
    assert set(schema["properties"]) == {"query", "limit"} and schema["required"] == ["query"]


async def test_create_an_agent_with_an_allowlist(backend: LocalBackend, open_server: RunningServer) -> None:
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "create an agent called helper that can only use search_docs and echo")
    assert calls(events)[-1] == ("create_agent", {"slug": "helper", "tool_allowlist": [
        "demo_search_docs", "demo_echo"]})
    assert "may use only demo_search_docs, demo_echo" in session.pending.summary
    await yes(session)
    agent = await backend.get_agent("helper")
    assert agent.tool_allowlist == ["demo_search_docs", "demo_echo"]
    events = await say(session, "what tools does helper have")
    assert calls(events)[-1] == ("list_agent_tools", {"agent": "helper"})
    assert text_of(events).startswith("helper has 2 tools right now:")
    assert "already an agent called helper" in text_of(await say(session, "create an agent called helper"))


async def test_an_agent_limited_to_the_ticket_tools_gets_those_tools(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found by hand: "that can only use the ticket tools" created an agent that could use
    every tool (the restriction was dropped, only the confirmation's wording showed it)."""
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "make an agent named helpdesk that can only use the ticket tools")
    assert calls(events)[-1] == ("create_agent", {"slug": "helpdesk", "tool_allowlist": [
        "demo_create_ticket", "demo_get_ticket"]})
    assert "may use only demo_create_ticket, demo_get_ticket" in session.pending.summary


async def test_an_agents_name_is_corrected_at_the_confirmation(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found in the widget: "no wait, call it ops-triage" at the confirmation of a new agent
    was not read (the source forms took it, the agent form did not)."""
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    await say(session, "make an agent called triage that can only use the search tools")
    events = await say(session, "no wait, call it ops-triage")
    assert calls(events)[-1] == ("create_agent", {"slug": "ops-triage", "tool_allowlist": ["demo_search_docs"]})


async def test_taking_one_tool_from_an_agent_allowed_a_glob(backend: LocalBackend, open_server: RunningServer) -> None:
    """Found by hand: "remove helpdesk's access to create_ticket" asked which source to revoke;
    with a glob allowlist (demo_*) it answered "already has that allowlist" and changed nothing."""
    await demo(backend, open_server.url())
    await backend.create_agent({"slug": "helpdesk", "tool_allowlist": ["demo_*"]})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "remove helpdesk's access to demo_echo")
    assert calls(events)[-1] == ("update_agent", {"agent": "helpdesk", "tool_allowlist": [
        "demo_create_ticket", "demo_get_ticket", "demo_search_docs"]})


async def test_a_new_name_is_corrected_at_the_confirmation(backend: LocalBackend, open_server: RunningServer) -> None:
    """Found in the REPL: "hmm, make it Support Desk" at a rename's confirmation was not read."""
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    await say(session, "rename demo to Team Desk")
    for said, name in (("hmm, make it Support Desk", "Support Desk"), ("no wait, call it Helpdesk", "Helpdesk")):
        events = await say(session, said)
        assert calls(events)[-1] == ("update_source", {"source": "Demo", "name": name})


async def test_a_pause_says_which_agents_lose_its_tools(backend: LocalBackend, open_server: RunningServer) -> None:
    """Found in the REPL: at "Pause team tools?" the person asked "what would that do to
    helpdesk?" and could not be told; the confirmation now names the agents using its tools."""
    await demo(backend, open_server.url())
    await backend.register_source({"name": "Billing", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "billing"})
    await backend.create_agent({"slug": "helpdesk", "tool_allowlist": ["demo_*_ticket"]})
    await backend.create_agent({"slug": "everyone"})
    await backend.create_agent({"slug": "elsewhere", "tool_allowlist": ["billing_*"]})
    session = ConciergeSession(backend, OfflinePlanner())
    await say(session, "pause demo")
    assert session.pending.summary.endswith("Agents using its tools now: helpdesk (2 tools), everyone (4 tools).")
    session = ConciergeSession(backend, OfflinePlanner())
    await say(session, "revoke billing")
    assert "Agents using its tools now: everyone (4 tools), elsewhere (4 tools)." in session.pending.summary
    await backend.update_agent("everyone", {"tool_allowlist": ["demo_echo"]})
    await backend.update_agent("elsewhere", {"tool_allowlist": ["demo_echo"]})
    session = ConciergeSession(backend, OfflinePlanner())
    await say(session, "pause billing")
    assert session.pending.summary.endswith("No agent uses its tools right now.")


async def test_a_restriction_the_planner_cannot_read_is_asked_about_not_dropped(
        backend: LocalBackend, open_server: RunningServer) -> None:
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "create an agent called billing that can only use the invoice tools")
    assert session.pending is None and not any(n == "create_agent" for n, _ in calls(events))
    assert text_of(events).startswith("Which tools should it be able to use?")
    assert "This sandbox offers: demo_" in text_of(events)
    events = await say(session, "demo_echo and demo_search_docs")
    assert calls(events)[-1] == ("create_agent", {"slug": "billing", "tool_allowlist": [
        "demo_echo", "demo_search_docs"]})
    # "just" that does not limit the tools asks nothing
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "just create an agent called ops")
    assert calls(events)[-1] == ("create_agent", {"slug": "ops"})


async def test_list_switch_and_create_sandboxes(backend: LocalBackend, open_server: RunningServer) -> None:
    await demo(backend, open_server.url())
    await backend.create_sandbox("staging")
    await backend.register_source({"name": "Staged", "base_url": open_server.url(), "auth_kind": "none"},
                                  sandbox="staging")
    session = ConciergeSession(backend, OfflinePlanner())
    assert text_of(await say(session, "which sandboxes do i have")) == "Your sandboxes: default (current), staging."
    assert text_of(await say(session, "switch to staging")) == 'Now working in sandbox "staging".'
    assert session.sandbox == "staging" and session.pending is None  # a read: no confirmation
    assert "- Staged (" in text_of(await say(session, "list my sources"))
    assert json.loads(json.dumps(session.to_state()))["sandbox"] == "staging"
    events = await say(session, "make a new sandbox called qa")
    assert calls(events) == [("create_sandbox", {"name": "qa"})]
    await yes(session)
    assert "qa" in [s.name for s in await backend.list_sandboxes()]
    assert "no sandbox called" in text_of(await say(session, "switch to sandbox nowhere"))


@pytest.mark.parametrize(("text", "command"), [
    ("alert me when demo goes down", "concierge source list --status error"),
    ("run search_docs for billing", "concierge tool call search_docs"),
    ("delete demo permanently", "concierge source delete ds_"),
    ("delete the support agent", "concierge agent update"),
    ("show me the audit log", "concierge audit"),
    ("how do i connect claude code to my agent", "concierge gateway --agent"),
])
async def test_what_it_cannot_do_gets_the_cli_command(
        backend: LocalBackend, open_server: RunningServer, text: str, command: str) -> None:
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, text)
    assert command in text_of(events)
    assert session.pending is None and not events_of(events, "confirmation_required")
    assert len(await backend.list_sources()) == 1


async def test_catalog_answers_are_about_the_agent_asked_for(
        backend: LocalBackend, open_server: RunningServer) -> None:
    await demo(backend, open_server.url())
    await backend.register_source({"name": "Billing", "base_url": open_server.url("/b"), "auth_kind": "none"})
    await backend.create_agent({"slug": "support-bot", "tool_allowlist": ["demo_echo"]})
    await backend.create_agent({"slug": "sales"})
    session = ConciergeSession(backend, OfflinePlanner())
    for text in ("what tools does support have", "what can support use?"):
        events = await say(session, text)
        assert calls(events)[-1] == ("list_agent_tools", {"agent": "support-bot"})
        assert text_of(events).startswith("support-bot has 1 tool right now:\n- demo_echo")
    # An agent that does not exist is never answered with the whole sandbox (not even a source's name).
    events = await say(session, "what tools does the billing agent have")
    assert [n for n, _ in calls(events)] == ["list_agents"]
    assert text_of(events).startswith('I couldn\'t find an agent called "billing"')
    events = await say(session, "what tools do I have")
    assert calls(events) == [("list_agent_tools", {})]
    assert text_of(events).startswith("This sandbox offers 4 tools right now:")


async def test_an_allowlist_entry_that_names_no_tool_is_told_before_the_yes_and_after(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found by hand: "let support use only the demo_ech tool" answered "Done." and the agent
    silently had no tools."""
    await demo(backend, open_server.url())
    await backend.create_agent({"slug": "support"})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "let support use only the demo_ech tool")
    [asked] = events_of(events, "confirmation_required")
    assert "no tool in the sandbox is called demo_ech (did you mean demo_echo?)" in asked.summary
    text = text_of(await yes(session))
    assert text.startswith('Updated the agent support in sandbox "default": it may use only demo_ech '
                           "(before: every tool)."), text
    assert "No tool in the sandbox is called demo_ech (did you mean demo_echo?) right now" in text
    # a real name or a glob that matches says nothing of the kind
    events = await say(session, "let support use only demo_echo and demo_*")
    [asked] = events_of(events, "confirmation_required")
    assert "no tool" not in asked.summary.lower()
    assert "No tool" not in text_of(await yes(session))


async def test_registering_a_url_that_a_source_already_points_at_says_so_before_the_yes(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found by hand: a second source for the same server was registered without a word."""
    await demo(backend, open_server.url())
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, f"add {open_server.url()}/ called Second with no auth")
    [asked] = events_of(events, "confirmation_required")
    demo_id = (await source(backend, "Demo")).id
    assert f'Note: "Demo" ({demo_id}) already points at this URL' in asked.summary
    # a URL nobody uses says nothing of the kind
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, f"add {open_server.url('/other')} called Third with no auth")
    [asked] = events_of(events, "confirmation_required")
    assert "already points" not in asked.summary
