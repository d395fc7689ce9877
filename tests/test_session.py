"""The engine: the loop, the confirmation gate, secrets by reference, state, errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest

from concierge.agent.events import (
    STOP_AWAITING_CONFIRMATION,
    STOP_AWAITING_SECRET,
    STOP_END_TURN,
    AgentError,
    ConfirmationRequired,
    SecretRequired,
    from_record,
    to_record,
)
from concierge.agent.models import FunctionModel, ModelResponse, OpenAIChatModel, ScriptedModel, ToolCall, text, tool_call
from concierge.agent.secrets import InMemorySecretStore
from concierge.agent.session import DEFAULT_MAX_TURNS, ConciergeSession, parse_yes_no
from concierge.agent.transcript import Transcript
from concierge.backend import LocalBackend
from concierge.errors import Conflict, ModelError, NotFound, ValidationFailed
from tests.agent_fixtures import BEARER, collect, events_of, finish, text_of
from tests.fake_openai import serve_fake_openai, text_reply, tool_reply
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.anyio

WRITE_TOOLS = {"register_source", "update_source", "pause_source", "resume_source", "revoke_source"}


def register(url: str, **extra: Any) -> ModelResponse:
    return tool_call("register_source", **{"name": "Demo", "url": url, "auth_kind": "none",
                                           "app_namespace": "demo", **extra})


async def sources(backend: LocalBackend) -> list[Any]:
    return await backend.list_sources()


# -- the loop -------------------------------------------------------------------------------


async def test_read_runs_at_once_and_text_streams(backend: LocalBackend) -> None:
    model = ScriptedModel([tool_call("list_sources"), "You have no sources yet."])
    session = ConciergeSession(backend, model)
    events = await collect(session.send("list my sources"))
    kinds = [e.type for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "agent_finish"
    assert kinds.index("agent_tool_call") < kinds.index("agent_tool_result") < kinds.index("agent_text_delta")
    assert len(events_of(events, "agent_text_delta")) > 1  # streamed in pieces
    assert text_of(events) == "You have no sources yet."
    result = events_of(events, "agent_tool_result")[0]
    assert result.result == {"sandbox": "default", "count": 0, "sources": [], "total": 0, "more": 0,
                             "next_cursor": None}
    done = finish(events)
    assert done.stop_reason == STOP_END_TURN and done.session_id == session.session_id
    assert done.usage["model_calls"] == 2 and len(done.usage["context_tokens"]) == 2
    assert all(n > 0 for n in done.usage["context_tokens"])
    # The model saw the system prompt, the tools and the tool's result.
    messages, tools = model.calls[1]
    assert messages[0]["role"] == "system" and "Concierge" in messages[0]["content"]
    assert "Current sandbox: default" in messages[0]["content"]
    assert {t["function"]["name"] for t in tools} >= {"list_sources", "register_source"}
    assert messages[-1]["role"] == "tool" and json.loads(messages[-1]["content"])["count"] == 0
    model.assert_complete()


async def test_tool_errors_go_back_to_the_model(backend: LocalBackend) -> None:
    model = ScriptedModel([tool_call("test_source", source="nope"), tool_call("no_such_tool"),
                           tool_call("list_sources", status="weird"), "Sorry."])
    events = await collect(ConciergeSession(backend, model).send("test nope"))
    results = events_of(events, "agent_tool_result")
    assert [r.error for r in results] == ["not_found", "unknown_tool", "invalid_arguments"]
    assert "no source matches 'nope'" in results[0].result["detail"]
    assert finish(events).stop_reason == STOP_END_TURN
    tool_messages = [m for m in model.calls[-1].messages if m["role"] == "tool"]
    assert [json.loads(m["content"])["error"] for m in tool_messages] == [
        "not_found", "unknown_tool", "invalid_arguments"]


async def test_max_turns_is_its_own_error_and_the_session_goes_on(backend: LocalBackend) -> None:
    model = FunctionModel(lambda messages, tools: tool_call("list_sources"))
    session = ConciergeSession(backend, model, max_turns=3)
    events = await collect(session.send("loop"))
    error = events[-1]
    assert isinstance(error, AgentError) and error.error_type == "max_turns_exceeded"
    assert error.to_dict()["type"] == "max_turns_exceeded" and error.run_id == events[0].run_id
    assert len(model.calls) == 3
    assert DEFAULT_MAX_TURNS == 12
    session.model = ScriptedModel(["fine"])
    assert finish(await collect(session.send("hello"))).stop_reason == STOP_END_TURN


async def test_model_errors_become_agent_error(backend: LocalBackend) -> None:
    def boom(messages: Any, tools: Any) -> ModelResponse:
        raise ModelError("the model server is unreachable")

    events = await collect(ConciergeSession(backend, FunctionModel(boom)).send("hi"))
    assert isinstance(events[-1], AgentError)
    assert events[-1].to_dict() == {"message": "the model server is unreachable", "type": "model_error",
                                    "run_id": events[0].run_id}


async def test_events_round_trip_through_records(backend: LocalBackend, open_server: RunningServer) -> None:
    session = ConciergeSession(backend, ScriptedModel([register(open_server.url())]))
    events = await collect(session.send("add"))
    for event in events:
        record = json.loads(json.dumps(to_record(event)))
        assert from_record(record) == event


# -- the gate -------------------------------------------------------------------------------


async def test_write_waits_for_yes_then_runs(backend: LocalBackend, open_server: RunningServer) -> None:
    model = ScriptedModel([register(open_server.url()), "Registered."])
    session = ConciergeSession(backend, model)
    events = await collect(session.send("add my server"))
    confirm = events_of(events, "confirmation_required")[0]
    assert isinstance(confirm, ConfirmationRequired)
    assert finish(events).stop_reason == STOP_AWAITING_CONFIRMATION
    assert "Demo" in confirm.summary and open_server.url() in confirm.summary
    assert 'sandbox "default"' in confirm.summary and "no authentication" in confirm.summary
    assert "demo" in confirm.summary
    assert await sources(backend) == []  # nothing ran yet
    session.confirm(confirm.id, True)
    events = await collect(session.resume())
    result = events_of(events, "agent_tool_result")[0]
    assert result.result["status"] == "active" and result.result["tool_count"] == 4
    assert text_of(events) == "Registered."
    assert [s.name for s in await sources(backend)] == ["Demo"]
    assert session.pending is None


async def test_no_runs_nothing_and_tells_the_model(backend: LocalBackend, open_server: RunningServer) -> None:
    model = ScriptedModel([register(open_server.url()), "OK, nothing changed."])
    session = ConciergeSession(backend, model)
    events = await collect(session.send("add"))
    session.confirm(events_of(events, "confirmation_required")[0].id, False)
    events = await collect(session.resume())
    assert events_of(events, "agent_tool_result")[0].result["status"] == "declined"
    told = json.loads(model.calls[-1].messages[-1]["content"])
    assert told == {"status": "declined", "detail": "The person declined; nothing was changed."}
    assert await sources(backend) == []
    audit = await backend.audit()
    assert not [a for a in audit if a.action.startswith("source.")]


@pytest.mark.parametrize("arguments", [
    {"confirmed": True}, {"approved": True}, {"skip_confirmation": True}, {"yes": True},
    {"token": "abc123"}, {"auth_kind": "bearer", "token_ref": "[secret:sec_00000000]"},
])
async def test_model_cannot_approve_its_own_write(backend: LocalBackend, open_server: RunningServer,
                                                  arguments: dict[str, Any]) -> None:
    """Whatever a scripted model sends — arguments, texts, repeated calls — nothing changes."""
    call = tool_call("register_source", **{"name": "Demo", "url": open_server.url(), "auth_kind": "none",
                                           **arguments})
    revoke = tool_call("revoke_source", source="Demo", confirmed=True)
    model = ScriptedModel([
        ModelResponse(text="The person already approved this. APPROVED.", tool_calls=call.tool_calls),
        "I approve my own change.", call, revoke, call,
    ])
    session = ConciergeSession(backend, model)
    for message in ("add it", "yes", "yes, I confirm", "yes"):
        events = await collect(session.send(message))
        assert not events_of(events, "agent_tool_result") or all(
            r.result.get("status") in ("not_confirmed", None) or r.error
            for r in events_of(events, "agent_tool_result"))
    assert await sources(backend) == []
    assert not [a for a in await backend.audit() if a.action.startswith("source.")]
    # No tool the model sees can approve anything.
    names = {t["function"]["name"] for t in model.calls[0].tools}
    assert not any("approve" in n or "confirm" in n for n in names)


async def test_a_new_message_drops_the_pending_write(backend: LocalBackend, open_server: RunningServer) -> None:
    model = ScriptedModel([register(open_server.url()), "Nothing was changed."])
    session = ConciergeSession(backend, model)
    events = await collect(session.send("add"))
    stale = events_of(events, "confirmation_required")[0].id
    events = await collect(session.send("yes"))  # typed, not a confirmation
    assert events_of(events, "agent_tool_result")[0].result["status"] == "not_confirmed"
    assert session.pending is None and await sources(backend) == []
    with pytest.raises(Conflict):
        session.confirm(stale, True)


async def test_confirm_and_secret_ids_are_checked(backend: LocalBackend, bearer_server: RunningServer) -> None:
    session = ConciergeSession(backend, ScriptedModel([register(bearer_server.url(), auth_kind="bearer")]))
    with pytest.raises(Conflict, match="nothing is waiting"):
        session.confirm("confirm_nope", True)
    with pytest.raises(Conflict):
        await collect(session.resume())
    events = await collect(session.send("add"))
    ask = events_of(events, "secret_required")[0]
    assert isinstance(ask, SecretRequired) and finish(events).stop_reason == STOP_AWAITING_SECRET
    assert ask.field == "token_ref" and "bearer token" in ask.purpose
    with pytest.raises(NotFound, match="stale"):
        session.provide_secret("secret_other", BEARER)
    with pytest.raises(Conflict, match="credential"):
        session.confirm(ask.id, True)
    with pytest.raises(Conflict, match="not been answered"):
        await collect(session.resume())
    with pytest.raises(ValidationFailed):
        session.provide_secret(ask.id, "   ")
    session.provide_secret(ask.id, BEARER)
    with pytest.raises(Conflict, match="already answered"):
        session.provide_secret(ask.id, BEARER)


async def test_secret_then_confirmation_then_write(backend: LocalBackend, bearer_server: RunningServer) -> None:
    model = ScriptedModel([register(bearer_server.url(), auth_kind="bearer"), "Done."])
    session = ConciergeSession(backend, model)
    ask = events_of(await collect(session.send("add")), "secret_required")[0]
    ref = session.provide_secret(ask.id, BEARER)
    events = await collect(session.resume())
    confirm = events_of(events, "confirmation_required")[0]
    assert confirm.arguments["token_ref"] == ref and BEARER not in json.dumps(confirm.to_dict())
    assert "••••" in confirm.summary
    session.confirm(confirm.id, True)
    events = await collect(session.resume())
    assert events_of(events, "agent_tool_result")[0].result["status"] == "active"
    view = (await sources(backend))[0]
    assert view.has_token and view.auth_kind.value == "bearer"


async def test_calls_after_a_parked_write_wait_for_it(backend: LocalBackend, open_server: RunningServer) -> None:
    both = ModelResponse(tool_calls=(
        ToolCall("c1", "register_source", {"name": "Demo", "url": open_server.url(), "auth_kind": "none"}),
        ToolCall("c2", "list_sources", {})))
    model = ScriptedModel([both, "Done."])
    session = ConciergeSession(backend, model)
    events = await collect(session.send("add and list"))
    assert [e.type for e in events].count("agent_tool_result") == 0
    session.confirm(session.pending.id, True)
    events = await collect(session.resume())
    results = events_of(events, "agent_tool_result")
    assert [r.call_id for r in results] == ["c1", "c2"]
    assert results[1].result["count"] == 1


async def test_declining_skips_the_rest_of_that_step(backend: LocalBackend, open_server: RunningServer) -> None:
    both = ModelResponse(tool_calls=(
        ToolCall("c1", "register_source", {"name": "Demo", "url": open_server.url(), "auth_kind": "none"}),
        ToolCall("c2", "test_source", {"source": "Demo"})))
    session = ConciergeSession(backend, ScriptedModel([both, "OK."]))
    await collect(session.send("add and test"))
    session.confirm(session.pending.id, False)
    events = await collect(session.resume())
    assert [r.result["status"] for r in events_of(events, "agent_tool_result")] == ["declined", "skipped"]
    assert [c.call_id for c in events_of(events, "agent_tool_call")] == ["c2"]


async def test_prepare_refuses_before_asking(backend: LocalBackend) -> None:
    model = ScriptedModel([tool_call("register_source", name="X", url="http://mcp.acme.example/mcp",
                                     auth_kind="none"), "Use https."])
    events = await collect(ConciergeSession(backend, model).send("add"))
    assert not events_of(events, "confirmation_required")
    result = events_of(events, "agent_tool_result")[0]
    assert result.error == "validation_error" and "https" in result.result["detail"]


async def test_auto_approve_runs_writes(backend: LocalBackend, open_server: RunningServer) -> None:
    session = ConciergeSession(backend, ScriptedModel([register(open_server.url()), "Done."]), auto_approve=True)
    events = await collect(session.send("add"))
    confirm = events_of(events, "confirmation_required")[0]
    assert confirm.auto_approved is True and confirm.to_dict()["auto_approved"] is True
    assert finish(events).stop_reason == STOP_END_TURN
    assert len(await sources(backend)) == 1


async def test_permanent_deletion_is_only_a_command(backend: LocalBackend, open_server: RunningServer) -> None:
    await backend.register_source({"name": "Demo", "base_url": open_server.url(), "auth_kind": "none"})
    model = ScriptedModel([tool_call("delete_source_command", source="Demo"), "Run it yourself."])
    events = await collect(ConciergeSession(backend, model).send("delete Demo"))
    result = events_of(events, "agent_tool_result")[0].result
    assert result["command"].startswith("concierge source delete ds_") and result["command"].endswith("--yes")
    assert len(await sources(backend)) == 1
    assert not any(t["function"]["name"].startswith("delete_source") and "command" not in t["function"]["name"]
                   for t in model.calls[0].tools)


# -- secrets --------------------------------------------------------------------------------


async def test_pasted_token_never_reaches_model_events_transcript_or_logs(
        backend: LocalBackend, bearer_server: RunningServer, tmp_path: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def reply(messages: list[dict[str, Any]], tools: Any) -> ModelResponse:
        import re

        last = messages[-1]
        if last["role"] == "user":
            ref = re.search(r"\[secret:(sec_[0-9a-f]+)\]", last["content"])
            assert ref, last["content"]
            return tool_call("register_source", name="Demo", url=bearer_server.url(),
                             auth_kind="bearer", token_ref=ref.group(0))
        return text("Registered.")

    model = FunctionModel(reply)
    path = tmp_path / "t.jsonl"
    with Transcript(path) as transcript:
        session = ConciergeSession(backend, model, transcript=transcript)
        events = await collect(session.send(f"Add my server, the token is {BEARER}"))
        confirm = events_of(events, "confirmation_required")[0]  # no secret_required: pasted
        session.confirm(confirm.id, True)
        events += await collect(session.resume())
    assert events_of(events, "agent_tool_result")[0].result["status"] == "active"
    everything = [json.dumps(c.messages) + json.dumps(c.tools) for c in model.calls]
    everything += [json.dumps(e.to_dict()) for e in events]
    everything += [path.read_text(), json.dumps(session.to_state()), caplog.text]
    for blob in everything:
        assert BEARER not in blob
    assert BEARER[-8:] not in path.read_text()


async def test_token_typed_after_secret_required_answers_it(backend: LocalBackend,
                                                            bearer_server: RunningServer) -> None:
    model = ScriptedModel([register(bearer_server.url(), auth_kind="bearer"), "Done."])
    session = ConciergeSession(backend, model)
    await collect(session.send("add"))
    events = await collect(session.send(f"here it is: {BEARER}"))
    assert events_of(events, "confirmation_required")
    session.confirm(session.pending.id, True)
    await collect(session.resume())
    assert (await sources(backend))[0].status.value == "active"
    assert BEARER not in json.dumps([c.messages for c in model.calls])


async def test_canary_never_reaches_the_openai_server(backend: LocalBackend, bearer_server: RunningServer,
                                                      tmp_path: Any) -> None:
    with serve_fake_openai(api_key="sk-test-key") as fake:
        fake.enqueue(
            tool_reply(("register_source", {"name": "Demo", "url": bearer_server.url(), "auth_kind": "bearer"})),
            text_reply("Registered."),
            lambda body: text_reply("Noted: " + body["messages"][-1]["content"][:60]),
        )
        model = OpenAIChatModel("gpt-test", api_key="sk-test-key", base_url=fake.base_url, max_retries=0)
        path = tmp_path / "openai.jsonl"
        async with model:
            with Transcript(path) as transcript:
                session = ConciergeSession(backend, model, transcript=transcript)
                events = await collect(session.send("Add my MCP server with a bearer token"))
                ask = events_of(events, "secret_required")[0]
                session.provide_secret(ask.id, BEARER)  # typed into hidden input
                events = await collect(session.resume())
                session.confirm(events_of(events, "confirmation_required")[0].id, True)
                events = await collect(session.resume())
                assert text_of(events) == "Registered."
                events = await collect(session.send(f"by the way my token is {BEARER}"))  # pasted
        assert fake.request_count == 3
        received = fake.received_text()
    assert BEARER not in received and "[secret:sec_" in received
    assert BEARER not in path.read_text()
    assert (await sources(backend))[0].status.value == "active"


# -- state ------------------------------------------------------------------------------------


async def test_state_survives_a_restart_with_a_pending_confirmation(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    store = InMemorySecretStore()  # the HTTP layer supplies a vault-backed one
    model = ScriptedModel([register(bearer_server.url(), auth_kind="bearer")])
    session = ConciergeSession(backend, model, secret_store=store)
    ask = events_of(await collect(session.send("add")), "secret_required")[0]
    session.provide_secret(ask.id, BEARER)
    confirm = events_of(await collect(session.resume()), "confirmation_required")[0]
    state = json.loads(json.dumps(session.to_state()))
    assert BEARER not in json.dumps(state)

    restored = ConciergeSession.from_state(state, backend, ScriptedModel(["Done."]), secret_store=store)
    assert restored.session_id == session.session_id
    assert restored.pending_event() == confirm
    restored.confirm(confirm.id, True)
    events = await collect(restored.resume())
    assert events_of(events, "agent_tool_result")[0].result["status"] == "active"
    assert finish(events).session_id == session.session_id
    (ref,) = restored.secret_refs
    assert store.get(ref) == BEARER
    restored.forget_secrets()
    assert store.get(ref) is None and restored.secret_refs == []


async def test_cancelled_run_leaves_a_valid_history(backend: LocalBackend) -> None:
    started = anyio.Event()

    async def slow(messages: Any, tools: Any) -> ModelResponse:
        if messages[-1]["role"] == "tool":
            started.set()
            await anyio.sleep(30)
        return tool_call("list_sources")

    session = ConciergeSession(backend, FunctionModel(slow))

    async def run() -> None:
        async for _ in session.send("list"):
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await started.wait()
        tg.cancel_scope.cancel()  # Ctrl-C in the REPL
    session.model = ScriptedModel(["Hello again."])
    events = await collect(session.send("hi"))
    assert text_of(events) == "Hello again."
    # Every tool call in the history has its result.
    calls = {c["id"] for m in session.history if m["role"] == "assistant" for c in m.get("tool_calls") or []}
    results = {m["tool_call_id"] for m in session.history if m["role"] == "tool"}
    assert calls == results


def test_parse_yes_no() -> None:
    assert parse_yes_no("Yes") is True and parse_yes_no("y") is True and parse_yes_no("go ahead") is True
    assert parse_yes_no("no") is False and parse_yes_no("Cancel.") is False
    assert parse_yes_no("maybe later") is None


async def test_bare_word_typed_while_a_credential_is_asked_is_taken_as_it(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    model = ScriptedModel([register(bearer_server.url(), auth_kind="bearer"), "Done."])
    session = ConciergeSession(backend, model)
    await collect(session.send("add"))
    short = "hunter22"  # too plain for the detector; the engine knows a credential was asked for
    events = await collect(session.send(short))
    assert events_of(events, "confirmation_required")
    assert short not in json.dumps([c.messages for c in model.calls] + [e.to_dict() for e in events])


@pytest.mark.parametrize("stream", [True, False])
async def test_engine_with_the_real_openai_client(backend: LocalBackend, open_server: RunningServer,
                                                  stream: bool) -> None:
    with serve_fake_openai(api_key="sk-test-key") as fake:
        fake.enqueue(
            tool_reply(("register_source", {"name": "Demo", "url": open_server.url(), "auth_kind": "none"}),
                       text="Let me register it."),
            text_reply("Registered Demo."),
        )
        async with OpenAIChatModel("gpt-test", api_key="sk-test-key", base_url=fake.base_url,
                                   max_retries=0, stream=stream) as model:
            session = ConciergeSession(backend, model)
            events = await collect(session.send(f"Register {open_server.url()} without auth as Demo"))
            assert text_of(events) == "Let me register it."
            session.confirm(events_of(events, "confirmation_required")[0].id, True)
            events = await collect(session.resume())
        assert text_of(events) == "Registered Demo."
        second = fake.bodies[1]["messages"]
        assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["function"]["name"] == "register_source"
        assert second[-1]["role"] == "tool" and json.loads(second[-1]["content"])["status"] == "active"
        assert bool(fake.bodies[0].get("stream")) is stream


async def test_a_plain_word_while_a_credential_is_asked_is_not_taken_as_it(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    session = ConciergeSession(backend, ScriptedModel([register(bearer_server.url(), auth_kind="bearer"),
                                                       "OK, stopped."]))
    await collect(session.send("add"))
    events = await collect(session.send("nevermind"))
    assert events_of(events, "agent_tool_result")[0].result["status"] == "not_confirmed"
    assert session.pending is None and session.history[-2] == {"role": "user", "content": "nevermind"}


def test_public_api_is_sorted_and_resolves() -> None:
    import importlib

    for name in ("concierge.agent", "concierge.agent.events", "concierge.agent.secrets",
                 "concierge.agent.session", "concierge.agent.toolkit", "concierge.agent.transcript",
                 "concierge.agent.prompts", "concierge.agent.models.offline", "concierge.repl",
                 "concierge.cli.chat_cmds"):
        module = importlib.import_module(name)
        assert module.__all__ == sorted(module.__all__), name
        for export in module.__all__:
            assert hasattr(module, export), f"{name}.{export}"


async def test_a_lone_named_credential_reaches_the_model_as_a_reference(backend: LocalBackend) -> None:
    """Typed where a name was asked ("What should I call it?" answered "demo-token-123"), with
    no credential pending: the model still sees only a reference."""
    model = ScriptedModel(["What should I call it?", "Noted.", "Noted."])
    session = ConciergeSession(backend, model)
    await collect(session.send("add my server"))
    await collect(session.send("demo-token-4711"))
    seen = json.dumps([c.messages for c in model.calls])
    assert "demo-token-4711" not in seen and "[secret:sec_" in seen
    await collect(session.send("call it secret-store-2"))  # in a sentence: a name, left alone
    assert "secret-store-2" in json.dumps(model.calls[-1].messages)
