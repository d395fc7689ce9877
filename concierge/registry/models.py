"""Domain models of the registry (pydantic v2).

Request bodies (`RegisterSource`, `UpdateSource`) follow the reference API's field names,
defaults and bounds. Read models (`SourceView`, `Sandbox`, `Agent`, `AuditEntry`) are what
every surface shows; `SourceView` never carries a credential (at most `has_token` and the
last four characters).
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, field_validator, model_validator

from concierge.mcp_client.kinds import ErrorKind
from concierge.registry import validation as v

__all__ = [
    "UNSET",
    "Agent",
    "AgentCreate",
    "AgentUpdate",
    "AuditEntry",
    "AuthKind",
    "IngestToolCall",
    "Outcome",
    "RegisterSource",
    "RegisteredOutcome",
    "Sandbox",
    "SourceStatus",
    "SourceView",
    "UpdateSource",
    "Unset",
]


class Unset(enum.Enum):
    """Marks a field that was not sent in a partial update (distinct from an explicit null)."""

    token = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = Unset.token


class AuthKind(enum.StrEnum):
    NONE = "none"
    BEARER = "bearer"
    HEADER_TOKEN = "header_token"


class SourceStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ERROR = "error"
    DISCONNECTED = "disconnected"


class IngestToolCall(BaseModel):
    """A tool call run on every pull(), e.g. ``{"name": "list_recent_docs", "arguments": {"limit": 50}}``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    arguments: dict[str, Any] = Field(default_factory=dict)


_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)

RateCap = Field(default=60, ge=1, le=600, description="Tool calls per minute (1-600).")
WebhookCap = Field(default=600, ge=1, le=6000, description="Webhook events per minute (1-6000).")
ConnectTimeout = Field(default=10.0, gt=0, le=120, description="Seconds to connect and list tools.")
CallTimeout = Field(default=60.0, gt=0, le=600, description="Seconds one tool call may take.")


class RegisterSource(BaseModel):
    """Tenant-supplied MCP server registration payload."""

    model_config = _Strict

    name: str = Field(min_length=1, max_length=200, description="Human-readable source name.")
    base_url: str = Field(description="MCP server URL; https only (http for localhost).")
    auth_kind: AuthKind = Field(description="bearer | header_token | none.")
    token: SecretStr | None = Field(default=None, description="Required iff auth_kind != none.")
    auth_header: str | None = Field(default=None, description="Required iff auth_kind = header_token.")
    app_namespace: str | None = Field(default=None, description="Tool-name prefix (<=64).")
    allowed_tools: list[str] | None = Field(default=None, description="Per-source allowlist.")
    ingest_tool_calls: list[IngestToolCall] | None = Field(default=None, max_length=50)
    rate_cap_per_minute: int = RateCap
    webhook_rate_cap_per_minute: int = WebhookCap
    connect_timeout: float = ConnectTimeout
    call_timeout: float = CallTimeout
    transport: Literal["auto", "streamable-http", "sse"] = "auto"
    pin_tools: StrictBool = Field(default=True, description=(
        "Pin each tool's definition at the first listing and hold a tool whose definition changes "
        "until an owner or editor approves it; false for servers whose tools change by design."))

    _url = field_validator("base_url")(lambda cls, x: v.normalize_base_url(x))
    _token = field_validator("token")(lambda cls, x: v.check_token(x))
    _header = field_validator("auth_header")(lambda cls, x: v.check_header_name(x))
    _ns = field_validator("app_namespace")(lambda cls, x: v.check_namespace(x))
    _tools = field_validator("allowed_tools")(lambda cls, x: v.check_allowed_tools(x))

    @model_validator(mode="after")
    def _auth_rules(self) -> RegisterSource:
        v.check_auth_combination(self.auth_kind, has_token=self.token is not None,
                                 token_sent=self.token is not None, auth_header=self.auth_header)
        return self


