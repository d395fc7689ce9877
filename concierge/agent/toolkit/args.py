"""The tools' argument models (pydantic): their JSON schemas are what the model is shown.

These check the *shape* of a call only (types, which fields exist). The registry's rules
(URL policy, auth combinations, namespaces, bounds) are checked by the registry itself, in
each write's ``prepare`` step, never re-stated here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgentToolsArgs",
    "ApproveArgs",
    "CreateAgentArgs",
    "CreateSandboxArgs",
    "DescribeToolArgs",
    "ListSourcesArgs",
    "NoArgs",
    "PageAgentsArgs",
    "PageSourcesArgs",
    "RegisterArgs",
    "SandboxArgs",
    "SourceArgs",
    "SwitchSandboxArgs",
    "UpdateAgentArgs",
    "UpdateArgs",
]

_ARGS = ConfigDict(extra="forbid", str_strip_whitespace=True)
_SANDBOX = Field(default=None, description="Sandbox name or id; omit for the current sandbox.")
_SOURCE = Field(description="The source: its id (ds_…), its name, or its namespace.")


class NoArgs(BaseModel):
    model_config = _ARGS


class SandboxArgs(BaseModel):
    model_config = _ARGS
    sandbox: str | None = _SANDBOX


class SwitchSandboxArgs(BaseModel):
    model_config = _ARGS
    sandbox: str = Field(description="The sandbox to work in from now on (name or id).")


class CreateSandboxArgs(BaseModel):
    model_config = _ARGS
    name: str = Field(description="The new sandbox's name (letters, digits, _ and -).")


class ListSourcesArgs(BaseModel):
    model_config = _ARGS
    sandbox: str | None = _SANDBOX
    status: Literal["active", "paused", "error", "auth_required", "disconnected"] | None = Field(
        default=None, description="Only sources with this status.")


CHAT_PAGE = 25
"""Rows a list shows in chat unless the call asks for more."""
_LIMIT = Field(default=CHAT_PAGE, description="At most this many rows (default 25).")
_CURSOR = Field(default=None, description=(
    "The next_cursor of the previous page, to see the rows after it; omit for the first page."))


class PageSourcesArgs(ListSourcesArgs):
    limit: int = _LIMIT
    cursor: str | None = _CURSOR


class PageAgentsArgs(SandboxArgs):
    limit: int = _LIMIT
    cursor: str | None = _CURSOR


class SourceArgs(BaseModel):
    model_config = _ARGS
    source: str = _SOURCE
    sandbox: str | None = _SANDBOX


class ApproveArgs(SourceArgs):
    tools: list[str] | None = Field(default=None, description=(
        "Server names of the held tools to approve (as show_source lists them under held_tools); "
        "leave out to approve every held tool of the source."))


class RegisterArgs(BaseModel):
    model_config = _ARGS
    name: str = Field(description="A short label, e.g. 'Acme internal'.")
    url: str | None = Field(default=None, description=(
        "The server's MCP URL. https only; http only for localhost/127.0.0.1/::1. Omit it for a "
        "program run on this machine (give command instead). A key in its query stays there as its "
        "[secret:…] reference (auth_kind none)."))
    command: str | None = Field(default=None, description=(
        "For a local stdio server: the command line that runs it, e.g. 'uvx mcp-server-git' or "
        "'npx -y @modelcontextprotocol/server-everything' (no URL then; auth_kind none)."))
    auth_kind: Literal["bearer", "header_token", "none", "oauth"] = Field(
        description="bearer: Authorization: Bearer <token>. header_token: the token in a custom "
                    "header (set auth_header). oauth: the person signs in with OAuth 2.1 (a link "
                    "to open comes back). none: no credential (always none with command).")
    scopes: list[str] | None = Field(default=None, description="oauth: the scopes to ask for (optional).")
    client_id: str | None = Field(default=None, description="oauth: a pre-registered client id (optional).")
    auth_header: str | None = Field(default=None, description="Header name for header_token, e.g. X-Api-Key.")
    token_ref: str | None = Field(
        default=None, description="A [secret:sec_…] reference from the conversation. Omit it: the "
                                  "person is then asked for the token privately.")
    sandbox: str | None = _SANDBOX
    app_namespace: str | None = Field(
        default=None, description="Prefix of the tool names agents see (letters, digits, _ -; "
                                  "<=64). Default: the new source's id.")
    rate_cap_per_minute: int | None = Field(default=None,
                                            description="Tool calls per minute, 1-600 (default 60).")
    allowed_tools: list[str] | None = Field(default=None,
                                            description="Offer only these tools (default: all).")


class UpdateArgs(BaseModel):
    model_config = _ARGS
    source: str = _SOURCE
    sandbox: str | None = _SANDBOX
    name: str | None = Field(default=None, description="New label.")
    url: str | None = Field(default=None, description="New MCP URL (same rules as register).")
    auth_kind: Literal["bearer", "header_token", "none"] | None = Field(
        default=None, description="New auth scheme; switching to bearer or header_token asks the "
                                  "person for the new credential privately.")
    auth_header: str | None = Field(default=None, description="New header name for header_token.")
    rotate_token: bool = Field(default=False, description="Replace the stored token; the person "
                                                          "is asked for the new one privately.")
    call_timeout: float | None = Field(default=None, description="Seconds one tool call may take (default 60).")
    connect_timeout: float | None = Field(default=None, description="Seconds connecting may take (default 10).")
    token_ref: str | None = Field(default=None, description="A [secret:sec_…] reference, if the "
                                                            "person already gave the new token.")
    app_namespace: str | None = Field(default=None, description="New tool-name prefix.")
    rate_cap_per_minute: int | None = Field(default=None, description="Tool calls per minute, 1-600.")
    allowed_tools: list[str] | None = Field(default=None, description="Offer only these tools "
                                                                      "(their names on the server).")
    allow_all_tools: bool = Field(default=False, description="Remove the per-source tool allowlist.")


class AgentToolsArgs(BaseModel):
    model_config = _ARGS
    agent: str | None = Field(default=None, description="The agent's slug (e.g. support-bot); "
                                                        "omit for every tool in the sandbox.")
    sandbox: str | None = _SANDBOX
    app: str | None = Field(default=None, description="Only tools from this namespace.")


class DescribeToolArgs(BaseModel):
    model_config = _ARGS
    tool: str = Field(description="The tool: its catalog name (e.g. demo_search_docs) or its name "
                                  "on the server (search_docs).")
    agent: str | None = Field(default=None, description="Look in this agent's catalog; omit for "
                                                        "the whole sandbox.")
    sandbox: str | None = _SANDBOX


class UpdateAgentArgs(BaseModel):
    model_config = _ARGS
    agent: str = Field(description="The agent's slug.")
    name: str | None = Field(default=None, description="New display name.")
    tool_allowlist: list[str] | None = Field(
        default=None, description="The agent's new allowlist (replaces the old one): catalog names or "
                                  "globs such as demo_*.")
    allow_all_tools: bool = Field(default=False, description="Clear the allowlist: every tool.")
    status: Literal["active", "paused"] | None = Field(
        default=None, description="paused: the gateway refuses every tool call the agent makes until it is "
                                  "active again.")
    sandbox: str | None = _SANDBOX


class CreateAgentArgs(BaseModel):
    model_config = _ARGS
    slug: str = Field(description="Short id: lowercase letters, digits and - (e.g. support-bot).")
    name: str | None = Field(default=None, description="Display name (default: the slug).")
    tool_allowlist: list[str] | None = Field(
        default=None, description="Catalog tool names or globs (acme_*) the agent may use; "
                                  "omit for every tool.")
    sandbox: str | None = _SANDBOX
