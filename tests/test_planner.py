"""The offline planner: slot filling, disambiguation, plain answers — through the real engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from concierge.agent.models import OfflinePlanner
from concierge.agent.models.offline import extract as ex
from concierge.agent.models.offline.entities import Entity, pick, resolve
from concierge.agent.models.offline.intents import classify
from concierge.agent.models.offline.text import Text
from concierge.agent.secrets import normalize_ref
from concierge.agent.session import ConciergeSession
from concierge.backend import LocalBackend
from tests.agent_fixtures import BEARER, collect, events_of, text_of
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.anyio


async def say(session: ConciergeSession, text: str) -> list[Any]:
    return await collect(session.send(text))


async def answer(session: ConciergeSession, *, yes: bool | None = None, secret: str | None = None) -> list[Any]:
    assert session.pending is not None
    if secret is not None:
        session.provide_secret(session.pending.id, secret)
    else:
        session.confirm(session.pending.id, bool(yes))
    return await collect(session.resume())


def calls(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, e.arguments) for e in events_of(events, "agent_tool_call")]


# -- reading the person ---------------------------------------------------------------------


def _read(text: str) -> Text:
    return Text.read(text)


@pytest.mark.parametrize(("text", "kind"), [
    ("it's authenticated with a bearer token", "bearer"),
    ("a custom header", "header_token"),
    ("header X-Api-Key", "header_token"),
    ("no auth", "none"),
    ("none", "none"),
    ("it is public", "none"),
    ("https://public.example.com/mcp", None),
])
def test_auth_scheme(text: str, kind: str | None) -> None:
    found = ex.auth_kind(_read(text))
    assert (found.value if found else None) == kind


def test_header_name_is_never_the_credential() -> None:
    assert ex.header_name(_read("header X-Api-Key")).value == "X-Api-Key"
    assert ex.header_name(_read("the key goes in the X-Api-Key header")).value == "X-Api-Key"
    # Found by trying it: "bearer token demo-token-123" made demo-token-123 the header name.
    assert ex.header_name(_read("with bearer token demo-token-123")) is None
    assert ex.header_name(_read("a header token in X-Api-Key")).value == "X-Api-Key"


@pytest.mark.parametrize(("text", "command"), [
    # found by hand: the package after the launcher's own flag was dropped ("npx -y")
    ("add npx -y @modelcontextprotocol/server-everything and call it Everything",
     "npx -y @modelcontextprotocol/server-everything"),
    ("set up the everything server, run it with npx -y @modelcontextprotocol/server-everything",
     "npx -y @modelcontextprotocol/server-everything"),
    ("add uvx mcp-server-time --local-timezone UTC, no auth", "uvx mcp-server-time --local-timezone UTC"),
    ("hook up uvx mcp-server-git --repository /tmp/repo as git", "uvx mcp-server-git --repository /tmp/repo"),
    ("add python -m mcp_server_time", "python -m mcp_server_time"),
])
def test_a_command_line_is_read_whole(text: str, command: str) -> None:
    assert ex.command(_read(text)).value == command


def test_url_label_and_update_fields() -> None:
    assert ex.urls(_read("add https://mcp.acme.com/mcp, please.")) == ["https://mcp.acme.com/mcp"]
    assert ex.urls(_read("it's at localhost:8000/mcp")) == ["http://localhost:8000/mcp"]
    assert ex.label(_read('register it and call it "Acme docs" in staging')).value == "Acme docs"
    assert ex.label(_read("add it as Second, no auth"), allow_as=True).value == "Second"
    value, target = ex.new_name(_read("Rename acme to Acme prod and set its rate cap to 30")).value
    assert value == "Acme prod"
    assert ex.rate_cap(_read("limit it to 45 calls per minute")).value == 45
    assert ex.rate_cap(_read("Rename acme to Acme prod and set its rate cap to 30")).value == 30


def test_pick_from_candidates() -> None:
    candidates = [Entity("ds_AAAAAAAA", "Acme prod", ("Acme prod", "acme_prod")),
                  Entity("ds_BBBBBBBB", "Acme staging", ("Acme staging", "acme_staging"))]
    assert pick(_read("the staging one"), candidates).key == "ds_BBBBBBBB"
    assert pick(_read("2"), candidates).key == "ds_BBBBBBBB"
    assert pick(_read("the first one"), candidates).key == "ds_AAAAAAAA"
    assert pick(_read("ds_BBBBBBBB"), candidates).label == "Acme staging"
    assert pick(_read("acme"), candidates) is None
    assert pick(_read("7"), candidates) is None


def test_names_are_whole_words_never_pieces_of_words_or_urls() -> None:
    """Found by trying it: a source called "HT" was changed by a message about http://…"""
    sources = [Entity("ds_HTHTHTHT", "HT", ("HT", "ht"), "http://127.0.0.1:1/mcp"),
               Entity("ds_DEMODEMO", "Demo", ("Demo", "demo"), "http://127.0.0.1:2/mcp")]
    assert resolve(_read("register http://127.0.0.1:9/mcp called Capped"), sources).matches == []
    assert resolve(_read("pause the http server"), sources).matches == []
    assert resolve(_read("pause ht"), sources).one.label == "HT"
    assert resolve(_read("pause HT please"), sources).one.label == "HT"
    assert resolve(_read("set the cap for http://127.0.0.1:2/mcp"), sources).one.label == "Demo"
    assert resolve(_read("pause demonstration"), sources).matches == []
    assert resolve(_read("pause dmeo"), sources).one.label == "Demo"  # a small typo


