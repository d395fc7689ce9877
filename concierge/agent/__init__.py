"""The concierge engine: a conversation (`ConciergeSession`), its events, tools and secrets.

    session = ConciergeSession(backend, OfflinePlanner())
    async for event in session.send("List my sources"):
        print(event.type, event.to_dict())

See `concierge.agent.session` for how a surface answers confirmations and credential
requests, and `concierge.agent.events` for the event shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.agent.events import AgentError, AgentFinish, AgentTextDelta, AgentToolCall, AgentToolResult, ConfirmationRequired, Event, RunStarted, SecretRequired
    from concierge.agent.secrets import InMemorySecretStore, SecretStore, redact
    from concierge.agent.session import ConciergeSession, DEFAULT_MAX_TURNS, parse_yes_no
    from concierge.agent.toolkit import Tool, Toolkit, default_toolkit
    from concierge.agent.transcript import Transcript, read_transcript

__all__ = [
    "AgentError",
    "AgentFinish",
    "AgentTextDelta",
    "AgentToolCall",
    "AgentToolResult",
    "ConciergeSession",
    "ConfirmationRequired",
    "DEFAULT_MAX_TURNS",
    "Event",
    "InMemorySecretStore",
    "RunStarted",
    "SecretRequired",
    "SecretStore",
    "Tool",
    "Toolkit",
    "Transcript",
    "default_toolkit",
    "parse_yes_no",
    "read_transcript",
    "redact",
]

# Resolved lazily: ``python -m concierge.agent.toolkit`` must not import the module twice
# (once as a package member, once as __main__), and the engine is not loaded by ``--help``.
_EXPORTS = {
    "AgentError": "events", "AgentFinish": "events", "AgentTextDelta": "events",
    "AgentToolCall": "events", "AgentToolResult": "events", "ConfirmationRequired": "events",
    "Event": "events", "RunStarted": "events", "SecretRequired": "events",
    "InMemorySecretStore": "secrets", "SecretStore": "secrets", "redact": "secrets",
    "DEFAULT_MAX_TURNS": "session", "ConciergeSession": "session", "parse_yes_no": "session",
    "Tool": "toolkit", "Toolkit": "toolkit", "default_toolkit": "toolkit",
    "Transcript": "transcript", "read_transcript": "transcript",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
