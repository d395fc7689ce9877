"""Typed results of the concierge's tools: what a tool returns and what readers parse back.

A tool returns one of these models; the engine sends ``result.to_wire()`` (JSON) to the
model, the events and the HTTP layer, and a reader such as the offline planner parses it
back with `parse_result`. The wire form is the model with only the fields that were set
(``exclude_unset``), so a field is absent exactly when the tool did not know it, and
``null`` when it knew there was nothing (a source with no tool count yet).

Shapes (all additive to what the HTTP layer and the widget read)::

    list_sandboxes     SandboxList      {sandboxes: [{id, name}], current}
    switch_sandbox     SandboxSwitch    {sandbox, sandbox_id, previous}
    create_sandbox     SandboxCreated   {id, name}
    list_sources       SourceList       {sandbox, count, sources: [SourceRow]}
    show_source        SourceDetails    SourceRow + auth_kind, auth_header, has_token, allowed_tools, ...
    test_all_sources   HealthReport     {sandbox, healthy, failing, checked: [Lifecycle], skipped: [SourceRow]}
    register/update/test/pause/resume/revoke_source
                       Lifecycle        {data_source_id, status, name, ingestion_mode, health_error,
                                         health_error_kind?,
                                         detail, hint?, namespace?, tool_count?, url?, sandbox_id?, sandbox?}
    delete_source_command  DeleteCommand {source, name, command, note}
    list_agents        AgentList        {agents: [{slug, name, status, tool_allowlist}]}
    create_agent       AgentCreated     {slug, name, sandbox, tool_allowlist, status, id, unmatched}
    update_agent       AgentUpdated     AgentCreated + previous_allowlist
    list_agent_tools   Catalog          {agent, count, by_app, tools: [{name, app, description}], trace}
    describe_tool      ToolDescription  {name, app, source_id, source_name, original_name, description,
                                         input_schema, agent}
    any tool failing   ToolError        {error, detail, field?}
    a write not run    EngineStatus     {status: declined|not_confirmed|skipped|cancelled, detail}
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "AgentCreated",
    "AgentList",
    "AgentRow",
    "AgentUpdated",
    "ApprovedTools",
    "Catalog",
    "CatalogEntry",
    "CatalogTrace",
    "DeleteCommand",
    "EngineStatus",
    "HealthReport",
    "HeldToolRow",
    "Lifecycle",
    "RESULT_TYPES",
    "SandboxCreated",
    "SandboxList",
    "SandboxRow",
    "SandboxSwitch",
    "SkippedSource",
    "SourceDetails",
    "SourceList",
    "SourceRow",
    "ToolDescription",
    "ToolError",
    "ToolResult",
    "parse_result",
]


class ToolResult(BaseModel):
    """Base of every tool result. Unknown fields are kept (readers of older or newer shapes)."""

    model_config = ConfigDict(extra="allow")

    def to_wire(self) -> dict[str, Any]:
        """The JSON form: the fields that were set, nothing else."""
        return self.model_dump(mode="json", exclude_unset=True)


class ToolError(ToolResult):
    """A tool that failed: a short code, a sentence, and the argument at fault when known."""

    error: str
    detail: str = ""
    field: str | None = None


class EngineStatus(ToolResult):
    """A write the engine did not run (the person declined, moved on, or it was skipped)."""

    status: Literal["declined", "not_confirmed", "skipped", "cancelled"]
    detail: str = ""


# -- sandboxes ------------------------------------------------------------------------------


class SandboxRow(ToolResult):
    id: str
    name: str


class SandboxList(ToolResult):
    sandboxes: list[SandboxRow]
    current: str


class SandboxSwitch(ToolResult):
    sandbox: str
    sandbox_id: str
    previous: str


class SandboxCreated(ToolResult):
    id: str
    name: str


# -- sources --------------------------------------------------------------------------------


class SourceRow(ToolResult):
    """One source as lists show it (``auth`` is e.g. ``bearer`` or ``header_token (X-Api-Key)``)."""

    id: str
    name: str
    status: str
    url: str
    auth: str
    namespace: str
    tools: int | None = None
    rate_cap_per_minute: int | None = None
    health_error: str | None = None
    health_error_kind: str | None = None

    @property
    def scheme(self) -> str:
        """The auth kind alone: ``bearer``, ``header_token`` or ``none``."""
        return self.auth.split(" ", 1)[0]


class SourceList(ToolResult):
    sandbox: str
    count: int
    """Sources on this page."""
    sources: list[SourceRow]
    total: int | None = None
    """Sources in the sandbox (with the status asked for), on every page."""
    more: int = 0
    """Sources after this page: ask for them with ``cursor=next_cursor``, or name one."""
    next_cursor: str | None = None


class SourceDetails(SourceRow):
    """One source in full; the credential only as ``has_token`` and a mask."""

    sandbox_id: str | None = None
    auth_kind: str | None = None
    auth_header: str | None = None
    has_token: bool | None = None
    token: str | None = None
    """``••••`` when a credential is stored (never any of its characters)."""
    allowed_tools: list[str] | str | None = None
    server: str | None = None
    last_checked_at: str | None = None
    last_latency_ms: float | None = None
    webhook_rate_cap_per_minute: int | None = None
    connect_timeout: float | None = None
    call_timeout: float | None = None
    ingestion_mode: str | None = None
    held_tools: list[HeldToolRow] | None = None
    """Tools held until approved: their definition changed since approval (or they are new)."""


class HeldToolRow(ToolResult):
    """A held tool: its server name, ``changed`` or ``new``, the readable diff (server text)."""

    tool: str
    status: str
    changes: list[str] = []


class ApprovedTools(ToolResult):
    """What an approval pinned, and what is still held."""

    data_source_id: str
    name: str | None = None
    approved: list[HeldToolRow] = []
    still_held: list[HeldToolRow] = []
    detail: str | None = None


class Lifecycle(ToolResult):
    """The registry's outcome of a lifecycle call, plus what an agent will see."""

    data_source_id: str | None = None
    status: str | None = None
    name: str | None = None
    ingestion_mode: str | None = None
    health_error: str | None = None
    health_error_kind: str | None = None
    error: str | None = None
    detail: str | None = None
    hint: str | None = None
    namespace: str | None = None
    tool_count: int | None = None
    url: str | None = None
    sandbox_id: str | None = None
    sandbox: str | None = None
    authorize_url: str | None = None
    """oauth: the link the person opens to sign the source in (status auth_required)."""
    command_line: str | None = None
    """stdio: the program that runs, in plain words."""


