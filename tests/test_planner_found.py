"""The offline planner and the engine on what was found by trying them (issue 8).

Each test is one of the issue's "Found by trying it" items, run through a real session
against a real registry and real MCP servers on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from concierge.agent.models import OfflinePlanner
from concierge.agent.secrets import new_ref, ref_text
from concierge.agent.session import ConciergeSession, PendingConfirmation, PendingSecret, parse_yes_no
from concierge.backend import LocalBackend
from tests.agent_fixtures import BEARER, collect, events_of, text_of
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.anyio


def calls(events: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.name, e.arguments) for e in events_of(events, "agent_tool_call")]


def pasted(session: ConciergeSession, value: str) -> str:
    """A credential as the chat surfaces hand it over: already replaced by a reference."""
    ref = new_ref()
    session.secrets.put(ref, value)
    return ref_text(ref)


async def test_a_url_of_an_unregistered_server_is_a_registration_not_a_change_to_ht(
        backend: LocalBackend, open_server: RunningServer, bearer_server: RunningServer) -> None:
    """ "register URL called Capped … rate cap of 30" changed the rate cap of a source named
    "HT" (a piece of "http"); with ``ask --yes`` it ran."""
    await backend.register_source({"name": "HT", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "ht"})
    session = ConciergeSession(backend, OfflinePlanner(), auto_approve=True)  # as `ask --yes`
    events = await collect(session.send(
        f"register {bearer_server.url('/other')} called Capped with no auth and a rate cap of 30 per minute"))
    writes = [(n, a) for n, a in calls(events) if n != "list_sources"]
    assert writes == [("register_source", {"name": "Capped", "url": bearer_server.url("/other"),
                                           "auth_kind": "none", "app_namespace": "capped",
                                           "rate_cap_per_minute": 30})]
    by_name = {s.name: s for s in await backend.list_sources()}
    assert by_name["HT"].rate_cap_per_minute == 60 and by_name["Capped"].rate_cap_per_minute == 30


async def test_ht_is_found_by_its_whole_name_and_asked_about_when_unclear(
        backend: LocalBackend, open_server: RunningServer) -> None:
    await backend.register_source({"name": "HT", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "ht"})
    await backend.register_source({"name": "Demo", "base_url": open_server.url("/x"), "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send("pause the http server"))
    assert session.pending is None and not events_of(events, "confirmation_required")
    assert 'I couldn\'t find a source called "http"' in text_of(events)
    events = await collect(session.send("set the rate cap of HT to 20"))
    assert calls(events)[-1] == ("update_source", {"source": "HT", "rate_cap_per_minute": 20})


async def test_a_new_request_after_an_unanswered_token_prompt_starts_a_new_flow(
        backend: LocalBackend, open_server: RunningServer, bearer_server: RunningServer) -> None:
    """After Ctrl-C at the token prompt, "add URL called Gamma with bearer token …" confirmed the
    old flow's name and URL with the new token."""
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send(f"add {open_server.url()} with a bearer token called Beta"))
    assert isinstance(session.pending, PendingSecret)  # the person presses Ctrl-C here
    # The engine redacts the pasted token itself: one new reference, but not the whole message.
    events = await collect(session.send(f"add {bearer_server.url()} called Gamma with bearer token {BEARER}"))
    assert events_of(events, "agent_tool_result")[0].result["status"] == "not_confirmed"  # Beta dropped
    assert isinstance(session.pending, PendingConfirmation)
    call = session.pending.call
    assert call.arguments["name"] == "Gamma" and call.arguments["url"] == bearer_server.url()
    assert session.secrets.get(call.arguments["token_ref"].strip("[]").removeprefix("secret:")) == BEARER
    session.confirm(session.pending.id, True)
    assert "healthy" in text_of(await collect(session.resume()))
    assert [s.name for s in await backend.list_sources()] == ["Gamma"]