def test_words_inside_urls_do_not_steer_the_planner() -> None:
    def top(text: str) -> str:
        return classify(_read(text))[0].intent.name

    assert top("Add https://health-check.example.com/mcp") == "register"
    assert ex.sandbox_mention(_read("add https://staging.example.com/mcp sandbox please"),
                              ("default", "staging")) is None


def test_a_source_named_tools_can_still_be_changed() -> None:
    """Found by hand: "rename Demo tools ..." used to be read as a catalog question."""
    def top(text: str) -> str:
        return classify(_read(text))[0].intent.name

    assert top("set the rate cap of Demo tools to 120 and rename it to Demo prod") in ("rate_cap", "rename")
    assert top("revoke Demo tools") == "revoke"
    assert top("pause Demo tools") == "pause"
    assert top("What tools does my support agent have right now?") == "agent_tools"


# -- flows ----------------------------------------------------------------------------------


async def test_slot_filling_survives_a_restore(backend: LocalBackend, bearer_server: RunningServer) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    assert "URL" in text_of(await say(session, "I'd like to add an MCP server"))
    assert "authenticate" in text_of(await say(session, bearer_server.url()))
    state = json.loads(json.dumps(session.to_state()))
    session = ConciergeSession.from_state(state, backend, OfflinePlanner())  # a restart
    assert "call it" in text_of(await say(session, "bearer"))
    events = await say(session, "Acme docs")
    assert calls(events) == [("register_source", {"name": "Acme docs", "url": bearer_server.url(),
                                                  "auth_kind": "bearer", "app_namespace": "acme_docs"})]
    assert events_of(events, "secret_required")
    events = await answer(session, secret=BEARER)
    assert events_of(events, "confirmation_required")
    events = await answer(session, yes=True)
    assert "healthy" in text_of(events)
    assert (await backend.list_sources())[0].has_token


async def test_pasted_token_skips_the_secret_question(backend: LocalBackend, bearer_server: RunningServer) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, f"Add {bearer_server.url()} with bearer token {BEARER}, call it Demo")
    assert not events_of(events, "secret_required")
    assert [name for name, _ in calls(events)] == ["list_sources", "register_source"]
    name, arguments = calls(events)[-1]
    assert normalize_ref(arguments["token_ref"]) and BEARER not in json.dumps(arguments)
    assert "healthy" in text_of(await answer(session, yes=True))