class UpdateSource(BaseModel):
    """Partial update: a field left out keeps its value (it stays ``UNSET``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, arbitrary_types_allowed=True)

    name: str | Unset = Field(default=UNSET, min_length=1, max_length=200)
    base_url: str | Unset = UNSET
    auth_kind: AuthKind | Unset = UNSET
    token: SecretStr | Unset = UNSET
    auth_header: str | None | Unset = UNSET
    app_namespace: str | Unset = UNSET
    allowed_tools: list[str] | None | Unset = UNSET
    ingest_tool_calls: list[IngestToolCall] | None | Unset = Field(default=UNSET, max_length=50)
    rate_cap_per_minute: int | Unset = Field(default=UNSET, ge=1, le=600)
    webhook_rate_cap_per_minute: int | Unset = Field(default=UNSET, ge=1, le=6000)
    connect_timeout: float | Unset = Field(default=UNSET, gt=0, le=120)
    call_timeout: float | Unset = Field(default=UNSET, gt=0, le=600)
    transport: Literal["auto", "streamable-http", "sse"] | Unset = UNSET
    pin_tools: StrictBool | Unset = UNSET

    @model_validator(mode="before")
    @classmethod
    def _nulls_mean_keep(cls, data: Any) -> Any:
        # The reference marks every field "| null": null for a scalar means "keep". Only
        # allowed_tools, ingest_tool_calls and auth_header give null a meaning (clear it).
        if isinstance(data, dict):
            clearable = {"allowed_tools", "ingest_tool_calls", "auth_header"}
            return {k: x for k, x in data.items() if x is not None or k in clearable}
        return data

    _url = field_validator("base_url")(lambda cls, x: x if x is UNSET else v.normalize_base_url(x))
    _token = field_validator("token")(lambda cls, x: x if x is UNSET else v.check_token(x))
    _header = field_validator("auth_header")(
        lambda cls, x: x if x is UNSET else v.check_header_name(x))
    _ns = field_validator("app_namespace")(lambda cls, x: x if x is UNSET else v.check_namespace(x))
    _tools = field_validator("allowed_tools")(
        lambda cls, x: x if x is UNSET else v.check_allowed_tools(x))

    def sent(self) -> dict[str, Any]:
        """The fields that were sent, with their values (secrets still wrapped)."""
        return {k: getattr(self, k) for k in type(self).model_fields if getattr(self, k) is not UNSET}


class Outcome(BaseModel):
    """Outcome shape for the user_mcp lifecycle calls (reference: returned verbatim)."""

    data_source_id: str | None = None
    status: str | None = None
    name: str | None = None
    ingestion_mode: str | None = None
    health_error: str | None = None
    error: str | None = None
    detail: str | None = None


class RegisteredOutcome(Outcome):
    """The register outcome plus the webhook signing secret, which is shown exactly once.

    The secret is excluded from ``model_dump()`` so no surface (the concierge's tools, a
    transcript, ``--json``) passes it on by accident; the HTTP register route adds it on
    purpose, as ``webhook_secret``.
    """

    webhook_secret: SecretStr | None = Field(default=None, exclude=True)


class SourceView(BaseModel):
    """A user_mcp source as every surface shows it. Never holds a credential."""

    id: str
    sandbox_id: str
    kind: Literal["user_mcp"] = "user_mcp"
    name: str
    base_url: str
    transport: str
    auth_kind: AuthKind
    auth_header: str | None
    has_token: bool
    token_last4: str | None
    app_namespace: str
    allowed_tools: list[str] | None
    ingest_tool_calls: list[IngestToolCall]
    ingestion_mode: str
    rate_cap_per_minute: int
    webhook_rate_cap_per_minute: int
    connect_timeout: float
    call_timeout: float
    status: SourceStatus
    health_error: str | None
    health_error_kind: ErrorKind | None = Field(
        default=None, description="Why the last health check failed (unauthorized, timeout, not_mcp, ...).")
    tool_count: int | None
    server_name: str | None
    last_checked_at: str | None
    last_latency_ms: float | None
    pin_tools: bool = Field(default=True, description="Changed tool definitions are held until approved.")
    created_at: str
    updated_at: str


class Sandbox(BaseModel):
    id: str
    name: str
    created_at: str


class AgentCreate(BaseModel):
    model_config = _Strict

    slug: str = Field(min_length=1, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    system_prompt: str = Field(default="", max_length=20_000)
    tool_sources: list[str] = Field(default_factory=lambda: ["user_mcp"])
    tool_allowlist: list[str] = Field(default_factory=list, description="[] means all tools.")
    model_settings: dict[str, Any] = Field(default_factory=dict)

    _slug = field_validator("slug")(lambda cls, x: v.check_slug(x))
    _allow = field_validator("tool_allowlist")(lambda cls, x: v.check_allowlist(x))
    _sources = field_validator("tool_sources")(lambda cls, x: v.check_tool_sources(x))


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, arbitrary_types_allowed=True)

    name: str | Unset = Field(default=UNSET, max_length=200)
    system_prompt: str | Unset = Field(default=UNSET, max_length=20_000)
    tool_sources: list[str] | Unset = UNSET
    tool_allowlist: list[str] | Unset = UNSET
    model_settings: dict[str, Any] | Unset = UNSET
    status: Literal["active", "paused"] | Unset = UNSET

    _allow = field_validator("tool_allowlist")(
        lambda cls, x: x if x is UNSET else v.check_allowlist(x))
    _sources = field_validator("tool_sources")(
        lambda cls, x: x if x is UNSET else v.check_tool_sources(x))

    def sent(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in type(self).model_fields if getattr(self, k) is not UNSET}


class Agent(BaseModel):
    id: str
    sandbox_id: str
    slug: str
    name: str
    system_prompt: str
    tool_sources: list[str]
    tool_allowlist: list[str]
    model_settings: dict[str, Any]
    status: str
    created_at: str
    updated_at: str


class AuditEntry(BaseModel):
    id: int
    at: str
    sandbox_id: str | None
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
