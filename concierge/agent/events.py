"""The events a `ConciergeSession` streams; every surface renders these and nothing else.

Names and fields follow the reference Concierge's SSE events::

    run_started           {run_id, session_id}
    agent_text_delta      {text}
    agent_tool_call       {call_id, name, arguments, label?}
    agent_tool_result     {call_id, name, result, error?, label?}
    confirmation_required {id, call_id, tool, summary, arguments, auto_approved?}
    secret_required       {id, call_id, tool, purpose, field}
    agent_finish          {stop_reason, session_id, usage, run_id}
    agent_error           {message, type, run_id}

``stop_reason`` is one of `STOP_REASONS`. ``event.type`` is the event's name (the SSE
``event:`` line) and ``event.to_dict()`` its payload exactly as listed (the SSE ``data:``); in
``agent_error`` the payload's ``type`` is the error's kind (e.g. ``max_turns_exceeded``).
`to_record` / `from_record` wrap both as ``{"event": name, "data": payload}`` for JSON lines.

``label`` on ``agent_tool_call`` / ``agent_tool_result`` is the step in plain words for people ("Checking the
server"), from `step_label`; surfaces that show steps set it (`with_label`), the engine does
not, and readers must not need it. `MAX_MESSAGE_CHARS` is the longest message any surface
sends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "AgentFinish",
    "AgentTextDelta",
    "AgentToolCall",
    "AgentToolResult",
    "ConfirmationRequired",
    "Event",
    "MAX_MESSAGE_CHARS",
    "RunStarted",
    "STEP_LABELS",
    "STOP_AWAITING_CONFIRMATION",
    "STOP_AWAITING_SECRET",
    "STOP_END_TURN",
    "STOP_REASONS",
    "SecretRequired",
    "from_record",
    "step_label",
    "to_record",
    "with_label",
]

MAX_MESSAGE_CHARS = 4000
"""The longest message a person may send on any surface (REPL, ``ask``, HTTP chat, widget)."""

STOP_END_TURN = "end_turn"
"""The model answered; nothing is waiting."""
STOP_AWAITING_CONFIRMATION = "awaiting_confirmation"
"""A write waits for ``session.confirm(id, approved)`` then ``session.resume()``."""
STOP_AWAITING_SECRET = "awaiting_secret"
"""A write waits for ``session.provide_secret(id, value)`` then ``session.resume()``."""
STOP_REASONS = (STOP_END_TURN, STOP_AWAITING_CONFIRMATION, STOP_AWAITING_SECRET)


@dataclass(frozen=True)
class Event:
    """Base of all events. ``type`` is the wire name."""

    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The payload (JSON-able), without the event name."""
        data = asdict(self)
        # Optional fields are left out when unset, as in the reference stream.
        for name in getattr(self, "_optional", ()):
            if data.get(name) is None:
                data.pop(name, None)
        return data


@dataclass(frozen=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    run_id: str
    session_id: str


@dataclass(frozen=True)
class AgentTextDelta(Event):
    type: ClassVar[str] = "agent_text_delta"
    text: str


@dataclass(frozen=True)
class AgentToolCall(Event):
    type: ClassVar[str] = "agent_tool_call"
    _optional: ClassVar[tuple[str, ...]] = ("label",)
    call_id: str
    name: str
    arguments: dict[str, Any]
    label: str | None = None
    """The step in plain words ("Checking the server"), for people; see `step_label`."""


@dataclass(frozen=True)
class AgentToolResult(Event):
    type: ClassVar[str] = "agent_tool_result"
    _optional: ClassVar[tuple[str, ...]] = ("error", "label")
    call_id: str
    name: str
    result: Any
    error: str | None = None
    """A short error code when the tool failed (the model still gets the result to explain)."""
    label: str | None = None
    """The step in plain words, as on its ``agent_tool_call``; see `step_label`."""


@dataclass(frozen=True)
class ConfirmationRequired(Event):
    type: ClassVar[str] = "confirmation_required"
    _optional: ClassVar[tuple[str, ...]] = ("auto_approved",)
    id: str
    call_id: str
    tool: str
    summary: str
    """Plain language: what, where, which sandbox, auth kind, namespace; secrets masked."""
    arguments: dict[str, Any]
    auto_approved: bool | None = None
    """Set only by ``auto_approve`` sessions (``concierge ask --yes``): the write runs at once."""


@dataclass(frozen=True)
class SecretRequired(Event):
    type: ClassVar[str] = "secret_required"
    id: str
    call_id: str
    tool: str
    purpose: str
    """What the credential is for, e.g. 'the bearer token for "Acme" (https://…)'."""
    field: str
    """The tool argument that will receive the reference (``token_ref``)."""


@dataclass(frozen=True)
class AgentFinish(Event):
    type: ClassVar[str] = "agent_finish"
    stop_reason: str
    session_id: str
    usage: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""


@dataclass(frozen=True)
class AgentError(Event):
    type: ClassVar[str] = "agent_error"
    message: str
    error_type: str = "error"
    """The error's kind (``model_error``, ``max_turns_exceeded``, ...); ``type`` on the wire."""
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.error_type, "run_id": self.run_id}


STEP_LABELS: dict[str, str] = {
    "list_sandboxes": "Looking up your sandboxes",
    "switch_sandbox": "Switching sandbox",
    "list_sources": "Looking up your sources",
    "show_source": "Looking up the source",
    "register_source": "Registering the server and checking it",
    "update_source": "Updating the source",
    "test_source": "Checking the server",
    "test_all_sources": "Checking all your servers",
    "check_all_sources": "Checking all your servers",
    "pause_source": "Pausing the source",
    "resume_source": "Resuming the source and checking it",
    "revoke_source": "Revoking the source",
    "delete_source_command": "Looking up how to delete it",
    "list_agents": "Looking up your agents",
    "create_agent": "Creating the agent",
    "update_agent": "Updating the agent",
    "list_agent_tools": "Resolving the tool catalog",
    "describe_tool": "Looking up the tool",
    "show_tool": "Looking up the tool",
}
"""Plain words for each concierge tool, as a step a person watches happen."""


def step_label(name: str) -> str:
    """The step a tool call is, in plain words: "Checking the server"; for a tool without an
    entry in `STEP_LABELS`, its name as words ("list_webhooks" → "List webhooks")."""
    label = STEP_LABELS.get(name)
    if label:
        return label
    words = name.replace("_", " ").replace("-", " ").strip()
    return (words[:1].upper() + words[1:]) if words else "Working"


def with_label(event: Event) -> Event:
    """``event`` with its plain-words ``label`` set, if it is a tool call or result without one."""
    if isinstance(event, (AgentToolCall, AgentToolResult)) and event.label is None:
        return replace(event, label=step_label(event.name))
    return event


_BY_TYPE: dict[str, type[Event]] = {cls.type: cls for cls in (
    RunStarted, AgentTextDelta, AgentToolCall, AgentToolResult, ConfirmationRequired,
    SecretRequired, AgentFinish, AgentError)}


def to_record(event: Event) -> dict[str, Any]:
    """``{"event": name, "data": payload}``: one JSON line of a transcript or ``ask --json``."""
    return {"event": event.type, "data": event.to_dict()}


def from_record(record: dict[str, Any]) -> Event:
    """The inverse of `to_record`."""
    kind, data = record.get("event"), dict(record.get("data") or {})
    cls = _BY_TYPE.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    if cls is AgentError:
        return AgentError(message=data["message"], error_type=data.get("type", "error"),
                          run_id=data.get("run_id", ""))
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
