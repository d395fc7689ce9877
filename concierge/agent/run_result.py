"""`RunResult`: the engine's event stream folded into what happened, and what kind of outcome it is.

One fold for every surface that answers once — ``concierge ask`` (its exit status and
``--json``) and ``POST …/concierge/test`` (its ``outcome``) — so they cannot disagree::

    result = RunResult()
    async for event in session.send(text):
        result.add(event)                 # also across resume(): each run_started starts a new run
    result.outcome                        # an `Outcome`
    EXIT_CODES[result.outcome]            # 0 done · 1 error · 3 stopped before a change · 4 needs info

What it keeps: the answer text (all of it, and the last run's final words), each tool call with
its result, the writes that ran (``writes`` in the JSON: every change carried out), the pending confirmation or credential request, the questions
the concierge asked back, and the errors. How the outcome is decided, first match wins:

1. ``error`` — the run failed (``agent_error``), or a change that ran failed (a tool error, or a
   source left in status ``error`` by its health check, e.g. a register whose check failed).
2. ``needs_confirmation`` / ``needs_secret`` — it stopped before a change: it needs a yes
   (``ask --yes``) or a credential.
3. ``needs_info`` — it asked a question back ("Which one do you mean?", "How does it
   authenticate?"): a sentence of the final answer ends in ``?`` (quoted examples and URLs
   do not count).
4. ``error`` — a read failed (a tool error, a failing health check on test) with no question
   after it, or the concierge declined: it gave the CLI command instead (permanent deletion),
   said it cannot do that, or did not understand.
5. ``done`` — answered, or the change ran.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

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

__all__ = ["EXIT_CODES", "Outcome", "RunError", "RunResult", "ToolCallRecord", "questions_in"]


class Outcome(StrEnum):
    """What a run (or a run and its resumptions) amounted to."""

    DONE = "done"
    ERROR = "error"
    NEEDS_CONFIRMATION = "needs_confirmation"
    NEEDS_SECRET = "needs_secret"
    NEEDS_INFO = "needs_info"


EXIT_CODES: dict[Outcome, int] = {
    Outcome.DONE: 0, Outcome.ERROR: 1, Outcome.NEEDS_CONFIRMATION: 3, Outcome.NEEDS_SECRET: 3,
    Outcome.NEEDS_INFO: 4,
}
"""``concierge ask``'s exit status per outcome (2 is argparse's: a usage error)."""

_GATE_STATUSES = frozenset({"declined", "not_confirmed", "skipped", "cancelled", "abandoned"})
"""Results the engine gives a call that did not run: not failures."""

_REFUSAL_TOOLS = frozenset({"delete_source_command"})
"""Tools that answer with a CLI command instead of doing it."""

_REFUSAL_RE = re.compile(
    r"(?i)\b(?:I|we)\s*(?:can't|cannot|can\s+not|won't|will\s+not|am\s+not\s+able\s+to|'m\s+not\s+able\s+to"
    r"|am\s+unable\s+to|'m\s+unable\s+to|couldn't|could\s+not)\s+(?:do|create|delete|run|set\s+up|make|"
    r"add|remove|send|change|help\s+with|understand)\b"
    r"|\b(?:didn't|did\s+not|don't|do\s+not)\s+understand\b|\bnot\s+sure\s+what\s+you\s+mean\b"
    r"|\b(?:I|we)\s+(?:don't|do\s+not)\s+\w+(?:\s+\w+){0,3}\s+from\s+(?:the\s+)?chat\b"
    r"|\bnever\s+(?:done|run)\s+from\s+(?:the\s+)?chat\b"
    r"|\bnot\s+something\s+I\s+can\b")

_QUOTED_RE = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”|`[^`\n]*`|'[^'\n]*\?'")
_URL_RE = re.compile(r"\b[a-z][a-z0-9+.\-]*://\S+", re.I)
_SENTENCE_RE = re.compile(r"[^.!?\n]*[.!?\n]?")


def questions_in(text: str) -> list[str]:
    """The questions ``text`` asks: sentences ending in ``?``, outside quotes and URLs.

    One pass over the text (sentences do not overlap), so a long answer costs linear time.
    """
    plain = _URL_RE.sub(" ", _QUOTED_RE.sub(" … ", text))
    questions = []
    for match in _SENTENCE_RE.finditer(plain):
        sentence, end = match.group(), match.end()
        if sentence.endswith("?") and (end == len(plain) or plain[end] in " \t\n)]"):
            question = sentence.strip(" -•*\t")
            if question.strip("?"):
                questions.append(question)
    return questions


@dataclass
class ToolCallRecord:
    """One tool call and what came of it."""

    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    """The tool's error code when it failed (``not_found``, ``validation_failed``, …)."""
    write: bool = False
    """A change (it asked for, or was resumed after, a confirmation)."""

    @property
    def ran(self) -> bool:
        """It has a result, and the result is not the engine saying it did not run."""
        return self.result is not None and _status(self.result) not in _GATE_STATUSES

    @property
    def failed(self) -> bool:
        """It ran and failed: an error, or it left a source failing its health check."""
        if not self.ran:
            return False
        return self.error is not None or _health_failed(self.result)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"call_id": self.call_id, "name": self.name, "arguments": self.arguments,
                                "result": self.result}
        if self.error:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class RunError:
    """Why the outcome is an error."""

    kind: str
    """``agent`` (the run failed), ``tool`` (a call failed), ``health`` (a health check failed),
    ``refusal`` (the concierge would not or could not do it)."""
    type: str
    message: str