async def test_a_credential_typed_alone_still_answers_the_token_prompt(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    await collect(session.send(f"add {bearer_server.url()} with a bearer token called Beta"))
    events = await collect(session.send(f"here it is: {BEARER}"))
    assert events_of(events, "confirmation_required")
    assert session.pending.call.arguments["name"] == "Beta"


async def test_a_correction_mid_flow_updates_the_slots_it_names(
        backend: LocalBackend, open_server: RunningServer, bearer_server: RunningServer) -> None:
    """ "actually, it's http://…/mcp and it has no auth" (asked for a name) became the name."""
    session = ConciergeSession(backend, OfflinePlanner())
    reply = text_of(await collect(session.send(f"add {bearer_server.url()} with a bearer token")))
    assert reply.startswith("What should I call it?")
    reply = text_of(await collect(session.send(f"actually, it's {open_server.url()} and it has no auth")))
    assert reply.startswith("What should I call it?")
    events = await collect(session.send("Alpha"))
    assert calls(events)[-1] == ("register_source", {"name": "Alpha", "url": open_server.url(),
                                                     "auth_kind": "none", "app_namespace": "alpha"})


@pytest.mark.parametrize("phrase", ["with bearer token {ref}", "bearer token: {ref}", "using the bearer {ref}",
                                    "with token {ref}"])
async def test_a_bearer_token_is_the_credential_never_a_header_name(
        backend: LocalBackend, bearer_server: RunningServer, phrase: str) -> None:
    """ "with bearer token demo-token-123" was read as a header name."""
    session = ConciergeSession(backend, OfflinePlanner())
    ref = pasted(session, BEARER)
    events = await collect(session.send(f"add {bearer_server.url()} called Demo {phrase.format(ref=ref)}"))
    assert not events_of(events, "secret_required")
    name, arguments = calls(events)[-1]
    assert name == "register_source" and arguments["auth_kind"] == "bearer"
    assert arguments["token_ref"] == ref and "auth_header" not in arguments
    session.confirm(session.pending.id, True)
    assert "healthy" in text_of(await collect(session.resume()))


async def test_an_unredacted_bearer_value_is_never_a_header_name(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send(f"add {bearer_server.url()} called Demo with bearer token demo-token-123"))
    name, arguments = calls(events)[-1]
    assert arguments["auth_kind"] == "bearer" and "auth_header" not in arguments


@pytest.mark.parametrize("answer", ["sure", "yes please", "ok, go ahead", "yep", "do it"])
async def test_a_typed_yes_is_asked_again_never_taken_as_no(
        backend: LocalBackend, open_server: RunningServer, answer: str) -> None:
    await backend.register_source({"name": "Demo", "base_url": open_server.url(), "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    await collect(session.send("pause demo"))
    first = session.pending
    events = await collect(session.send(answer))
    assert events_of(events, "agent_tool_result")[0].result["status"] == "not_confirmed"
    assert isinstance(session.pending, PendingConfirmation) and session.pending.id != first.id
    assert session.pending.call.name == "pause_source" and session.pending.call.arguments == first.call.arguments
    assert parse_yes_no(answer) is True


@pytest.mark.parametrize("answer", ["no", "no thanks", "nope", "not now", "don't"])
async def test_a_typed_no_gets_one_decline_message(
        backend: LocalBackend, open_server: RunningServer, answer: str) -> None:
    await backend.register_source({"name": "Demo", "base_url": open_server.url(), "auth_kind": "none"})
    session = ConciergeSession(backend, OfflinePlanner())
    await collect(session.send("pause demo"))
    events = await collect(session.send(answer))
    texts = [e.text for e in events_of(events, "agent_text_delta")]
    assert texts == ["OK, I've stopped. Nothing was changed."]
    assert session.pending is None and (await backend.list_sources())[0].status.value == "active"
    assert parse_yes_no(answer) is False


async def test_declining_the_confirmation_gets_one_message(backend: LocalBackend,
                                                          open_server: RunningServer) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    await collect(session.send(f"add {open_server.url()} with no auth, call it Scratch"))
    session.confirm(session.pending.id, False)
    events = await collect(session.resume())
    assert [e.text for e in events_of(events, "agent_text_delta")] == [
        'OK — I didn\'t register "Scratch". Nothing was changed.']


def test_parse_yes_no_reads_what_people_type() -> None:
    for text in ("y", "Yes.", "sure", "yes please", "ok go ahead", "yeah, do it", "go ahead", "yup!"):
        assert parse_yes_no(text) is True, text
    for text in ("n", "No.", "nope", "no thanks", "not now", "cancel", "never mind", "don't"):
        assert parse_yes_no(text) is False, text
    for text in ("maybe", "what does it change?", "yes, but rename it first", "pause time"):
        assert parse_yes_no(text) is None, text


async def test_the_planner_never_echoes_a_pasted_value(backend: LocalBackend, bearer_server: RunningServer) -> None:
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send(f"register {bearer_server.url()} called Vault, the token is {BEARER}"))
    assert BEARER not in json.dumps([e.to_dict() for e in events]) + json.dumps(session.history)


async def test_a_refused_value_is_explained_when_the_sources_are_listed_first(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found when merging: "set the rate cap of Demo to 1000" asked for the rate cap again
    without the rule, because listing the sources first cleared the registry's reason."""
    await backend.register_source({"name": "Demo", "base_url": open_server.url(), "auth_kind": "none",
                                   "app_namespace": "demo"})
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send("set the rate cap of Demo to 1000"))
    reply = text_of(events)
    assert "must be less than or equal to 600" in reply and reply.count("600") == 1, reply
    assert "rate_cap_per_minute" not in reply
    assert [n for n, _ in calls(events)] == ["list_sources"]  # nothing proposed


async def test_the_label_offered_is_what_the_request_called_the_server(
        backend: LocalBackend, open_server: RunningServer) -> None:
    """Found in the REPL: "hook up my everything server? it's on localhost port N" offered the
    label "local"; the person had already said what it is."""
    port = open_server.url().split(":")[2].split("/")[0]
    session = ConciergeSession(backend, OfflinePlanner())
    await collect(session.send(f"hey, can you hook up my everything server? it's on localhost port {port}"))
    events = await collect(session.send("none"))
    assert text_of(events).startswith('What should I call it? Give a short label, or say "ok" for "everything".')
    events = await collect(session.send("ok"))
    [asked] = events_of(events, "confirmation_required")
    assert asked.arguments["name"] == "everything" and asked.arguments["app_namespace"] == "everything"
    # a kind of thing is not a label: "my new server" still offers a word from the URL
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send(f"connect my new server at {open_server.url()} with no auth"))
    assert '"ok" for "local"' in text_of(events)
    # nor is which one (found in tmux: "hook up a second server" offered "second")
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send(f"I want to hook up a second server, it's at {open_server.url()}, no auth"))
    assert '"ok" for "local"' in text_of(events)
    # a possessive names it too: "our team's MCP server" is "team"
    session = ConciergeSession(backend, OfflinePlanner())
    events = await collect(session.send(f"hook up our team's MCP server, it lives at {open_server.url()}, no auth"))
    assert '"ok" for "team"' in text_of(events)
