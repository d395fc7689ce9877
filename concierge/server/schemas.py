"""Request and response bodies that exist only on the wire (the registry's models cover the rest)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from concierge.registry import Outcome, Sandbox
from concierge.registry.catalog_models import CatalogResult, CatalogTool, ResolutionTrace
from concierge.registry.validation import SANDBOX_NAME_PATTERN

__all__ = [
    "CatalogView",
    "DeleteResult",
    "ErrorBody",
    "Health",
    "Me",
    "RegisterResponse",
    "SandboxCreate",
    "ToolCall",
]


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="A short code: validation_error, not_found, conflict, "
                                   "namespace_taken, forbidden, unauthorized, rate_limited, ...")
    detail: str = Field(description="A sentence naming the field and the rule, or what to do.")
    field: str | None = Field(default=None, description="The offending field (validation errors).")
    retry_after: float | None = Field(default=None, description="Seconds to wait (429).")
    kind: str | None = Field(default=None, description="What failed talking MCP (502).")


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Me(BaseModel):
    """Who the caller is, and the sandbox used when a client names none."""

    key_id: str | None
    role: str
    sandbox_id: str | None = Field(description="The only sandbox this key may use; null: every sandbox.")
    default_sandbox: Sandbox


class SandboxCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1-64 letters, digits, _ and -; unique.",
                      json_schema_extra={"pattern": SANDBOX_NAME_PATTERN})


class RegisterResponse(Outcome):
    """The lifecycle outcome, plus the webhook signing secret — in this response only."""

    webhook_secret: str | None = Field(
        default=None, description="Sign webhook deliveries with this (HMAC-SHA256). Shown once; "
                                  "rotate it with POST .../user-mcp/webhook-secret.")


class DeleteResult(BaseModel):
    data_source_id: str
    deleted: bool


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The advertised catalog name, e.g. acme_search.")
    arguments: dict[str, Any] | None = None


class CatalogView(BaseModel):
    """An agent's resolved catalog: the reference shape (tools, by_app, count) plus the full
    tool entries and the resolution trace."""

    agent: str | None
    sandbox_id: str
    tools: list[CatalogTool]
    by_app: dict[str, list[str]]
    count: int
    trace: ResolutionTrace

    @classmethod
    def of(cls, result: CatalogResult) -> CatalogView:
        return cls(agent=result.agent, sandbox_id=result.sandbox_id, tools=result.tools,
                   by_app=result.by_app, count=result.count, trace=result.trace)

    def to_result(self) -> CatalogResult:
        return CatalogResult(agent=self.agent, sandbox_id=self.sandbox_id, tools=self.tools,
                             trace=self.trace)
