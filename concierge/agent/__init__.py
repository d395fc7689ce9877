"""The concierge engine: a conversation (`ConciergeSession`), its events, tools and secrets.

    session = ConciergeSession(backend, OfflinePlanner())
    async for event in session.send("List my sources"):
        print(event.type, event.to_dict())

See `concierge.agent.session` for how a surface answers confirmations and credential
requests, and `concierge.agent.events` for the event shapes.
"""

from __future__ import annotations

import importlib
from typing import Any

# Re-exports are resolved lazily, so ``python -m concierge.agent.toolkit`` does not import
# the module twice (once as a package member, once as __main__).
_EXPORTS = {
    "AgentError": "events", "AgentFinish": "events", "AgentTextDelta": "events",
    "AgentToolCall": "events", "AgentToolResult": "events", "ConfirmationRequired": "events",
    "Event": "events", "RunStarted": "events", "SecretRequired": "events",
    "InMemorySecretStore": "secrets", "SecretStore": "secrets", "redact": "secrets",
    "DEFAULT_MAX_TURNS": "session", "ConciergeSession": "session", "parse_yes_no": "session",
    "Tool": "toolkit", "Toolkit": "toolkit", "default_toolkit": "toolkit",
    "Transcript": "transcript", "read_transcript": "transcript",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'concierge.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(f"concierge.agent.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)


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
