"""The engine's typed state: pending writes as dataclasses, the saved JSON shape unchanged,
and the context budget counting the tools once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from concierge.agent.budget import ContextBudget, TokenCounter
from concierge.agent.models import ScriptedModel, tool_call
from concierge.agent.session import (
    ConciergeSession,
    ConfirmAnswer,
    PendingCall,
    PendingConfirmation,
    PendingSecret,
    SecretAnswer,
)
from concierge.agent.toolkit import default_toolkit
from concierge.backend import LocalBackend
from tests.agent_fixtures import BEARER, collect
from tests.mcp_servers import RunningServer

pytestmark = pytest.mark.anyio


async def test_pending_writes_are_typed_and_keep_their_saved_shape(
        backend: LocalBackend, bearer_server: RunningServer) -> None:
    model = ScriptedModel([tool_call("register_source", name="Demo", url=bearer_server.url(), auth_kind="bearer",
                                     app_namespace="demo")])
    session = ConciergeSession(backend, model)
    await collect(session.send("add"))
    pending = session.pending
    assert isinstance(pending, PendingSecret) and pending.answer is None
    assert pending.call == PendingCall(pending.call.id, "register_source", {
        "name": "Demo", "url": bearer_server.url(), "auth_kind": "bearer", "app_namespace": "demo"})
    saved = session.to_state()["pending"]
    assert set(saved) == {"kind", "id", "call", "queue", "purpose", "field", "answer"}
    assert saved["kind"] == "secret" and saved["answer"] is None and saved["field"] == "token_ref"
    # Callers written against the dict shape still read it.
    assert pending["id"] == pending.id and pending.get("answer") is None and pending["kind"] == "secret"

    ref = session.provide_secret(pending.id, BEARER)
    assert pending.answer == SecretAnswer(ref)
    await collect(session.resume())
    pending = session.pending
    assert isinstance(pending, PendingConfirmation) and "Demo" in pending.summary
    state = json.loads(json.dumps(session.to_state()))
    assert set(state["pending"]) == {"kind", "id", "call", "queue", "summary", "answer"}
    restored = ConciergeSession.from_state(state, backend, ScriptedModel(["Done."]), secret_store=session.secrets)
    assert restored.pending == pending and restored.pending_event() == session.pending_event()
    restored.confirm(pending.id, True)
    assert restored.pending.answer == ConfirmAnswer(True)
    assert restored.to_state()["pending"]["answer"] == {"approved": True}
    await collect(restored.resume())
    assert (await backend.list_sources())[0].status.value == "active"


async def test_a_state_saved_before_the_typing_is_read(backend: LocalBackend, open_server: RunningServer) -> None:
    """Conversations stored by the HTTP layer as plain JSON come back as typed pending writes."""
    call = {"id": "call_1", "name": "pause_source", "arguments": {"source": "Demo"}}
    state = {"version": 1, "session_id": "cs_000000000001", "sandbox": None,
             "history": [{"role": "user", "content": "pause demo"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "call_1", "type": "function",
                              "function": {"name": "pause_source", "arguments": json.dumps(call["arguments"])}}]}],
             "pending": {"kind": "confirmation", "id": "confirm_000000000001", "call": call, "queue": [],
                         "summary": "Pause Demo.", "answer": None},
             "secret_refs": [], "totals": {}, "call_seq": 1}
    await backend.register_source({"name": "Demo", "base_url": open_server.url(), "auth_kind": "none"})
    session = ConciergeSession.from_state(state, backend, ScriptedModel(["Paused."]))
    assert isinstance(session.pending, PendingConfirmation) and session.pending.call.arguments == {"source": "Demo"}
    session.confirm("confirm_000000000001", True)
    await collect(session.resume())
    assert (await backend.list_sources())[0].status.value == "paused"


def test_the_budget_counts_the_tools_once_per_list() -> None:
    counted: list[int] = []

    class Counting(TokenCounter):
        def count_tools(self, tools: Any) -> int:
            counted.append(len(tools))
            return super().count_tools(tools)

    budget = ContextBudget(counter=Counting())
    tools = default_toolkit().definitions()
    first = budget.fit("system", tools, [{"role": "user", "content": "hi"}])
    second = budget.fit("system", tools, [{"role": "user", "content": "hi again"}])
    assert counted == [len(tools)] and first.tools_tokens == second.tools_tokens > 0
    budget.fit("system", list(tools[:3]), [{"role": "user", "content": "hi"}])
    assert counted == [len(tools), 3]  # another list is counted anew


async def test_the_planner_reads_a_catalog_too_big_for_a_models_context(backend: LocalBackend) -> None:
    """A result over the budget's per-result limit is shortened for a language model, but the
    offline planner reads the whole history (it has no context window to fit)."""
    from concierge.agent.models import OfflinePlanner
    from tests.agent_fixtures import events_of, text_of
    from tests.mcp_servers import serve_in_thread, tools_app

    with serve_in_thread(tools_app(count=120)) as big:
        await backend.register_source({"name": "Big", "base_url": big.url(), "auth_kind": "none",
                                       "app_namespace": "big"})
        session = ConciergeSession(backend, OfflinePlanner())
        events = await collect(session.send("what tools do I have"))
    assert events_of(events, "agent_tool_call")[-1].name == "list_agent_tools"
    assert text_of(events).startswith("This sandbox offers 120 tools right now:")
    stored = [m for m in session.history if m["role"] == "tool"][-1]["content"]
    assert '"count": 120' in stored and "result shortened" not in stored
    sent = session.budget.fit("system", [], session.history).messages
    assert "result shortened" in [m for m in sent if m["role"] == "tool"][-1]["content"]  # for an LLM
