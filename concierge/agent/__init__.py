"""The concierge engine: a conversation (`ConciergeSession`), its events, tools and secrets.

    session = ConciergeSession(backend, OfflinePlanner())
    async for event in session.send("List my sources"):
        print(event.type, event.to_dict())

See `concierge.agent.session` for how a surface answers confirmations and credential
requests, and `concierge.agent.events` for the event shapes.
"""

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
from concierge.agent.secrets import InMemorySecretStore, SecretStore, redact
from concierge.agent.session import DEFAULT_MAX_TURNS, ConciergeSession, parse_yes_no
from concierge.agent.toolkit import Tool, Toolkit, default_toolkit
from concierge.agent.transcript import Transcript, read_transcript

__all__ = [
    "DEFAULT_MAX_TURNS",
    "AgentError",
    "AgentFinish",
    "AgentTextDelta",
    "AgentToolCall",
    "AgentToolResult",
    "ConciergeSession",
    "ConfirmationRequired",
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