class HealthReport(ToolResult):
    sandbox: str
    healthy: int
    failing: int
    checked: list[Lifecycle]
    skipped: list[SourceRow]


class DeleteCommand(ToolResult):
    source: str
    name: str
    command: str
    note: str


# -- agents and the catalog -----------------------------------------------------------------


class AgentRow(ToolResult):
    slug: str
    name: str
    status: str
    tool_allowlist: list[str] | str


class AgentList(ToolResult):
    agents: list[AgentRow]
    total: int | None = None
    more: int = 0
    """Agents after this page (``cursor=next_cursor`` lists them)."""
    next_cursor: str | None = None


class AgentCreated(ToolResult):
    id: str
    slug: str
    name: str
    sandbox: str
    status: str
    tool_allowlist: list[str] | str
    unmatched: list[str] = []
    """Allowlist entries that name no tool the sandbox offers right now."""


class AgentUpdated(ToolResult):
    id: str
    slug: str
    name: str
    sandbox: str
    status: str
    tool_allowlist: list[str] | str
    previous_allowlist: list[str] | str
    unmatched: list[str] = []
    """Allowlist entries that name no tool the sandbox offers right now."""
    previous_status: str = "active"


class CatalogEntry(ToolResult):
    name: str
    app: str
    description: str = ""


class SkippedSource(ToolResult):
    source_id: str
    name: str
    app: str | None = None
    reason: str
    detail: str | None = None
    kind: str | None = None
    """The ErrorKind, when talking MCP failed."""


class CatalogTrace(ToolResult):
    sources_resolved: list[str] = []
    sources_skipped: list[SkippedSource] = []
    sources_skipped_by_reason: dict[str, int] = {}
    """Set when not every skipped source is itemized: all of them, counted per reason."""
    sources_skipped_omitted: int = 0
    allowlist_filtered_out: dict[str, list[str]] = {}
    allowlist_missing_entries: list[str] = []
    collisions: list[dict[str, Any]] = []
    tools_left_out: list[dict[str, str]] = []
    """Set when the server lists tools the catalog does not offer: ``{name, reason}`` (``task_required``)."""
    tools_held: list[dict[str, str]] = []
    """Set when tools wait for approval: ``{name, tool, source_id, status}`` (``changed`` | ``new``)."""


class Catalog(ToolResult):
    agent: str | None = None
    agent_status: str | None = None
    """The agent's status when it is not active (paused: the gateway refuses its every call)."""
    count: int
    by_app: dict[str, list[str]]
    tools: list[CatalogEntry]
    trace: CatalogTrace


class ToolDescription(ToolResult):
    name: str
    app: str
    source_id: str
    source_name: str
    original_name: str
    description: str
    input_schema: dict[str, Any]
    agent: str | None = None


RESULT_TYPES: dict[str, type[ToolResult]] = {
    "list_sandboxes": SandboxList, "switch_sandbox": SandboxSwitch, "create_sandbox": SandboxCreated,
    "list_sources": SourceList, "show_source": SourceDetails, "test_all_sources": HealthReport,
    "register_source": Lifecycle, "update_source": Lifecycle, "test_source": Lifecycle,
    "pause_source": Lifecycle, "resume_source": Lifecycle, "revoke_source": Lifecycle,
    "delete_source_command": DeleteCommand, "list_agents": AgentList, "create_agent": AgentCreated,
    "list_agent_tools": Catalog, "describe_tool": ToolDescription, "update_agent": AgentUpdated,
    "accept_tool_changes": ApprovedTools,
}
"""The result model of each tool, by tool name."""


def parse_result(tool: str, content: str | dict[str, Any] | None) -> ToolResult:
    """A tool message's content as its typed result: `ToolError`, `EngineStatus`, the tool's
    own model, or a `ToolError` ``unreadable`` when it is none of these (e.g. shortened)."""
    data: Any = content
    if isinstance(content, str):
        try:
            data = json.loads(content)
        except json.JSONDecodeError:
            return ToolError(error="unreadable", detail=content[:200])
    if not isinstance(data, dict):
        return ToolError(error="unreadable", detail=str(data)[:200])
    try:
        if data.get("error") and "data_source_id" not in data:
            return ToolError.model_validate(data)
        if data.get("status") in ("declined", "not_confirmed", "skipped", "cancelled") and len(data) <= 2:
            return EngineStatus.model_validate(data)
        model = RESULT_TYPES.get(tool)
        if model is None:
            return ToolResult.model_validate(data)
        return model.model_validate(data)
    except ValidationError as exc:
        return ToolError(error="unreadable", detail=str(exc).splitlines()[0])
