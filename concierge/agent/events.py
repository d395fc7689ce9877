"""The events a `ConciergeSession` streams; every surface renders these and nothing else.

Names and fields follow the reference Concierge's SSE events::

    run_started           {run_id, session_id}
    agent_text_delta      {text}
    agent_tool_call       {call_id, name, arguments}
    agent_tool_result     {call_id, name, result, error?}
    confirmation_required {id, call_id, tool, summary, arguments, auto_approved?}
    secret_required       {id, call_id, tool, purpose, field}
    agent_finish          {stop_reason, session_id, usage, run_id}
    agent_error           {message, type, run_id}

``stop_reason`` is one of `STOP_REASONS`. ``event.type`` is the event's name (the SSE
``event:`` line) and ``event.to_dict()`` its payload exactly as listed (the SSE ``data:``); in
``agent_error`` the payload's ``type`` is the error's kind (e.g. ``max_turns_exceeded``).
`to_record` / `from_record` wrap both as ``{"event": name, "data": payload}`` for JSON lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "AgentFinish",
    "AgentTextDelta",
    "AgentToolCall",
    "AgentToolResult",
    "ConfirmationRequired",
    "Event",
    "RunStarted",
    "STOP_AWAITING_CONFIRMATION",
    "STOP_AWAITING_SECRET",
    "STOP_END_TURN",
    "STOP_REASONS",
    "SecretRequired",
    "from_record",
    "to_record",
]

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
    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class AgentToolResult(Event):
    type: ClassVar[str] = "agent_tool_result"
    _optional: ClassVar[tuple[str, ...]] = ("error",)
    call_id: str
    name: str
    result: Any
    error: str | None = None
    """A short error code when the tool failed (the model still gets the result to explain)."""


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