@dataclass
class RunResult:
    """Folds events (`add`) into what happened; `outcome` says what kind of result it is."""

    text: str = ""
    """Everything the concierge said, across runs."""
    final_text: str = ""
    """What it said last: the last run's text after its last tool call."""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    pending_confirmation: ConfirmationRequired | None = None
    pending_secret: SecretRequired | None = None
    auto_approved: list[ConfirmationRequired] = field(default_factory=list)
    """Writes an ``auto_approve`` session (``ask --yes``) ran without asking."""
    held_because: str | None = None
    """Why ``--yes`` did not cover the pending confirmation (set by ``ask`` from the session's
    parked write: a write chosen after reading server text, or of a kind not asked for)."""
    agent_error: AgentError | None = None
    stop_reason: str | None = None
    run_ids: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})
    _calls: dict[str, ToolCallRecord] = field(default_factory=dict, repr=False)
    _last_run_calls: list[ToolCallRecord] = field(default_factory=list, repr=False)

    def add(self, event: Event) -> None:
        """Take one event (in stream order)."""
        if isinstance(event, RunStarted):
            self.run_ids.append(event.run_id)
            self.pending_confirmation = self.pending_secret = None
            self.held_because = None
            self.stop_reason = None
            self.final_text = ""
            self._last_run_calls = []
        elif isinstance(event, AgentTextDelta):
            self.text += event.text
            self.final_text += event.text
        elif isinstance(event, AgentToolCall):
            self.final_text = ""
            self._call(event.call_id, event.name).arguments = dict(event.arguments)
        elif isinstance(event, AgentToolResult):
            self.final_text = ""
            known = event.call_id in self._calls
            call = self._call(event.call_id, event.name)
            # A result with no call before it in this fold resumes a parked write.
            call.write = call.write or not known
            call.result, call.error = event.result, event.error
        elif isinstance(event, ConfirmationRequired):
            call = self._call(event.call_id, event.tool)
            call.write = True
            call.arguments = call.arguments or dict(event.arguments)
            if event.auto_approved:
                self.auto_approved.append(event)
            else:
                self.pending_confirmation = event
        elif isinstance(event, SecretRequired):
            self._call(event.call_id, event.tool).write = True
            self.pending_secret = event
        elif isinstance(event, AgentFinish):
            self.stop_reason = event.stop_reason
            for key in self.usage:
                self.usage[key] += int((event.usage or {}).get(key) or 0)
        elif isinstance(event, AgentError):
            self.agent_error = event

    def _call(self, call_id: str, name: str) -> ToolCallRecord:
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = ToolCallRecord(call_id=call_id, name=name)
            self.tool_calls.append(call)
        if call not in self._last_run_calls:
            self._last_run_calls.append(call)
        return call

    # -- what it amounts to -----------------------------------------------------------------

    @property
    def writes(self) -> list[ToolCallRecord]:
        """The changes that ran."""
        return [c for c in self.tool_calls if c.write and c.ran]

    @property
    def questions(self) -> list[str]:
        """The questions the concierge's last words ask."""
        return questions_in(self.final_text)

    @property
    def pending(self) -> ConfirmationRequired | SecretRequired | None:
        return self.pending_confirmation or self.pending_secret

    @property
    def errors(self) -> list[RunError]:
        """Everything that went wrong, in order (the run, the calls, refusals)."""
        out: list[RunError] = []
        if self.agent_error is not None:
            out.append(RunError("agent", self.agent_error.error_type, self.agent_error.message))
        for call in self.tool_calls:
            if call.failed:
                out.append(_call_error(call))
        refusal = self._refusal()
        if refusal is not None:
            out.append(refusal)
        return out

    @property
    def outcome(self) -> Outcome:
        if self.agent_error is not None or any(c.failed for c in self.writes):
            return Outcome.ERROR
        if self.pending_confirmation is not None:
            return Outcome.NEEDS_CONFIRMATION
        if self.pending_secret is not None:
            return Outcome.NEEDS_SECRET
        if self.questions:
            return Outcome.NEEDS_INFO
        last_failed = next((c.failed for c in reversed(self._last_run_calls) if c.ran), False)
        if last_failed or self._refusal() is not None:
            return Outcome.ERROR
        return Outcome.DONE

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def _refusal(self) -> RunError | None:
        for call in self._last_run_calls:
            if call.name in _REFUSAL_TOOLS:
                return RunError("refusal", call.name, "this is not done from chat; the answer gives "
                                                      "the command that does it")
        match = _REFUSAL_RE.search(self.final_text)
        if match:
            return RunError("refusal", "declined", _sentence_at(self.final_text, match.start()))
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``ask --json``."""
        data: dict[str, Any] = {
            "outcome": self.outcome.value, "exit_code": self.exit_code, "answer": self.text,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "writes": [c.to_dict() for c in self.writes], "stop_reason": self.stop_reason,
            "questions": self.questions,
        }
        pending = self.pending
        if pending is not None:
            data["pending"] = {"event": pending.type, **pending.to_dict()}
            if self.held_because and pending is self.pending_confirmation:
                data["pending"]["held_because"] = self.held_because
        if self.agent_error is not None:
            data["error"] = {"type": self.agent_error.error_type, "message": self.agent_error.message}
        errors = self.errors
        if errors:
            data["errors"] = [{"kind": e.kind, "type": e.type, "message": e.message} for e in errors]
        return data


def _status(result: Any) -> Any:
    return result.get("status") if isinstance(result, dict) else None


def _health_failed(result: Any) -> bool:
    """A lifecycle outcome (``data_source_id`` …) that leaves the source in status error."""
    if not isinstance(result, dict):
        return False
    if "data_source_id" in result and result.get("status") == "error":
        return True
    # A check of several sources at once: any one failing.
    for value in result.values():
        if isinstance(value, list) and any(isinstance(v, dict) and "data_source_id" in v
                                           and v.get("status") == "error" for v in value):
            return True
    return False


def _call_error(call: ToolCallRecord) -> RunError:
    result = call.result if isinstance(call.result, dict) else {}
    if call.error:
        return RunError("tool", call.error, str(result.get("detail") or call.error))
    return RunError("health", "health_check_failed",
                    str(result.get("health_error") or result.get("detail") or "health check failed"))


def _sentence_at(text: str, index: int) -> str:
    start = max(text.rfind(". ", 0, index), text.rfind("\n", 0, index)) + 1
    end = min((i for i in (text.find(". ", index), text.find("\n", index)) if i >= 0), default=len(text))
    return text[start:end + 1].strip()
