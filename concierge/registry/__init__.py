"""The registry: the system of record for sandboxes, user_mcp sources, agents, secrets and audit.

Names are loaded on first use (`concierge._lazy`): importing ``concierge.registry.models``
does not open the store, the vault or the mcp SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from concierge._lazy import lazy_exports

if TYPE_CHECKING:
    from concierge.registry.audit import acting_as
    from concierge.registry.models import (
        UNSET,
        Agent,
        AgentCreate,
        AgentUpdate,
        AuditEntry,
        AuthKind,
        IngestToolCall,
        Outcome,
        RegisteredOutcome,
        RegisterSource,
        Sandbox,
        SourceStatus,
        SourceView,
        UpdateSource,
    )
    from concierge.registry.service import DEFAULT_SANDBOX, Registry

__all__ = [
    "Agent",
    "AgentCreate",
    "AgentUpdate",
    "AuditEntry",
    "AuthKind",
    "DEFAULT_SANDBOX",
    "IngestToolCall",
    "Outcome",
    "RegisterSource",
    "RegisteredOutcome",
    "Registry",
    "Sandbox",
    "SourceStatus",
    "SourceView",
    "UNSET",
    "UpdateSource",
    "acting_as",
]

_EXPORTS = {name: "models" for name in __all__} | {
    "DEFAULT_SANDBOX": "service", "Registry": "service", "acting_as": "audit"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
