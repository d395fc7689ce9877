"""The `RunResult` fold on its own: what counts as a question, a refusal, a failure."""

from __future__ import annotations

import pytest

from concierge.agent.events import (
    AgentError,
    AgentFinish,
    AgentTextDelta,
    AgentToolCall,
    AgentToolResult,
    ConfirmationRequired,
    Event,
    RunStarted,
    SecretRequired,
)
from concierge.agent.run_result import EXIT_CODES, Outcome, RunResult, questions_in


def fold(*events: Event) -> RunResult:
    result = RunResult()
    for event in (RunStarted(run_id="run_1", session_id="cs_1"), *events):
        result.add(event)
    return result


def finish(reason: str = "end_turn") -> AgentFinish:
    return AgentFinish(stop_reason=reason, session_id="cs_1", usage={"input_tokens": 5, "output_tokens": 2})


@pytest.mark.parametrize(("text", "questions"), [
    ("Which one do you mean?\n1. Acme docs\n2. Acme tools", ["Which one do you mean?"]),
    ("What's the URL of your MCP server? (for example https://mcp.example.com/mcp)",
     ["What's the URL of your MCP server?"]),
    ('Try "What tools does my support agent have right now?" or "List my sources".', []),
    ("It answers at https://x.example/mcp?token=[secret:sec_1a2b3c4d] now.", []),
    ('Done — "Demo" is registered.', []),
    ("OK. How does it authenticate: with a bearer token, or none?",
     ["How does it authenticate: with a bearer token, or none?"]),
])
def test_questions_are_sentences_ending_in_a_question_mark_outside_quotes(text: str, questions: list[str]) -> None:
    assert questions_in(text) == questions


def test_a_question_after_a_read_needs_information() -> None:
    result = fold(AgentToolCall(call_id="c1", name="list_sources", arguments={}),
                  AgentToolResult(call_id="c1", name="list_sources", result={"sources": []}),
                  AgentTextDelta(text="Which one do you mean?"), finish())
    assert result.outcome is Outcome.NEEDS_INFO and EXIT_CODES[result.outcome] == 4
    assert result.final_text == "Which one do you mean?" and result.usage == {"input_tokens": 5, "output_tokens": 2}


def test_a_question_before_the_last_tool_call_does_not_count() -> None:
    result = fold(AgentTextDelta(text="Shall I look?"),
                  AgentToolCall(call_id="c1", name="list_sources", arguments={}),
                  AgentToolResult(call_id="c1", name="list_sources", result={"sources": []}),
                  AgentTextDelta(text="You have no sources."), finish())
    assert result.outcome is Outcome.DONE


def test_a_failed_write_is_an_error_even_with_a_question_after_it() -> None:
    outcome = {"data_source_id": "ds_1", "status": "error", "health_error": "HTTP 401", "name": "Demo"}
    result = fold(AgentToolCall(call_id="c1", name="register_source", arguments={"name": "Demo"}),
                  ConfirmationRequired(id="confirm_1", call_id="c1", tool="register_source", summary="Register",
                                       arguments={}, auto_approved=True),
                  AgentToolResult(call_id="c1", name="register_source", result=outcome),
                  AgentTextDelta(text="It failed its health check. Want me to test it again?"), finish())
    assert result.outcome is Outcome.ERROR
    assert [c.name for c in result.writes] == ["register_source"]
    assert result.errors[0].kind == "health" and result.errors[0].message == "HTTP 401"


def test_a_failed_read_followed_by_a_question_needs_information() -> None:
    result = fold(AgentToolCall(call_id="c1", name="test_source", arguments={"source": "acme"}),
                  AgentToolResult(call_id="c1", name="test_source", error="ambiguous",
                                  result={"error": "ambiguous", "detail": "two sources match"}),
                  AgentTextDelta(text="Which one do you mean?"), finish())
    assert result.outcome is Outcome.NEEDS_INFO


def test_a_failed_read_with_no_question_is_an_error() -> None:
    result = fold(AgentToolCall(call_id="c1", name="list_agent_tools", arguments={"agent": "x"}),
                  AgentToolResult(call_id="c1", name="list_agent_tools", error="not_found",
                                  result={"error": "not_found", "detail": "no agent 'x'"}),
                  AgentTextDelta(text="There is no agent called x."), finish())
    assert result.outcome is Outcome.ERROR and result.errors[0].type == "not_found"


def test_a_retried_read_that_then_worked_is_done() -> None:
    result = fold(AgentToolCall(call_id="c1", name="list_sources", arguments={"status": "bad"}),
                  AgentToolResult(call_id="c1", name="list_sources", error="validation_failed",
                                  result={"error": "validation_failed", "detail": "status"}),
                  AgentToolCall(call_id="c2", name="list_sources", arguments={}),
                  AgentToolResult(call_id="c2", name="list_sources", result={"sources": []}),
                  AgentTextDelta(text="No sources."), finish())
    assert result.outcome is Outcome.DONE


@pytest.mark.parametrize("text", [
    "I can't create sandboxes from chat; run `concierge sandbox create NAME`.",
    "Sorry, I didn't understand that.",
    "Permanent deletion is never done from chat.",
    "I don't delete sources from chat — it is permanent.",
    "I'm not sure what you mean. Try \"help\".",
])
def test_declining_is_an_error(text: str) -> None:
    assert fold(AgentTextDelta(text=text), finish()).outcome is Outcome.ERROR


def test_pending_requests_stop_before_a_change() -> None:
    confirm = ConfirmationRequired(id="confirm_1", call_id="c1", tool="pause_source", summary="Pause Demo.",
                                   arguments={"source": "Demo"})
    result = fold(AgentToolCall(call_id="c1", name="pause_source", arguments={"source": "Demo"}), confirm,
                  finish("awaiting_confirmation"))
    assert result.outcome is Outcome.NEEDS_CONFIRMATION and result.pending is confirm
    assert result.to_dict()["pending"]["event"] == "confirmation_required"
    secret = SecretRequired(id="secret_1", call_id="c2", tool="register_source", purpose="the token", field="token_ref")
    assert fold(secret, finish("awaiting_secret")).outcome is Outcome.NEEDS_SECRET


def test_a_resumed_run_clears_what_was_pending() -> None:
    result = fold(SecretRequired(id="secret_1", call_id="c1", tool="register_source", purpose="the token",
                                 field="token_ref"), finish("awaiting_secret"))
    for event in (RunStarted(run_id="run_2", session_id="cs_1"),
                  ConfirmationRequired(id="confirm_1", call_id="c1", tool="register_source", summary="Register",
                                       arguments={}, auto_approved=True),
                  AgentToolResult(call_id="c1", name="register_source",
                                  result={"data_source_id": "ds_1", "status": "active"}),
                  AgentTextDelta(text="Done."), finish()):
        result.add(event)
    assert result.outcome is Outcome.DONE and result.pending is None and result.run_ids == ["run_1", "run_2"]


def test_an_agent_error_wins() -> None:
    result = fold(AgentTextDelta(text="Which one?"), AgentError(message="boom", error_type="model_error"))
    assert result.outcome is Outcome.ERROR
    assert result.to_dict()["error"] == {"type": "model_error", "message": "boom"}


def test_a_declined_write_is_not_a_failure() -> None:
    result = fold(AgentToolResult(call_id="c1", name="register_source",
                                  result={"status": "declined", "detail": "nothing was changed"}),
                  AgentTextDelta(text='OK — I didn\'t register "Demo".'), finish())
    assert result.writes == [] and result.outcome is Outcome.DONE
