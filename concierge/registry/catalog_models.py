"""What an agent sees: the resolved tool catalog and the trace that explains it.

Shared by the catalog resolver, the gateway, the concierge's tools and the HTTP API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

__all__ = ["ApprovalResult", "CatalogPrompt", "CatalogResource", "CatalogResult", "CatalogTool", "HeldTool",
           "PullResult", "ResolutionTrace", "SameUrl", "SkippedSource", "ToolCallOutcome"]


class CatalogTool(BaseModel):
    name: str = Field(description="Advertised name, ^[a-zA-Z0-9_-]{1,64}$, unique in the catalog.")
    app: str = Field(description="The source's app_namespace (its label in the catalog).")
    source_id: str
    source_name: str
    original_name: str = Field(description="The tool's name on the MCP server.")
    description: str
    input_schema: dict[str, Any]
    title: str | None = None
    definition: dict[str, Any] = Field(default_factory=dict, description=(
        "The server's whole tool definition (camelCase: title, annotations, outputSchema, icons, "
        "execution, _meta) under the advertised name, with the sanitized description and schema: "
        "what the MCP gateway passes through."))


class CatalogResource(BaseModel):
    """A resource (``uri`` set) or resource template (``uri_template`` set) of a source."""

    name: str = Field(description="Advertised name, namespaced like tools.")
    source_id: str
    original_name: str
    uri: str | None = Field(default=None, description="The server's URI, verbatim (links in results stay valid).")
    uri_template: str | None = None
    definition: dict[str, Any] = Field(default_factory=dict)


class CatalogPrompt(BaseModel):
    name: str = Field(description="Advertised name, namespaced like tools.")
    source_id: str
    original_name: str
    definition: dict[str, Any] = Field(default_factory=dict)


class SkippedSource(BaseModel):
    source_id: str
    name: str
    app: str | None = Field(default=None, description="the source's app_namespace")
    reason: str = Field(description="paused | error | disconnected | not_in_tool_sources | vault_error | "
                                    "timeout | unauthorized | forbidden | connection_refused | ... (ErrorKind)")
    detail: str | None = None
    kind: str | None = Field(default=None, description="the ErrorKind, when talking MCP failed (now, "
                                                       "or in the source's last health check)")


class HeldTool(BaseModel):
    """A tool whose listed definition differs from the one approved (or that was never
    approved): not advertised, calls refused, until an owner or editor approves it."""

    source_id: str
    tool: str = Field(description="The tool's name on the MCP server (what `approve --tool` takes).")
    name: str | None = Field(default=None, description="The name it would be advertised under.")
    status: Literal["changed", "new"]
    changes: list[str] = Field(description='Readable diff, e.g. "description changed: “…” → “…”", '
                                           '"new argument `exfil`" (server text cleaned, shortened).')
    pending_hash: str
    pinned_hash: str | None = None
    since: str | None = Field(default=None, description="When this definition was first seen.")

    @property
    def sentence(self) -> str:
        return f"{self.tool} ({self.status}): " + "; ".join(self.changes)


class ApprovalResult(BaseModel):
    """What `approve` pinned, and what is still held."""

    source_id: str
    approved: list[HeldTool] = Field(default_factory=list)
    still_held: list[HeldTool] = Field(default_factory=list)
    detail: str


class ResolutionTrace(BaseModel):
    """Why the agent saw what it saw (names follow the reference's trace)."""

    agent: str | None = None
    sources_resolved: list[str] = Field(default_factory=list)
    sources_skipped: list[SkippedSource] = Field(default_factory=list, description=(
        "every source whose listing failed, and of the sources skipped without a listing (paused, "
        "error, disconnected, not_in_tool_sources) the first 20 per reason, in the sandbox's order"))
    sources_skipped_by_reason: dict[str, int] = Field(
        default_factory=dict, description="every skipped source, itemized or not, counted per reason")
    sources_skipped_omitted: int = Field(
        default=0, description="skipped sources counted in sources_skipped_by_reason but not itemized")
    tool_names_advertised: list[str] = Field(default_factory=list)
    allowlist_filtered_out: dict[str, list[str]] = Field(
        default_factory=dict, description='{"source": [...], "agent": [...]}: names each allowlist removed')
    allowlist_missing_entries: list[str] = Field(
        default_factory=list, description="agent allowlist entries that matched no tool")
    source_allowlist_missing_entries: dict[str, list[str]] = Field(
        default_factory=dict, description="per source id: allowed_tools entries the server lacks")
    renamed: list[dict[str, str]] = Field(
        default_factory=list, description="tools advertised under a shortened/deduplicated name")
    collisions: list[dict[str, str]] = Field(default_factory=list)
    cached_sources: list[str] = Field(default_factory=list)
    stale_sources: list[str] = Field(
        default_factory=list, description="sources served from an expired listing while a refresh runs")
    tools_left_out: list[dict[str, str]] = Field(
        default_factory=list, description="tools not advertised, with the reason (e.g. task_required)")
    tools_held: list[HeldTool] = Field(
        default_factory=list, description="tools not advertised because their definition changed since "
                                          "it was approved (or they are new): a possible rug pull")
    notes: list[str] = Field(default_factory=list, description="anything else worth knowing "
                             "(paused agent, app filter, oversized schema replaced)")
    duration_ms: float = 0.0


class CatalogResult(BaseModel):
    agent: str | None
    sandbox_id: str
    tools: list[CatalogTool]
    trace: ResolutionTrace
    resources: list[CatalogResource] = Field(default_factory=list)
    resource_templates: list[CatalogResource] = Field(default_factory=list)
    prompts: list[CatalogPrompt] = Field(default_factory=list)
    instructions: dict[str, str] = Field(default_factory=dict, description=(
        "per source id: the instructions its server sent (sanitized)"))

    @property
    def count(self) -> int:
        return len(self.tools)

    @property
    def by_app(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for tool in self.tools:
            out.setdefault(tool.app, []).append(tool.name)
        return out

    def summary(self) -> dict[str, Any]:
        """The reference answer shape plus the trace."""
        return {
            "tools": [{"name": t.name, "app": t.app, "description": t.description,
                       "source_id": t.source_id} for t in self.tools],
            "by_app": self.by_app,
            "count": self.count,
            "trace": self.trace.model_dump(mode="json"),
        }


class ToolCallOutcome(BaseModel):
    """The answer of a gateway call.

    ``text`` joins the text of every text block (newline-separated). Serialized, each text is
    sent once: a text block in ``content`` carries ``"textRef": [start, end]`` (its slice of
    ``text``) instead of its ``text``, and is filled in again when the JSON is read back.
    """

    name: str
    source_id: str
    original_name: str
    is_error: bool
    text: str
    content: list[dict[str, Any]] = Field(default_factory=list)
    structured_content: dict[str, Any] | None = None
    latency_ms: float = 0.0

    @model_serializer(mode="wrap")
    def _text_once(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if isinstance(data, dict) and isinstance(data.get("content"), list):
            at, blocks = 0, []
            for block in data["content"]:
                if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                    end = at + len(block["text"])
                    block = {k: v for k, v in block.items() if k != "text"} | {"textRef": [at, end]}
                    at = end + 1  # the newline between blocks
                blocks.append(block)
            data["content"] = blocks
        return data

    @model_validator(mode="before")
    @classmethod
    def _fill_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("content"), list):
            text = str(data.get("text") or "")
            blocks = []
            for block in data["content"]:
                ref = block.get("textRef") if isinstance(block, dict) else None
                if isinstance(ref, list) and len(ref) == 2:
                    block = {k: v for k, v in block.items() if k != "textRef"} | {"text": text[ref[0]:ref[1]]}
                blocks.append(block)
            data = data | {"content": blocks}
        return data


class PullResult(BaseModel):
    source_id: str
    calls: int
    stored: int = Field(description="results stored (new content)")
    unchanged: int = Field(description="results identical to the last stored one")
    skipped: int = Field(default=0, description="ingest calls not run (stopped by an error or the cap)")
    errors: list[str] = Field(default_factory=list)


class SameUrl(BaseModel):
    """The live sources of a sandbox at one URL (``same_url``): the first few named, all counted."""

    names: list[tuple[str, str]] = Field(default_factory=list, description="(name, id), oldest first")
    total: int = 0
