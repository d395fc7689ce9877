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
    "Grant",
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
    OAUTH = "oauth"


class SourceStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ERROR = "error"
    DISCONNECTED = "disconnected"
    AUTH_REQUIRED = "auth_required"
    """An OAuth source nobody signed in to yet, or whose refresh was refused: sign in again."""


class IngestToolCall(BaseModel):
    """A tool call run on every pull(), e.g. ``{"name": "list_recent_docs", "arguments": {"limit": 50}}``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    arguments: dict[str, Any] = Field(default_factory=dict)


_Strict = ConfigDict(extra="forbid", str_strip_whitespace=True)

Grant = Literal["authorization_code", "client_credentials"]
TransportName = Literal["auto", "streamable-http", "sse", "stdio"]

RateCap = Field(default=60, ge=1, le=600, description="Tool calls per minute (1-600).")
WebhookCap = Field(default=600, ge=1, le=6000, description="Webhook events per minute (1-6000).")
ConnectTimeout = Field(default=10.0, gt=0, le=120, description="Seconds to connect and list tools.")
CallTimeout = Field(default=60.0, gt=0, le=600, description="Seconds one tool call may take.")


class RegisterSource(BaseModel):
    """Tenant-supplied MCP server registration payload."""

    model_config = _Strict

    name: str = Field(min_length=1, max_length=200, description="Human-readable source name.")
    base_url: str | None = Field(default=None, description=(
        "MCP server URL; https only (http for localhost). Required unless transport is stdio. A key "
        "in its query (api_key=…, any parameter named like a key, token, secret or signature) is kept "
        "in the vault and shown as ••••."))
    auth_kind: AuthKind = Field(description="none | bearer | header_token | oauth.")
    token: SecretStr | None = Field(default=None, description="Required iff auth_kind != none.")
    auth_header: str | None = Field(default=None, description="Required iff auth_kind = header_token.")
    app_namespace: str | None = Field(default=None, description="Tool-name prefix (<=64).")
    allowed_tools: list[str] | None = Field(default=None, description="Per-source allowlist.")
    ingest_tool_calls: list[IngestToolCall] | None = Field(default=None, max_length=50)
    rate_cap_per_minute: int = RateCap
    webhook_rate_cap_per_minute: int = WebhookCap
    connect_timeout: float = ConnectTimeout
    call_timeout: float = CallTimeout
    transport: TransportName = "auto"
    pin_tools: StrictBool = Field(default=True, description=(
        "Pin each tool's definition at the first listing and hold a tool whose definition changes "
        "until an owner or editor approves it; false for servers whose tools change by design."))
    headers: dict[str, str] | None = Field(default=None, description=(
        "Extra headers that are not secrets, sent with every request (e.g. X-Tenant)."))
    command: str | None = Field(default=None, description="The program to run (transport stdio).")
    args: list[str] | None = Field(default=None, description="Its arguments (transport stdio).")
    env: dict[str, str] | None = Field(default=None, description="Plain environment variables (stdio).")
    secret_env: dict[str, SecretStr] | None = Field(default=None, description=(
        "Environment variables whose values are secrets (stdio): kept in the vault, never shown."))
    cwd: str | None = Field(default=None, description="Working directory of the program (stdio).")
    client_id: str | None = Field(default=None, description="OAuth: a pre-registered client id.")
    client_secret: SecretStr | None = Field(default=None, description="OAuth: its secret (kept in the vault).")
    scopes: list[str] | None = Field(default=None, description="OAuth: the scopes to ask for.")
    grant: Grant | None = Field(default=None, description=(
        "OAuth: authorization_code (a person signs in; the default) or client_credentials."))

    _url = field_validator("base_url")(lambda cls, x: None if x is None else v.normalize_base_url(x))
    _token = field_validator("token")(lambda cls, x: v.check_token(x))
    _header = field_validator("auth_header")(lambda cls, x: v.check_header_name(x))
    _ns = field_validator("app_namespace")(lambda cls, x: v.check_namespace(x))
    _tools = field_validator("allowed_tools")(lambda cls, x: v.check_allowed_tools(x))
    _headers = field_validator("headers")(lambda cls, x: v.check_extra_headers(x))
    _command = field_validator("command")(lambda cls, x: v.check_command(x))
    _args = field_validator("args")(lambda cls, x: v.check_args(x))
    _env = field_validator("env")(lambda cls, x: v.check_env(x, field="env"))
    _secret_env = field_validator("secret_env")(lambda cls, x: v.check_secret_env(x))
    _cwd = field_validator("cwd")(lambda cls, x: v.check_cwd(x))
    _client_id = field_validator("client_id")(lambda cls, x: v.check_client_id(x))
    _client_secret = field_validator("client_secret")(lambda cls, x: v.check_client_secret(x))
    _scopes = field_validator("scopes")(lambda cls, x: v.check_scopes(x))

    @model_validator(mode="after")
    def _auth_rules(self) -> RegisterSource:
        v.check_transport_combination(
            self.transport, base_url=self.base_url, command=self.command, args=self.args, env=self.env,
            secret_env=self.secret_env, cwd=self.cwd, headers=self.headers, auth_kind=self.auth_kind)
        v.check_oauth_combination(self.auth_kind, client_id=self.client_id,
                                  client_secret=self.client_secret is not None, scopes=self.scopes,
                                  grant=self.grant)
        if self.auth_kind == AuthKind.OAUTH:
            if self.token is not None:
                raise ValueError("token is not used with auth_kind 'oauth' (the tokens come from the sign-in); "
                                 "give a client secret as client_secret")
            if self.auth_header:
                raise ValueError("auth_header is only used with auth_kind 'header_token'")
        else:
            v.check_auth_combination(self.auth_kind, has_token=self.token is not None,
                                     token_sent=self.token is not None, auth_header=self.auth_header)
        if self.headers and self.auth_header:
            v.check_extra_headers(self.headers, auth_header=self.auth_header)
        return self

    @property
    def url_or_command(self) -> str:
        """The URL, or for stdio the command line in plain words."""
        return self.base_url or v.command_line(self.command or "", self.args or [])


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
    transport: Literal["auto", "streamable-http", "sse", "stdio"] | Unset = UNSET
    pin_tools: StrictBool | Unset = UNSET
    headers: dict[str, str] | None | Unset = UNSET
    command: str | Unset = UNSET
    args: list[str] | None | Unset = UNSET
    env: dict[str, str] | None | Unset = UNSET
    secret_env: dict[str, SecretStr] | None | Unset = UNSET
    cwd: str | None | Unset = UNSET
    client_id: str | None | Unset = UNSET
    client_secret: SecretStr | None | Unset = UNSET
    scopes: list[str] | None | Unset = UNSET
    grant: Grant | Unset = UNSET

    @model_validator(mode="before")
    @classmethod
    def _nulls_mean_keep(cls, data: Any) -> Any:
        # The reference marks every field "| null": null for a scalar means "keep". Only
        # allowed_tools, ingest_tool_calls and auth_header give null a meaning (clear it), and
        # the optional parts of a stdio or OAuth source (headers, args, env, ...).
        if isinstance(data, dict):
            clearable = {"allowed_tools", "ingest_tool_calls", "auth_header", "headers", "args", "env",
                         "secret_env", "cwd", "client_id", "client_secret", "scopes"}
            return {k: x for k, x in data.items() if x is not None or k in clearable}
        return data

    _url = field_validator("base_url")(lambda cls, x: x if x is UNSET else v.normalize_base_url(x))
    _token = field_validator("token")(lambda cls, x: x if x is UNSET else v.check_token(x))
    _header = field_validator("auth_header")(
        lambda cls, x: x if x is UNSET else v.check_header_name(x))
    _ns = field_validator("app_namespace")(lambda cls, x: x if x is UNSET else v.check_namespace(x))
    _tools = field_validator("allowed_tools")(
        lambda cls, x: x if x is UNSET else v.check_allowed_tools(x))
    _headers = field_validator("headers")(lambda cls, x: x if x is UNSET else v.check_extra_headers(x))
    _command = field_validator("command")(lambda cls, x: x if x is UNSET else v.check_command(x))
    _args = field_validator("args")(lambda cls, x: x if x is UNSET else v.check_args(x))
    _env = field_validator("env")(lambda cls, x: x if x is UNSET else v.check_env(x, field="env"))
    _secret_env = field_validator("secret_env")(lambda cls, x: x if x is UNSET else v.check_secret_env(x))
    _cwd = field_validator("cwd")(lambda cls, x: x if x is UNSET else v.check_cwd(x))
    _client_id = field_validator("client_id")(lambda cls, x: x if x is UNSET else v.check_client_id(x))
    _client_secret = field_validator("client_secret")(
        lambda cls, x: x if x is UNSET else v.check_client_secret(x))
    _scopes = field_validator("scopes")(lambda cls, x: x if x is UNSET else v.check_scopes(x))

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
    authorize_url: str | None = Field(default=None, description=(
        "OAuth: the link the person opens to sign the source in (status auth_required)."))


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
    headers: dict[str, str] | None = Field(default=None, description="Extra non-secret headers.")
    command: str | None = Field(default=None, description="stdio: the program.")
    args: list[str] | None = None
    env: dict[str, str] | None = Field(default=None, description="stdio: plain environment variables.")
    secret_env: list[str] | None = Field(default=None, description="stdio: names of the secret variables.")
    cwd: str | None = None
    command_line: str | None = Field(default=None, description="stdio: the command in plain words.")
    client_id: str | None = Field(default=None, description="OAuth: the pre-registered client id.")
    scopes: list[str] | None = None
    grant: Grant | None = None
    signed_in: bool | None = Field(default=None, description="OAuth: tokens are held (never shown).")


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
