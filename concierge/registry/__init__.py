"""The registry: the system of record for sandboxes, user_mcp sources, agents, secrets and audit."""

from concierge.registry.models import (
    UNSET,
    Agent,
    AgentCreate,
    AgentUpdate,
    AuditEntry,
    AuthKind,
    IngestToolCall,
    Outcome,
    RegisterSource,
    Sandbox,
    SourceStatus,
    SourceView,
    UpdateSource,
)
from concierge.registry.service import DEFAULT_SANDBOX, Registry

__all__ = [
    "DEFAULT_SANDBOX",
    "UNSET",
    "Agent",
    "AgentCreate",
    "AgentUpdate",
    "AuditEntry",
    "AuthKind",
    "IngestToolCall",
    "Outcome",
    "RegisterSource",
    "Registry",
    "Sandbox",
    "SourceStatus",
    "SourceView",
    "UpdateSource",
]