async def test_register_into_a_named_sandbox(backend: LocalBackend, open_server: RunningServer) -> None:
    await backend.create_sandbox("staging")
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, f"Add {open_server.url()} with no auth in sandbox staging, call it Demo")
    confirm = events_of(events, "confirmation_required")[0]
    assert 'sandbox "staging"' in confirm.summary
    await answer(session, yes=True)
    assert [s.name for s in await backend.list_sources(sandbox="staging")] == ["Demo"]


async def test_typed_yes_after_a_dropped_confirmation_asks_again(
        backend: LocalBackend, open_server: RunningServer) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    await say(session, f"Add {open_server.url()} with no auth, call it Demo")
    events = await say(session, "yes")  # typed instead of answering the confirmation
    assert events_of(events, "agent_tool_result")[0].result["status"] == "not_confirmed"
    assert events_of(events, "confirmation_required")  # asked again, properly
    assert await backend.list_sources() == []


async def test_pause_resume_and_delete_command(backend: LocalBackend, open_server: RunningServer) -> None:
    await backend.register_source({"name": "Acme", "base_url": open_server.url(), "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    await say(session, "pause acme")
    assert "Paused" in text_of(await answer(session, yes=True))
    assert text_of(await say(session, "pause acme")) == '"Acme" is already paused.'
    await say(session, "resume it")
    assert "healthy again" in text_of(await answer(session, yes=True))
    events = await say(session, "delete acme permanently")
    assert "concierge source delete ds_" in text_of(events) and session.pending is None
    assert len(await backend.list_sources()) == 1


async def test_update_url(backend: LocalBackend, open_server: RunningServer) -> None:
    await backend.register_source({"name": "Acme", "base_url": open_server.url() + "/old", "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, f"change the url of acme to {open_server.url()}")
    assert calls(events)[-1] == ("update_source", {"source": "Acme", "url": open_server.url()})
    assert "healthy" in text_of(await answer(session, yes=True))


async def test_agent_questions_always_use_the_live_catalog(backend: LocalBackend,
                                                           open_server: RunningServer) -> None:
    await backend.register_source({"name": "Acme", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "acme"})
    await backend.create_agent({"slug": "support-bot"})
    await backend.create_agent({"slug": "sales-bot"})
    session = ConciergeSession(backend, OfflinePlanner())
    for _ in range(2):  # asked twice: resolved twice, never from memory
        events = await say(session, "what tools does my support agent have right now?")
        assert calls(events)[-1] == ("list_agent_tools", {"agent": "support-bot"})
        assert "support-bot has 4 tools" in text_of(events)
    assert "Which agent?" in text_of(await say(session, "what tools does my agent have?"))
    events = await say(session, "sales-bot")
    assert calls(events) == [("list_agent_tools", {"agent": "sales-bot"})]
    assert "couldn't find an agent" in text_of(await say(session, "what tools does the billing agent have?"))


async def test_unknown_requests_get_a_plain_answer(backend: LocalBackend) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    reply = text_of(await say(session, "what's the weather like?"))
    assert "didn't understand" in reply and "OPENAI_API_KEY" in reply and "help" in reply
    assert "Rotate the token" in text_of(await say(session, "help"))


async def test_nothing_to_act_on(backend: LocalBackend) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    assert "no MCP sources yet" in text_of(await say(session, "revoke my custom MCP source"))
    assert "no agents" in text_of(await say(session, "what tools does my support agent have?"))
    assert "Your sandboxes: default (current)." == text_of(await say(session, "which sandboxes do I have?"))


async def test_agent_tools_with_no_agents_shows_what_an_agent_would_get(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found by hand: a new user asks about "my support agent" before creating any agent."""
    await backend.register_source({"name": "Demo", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "demo"})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await say(session, "What tools does my support agent have right now?")
    assert [name for name, _ in calls(events)] == ["list_agents", "list_agent_tools"]
    text = text_of(events)
    assert text.startswith('There are no agents in sandbox "default" yet')
    assert 'say "create an agent called support"' in text  # a chat user is told the chat words
    assert "This sandbox offers 4 tools right now:" in text and "- demo_echo" in text
