"""The HTTP API's wire format, shared by the server and `concierge.remote`: the bodies that
exist only on the wire, and the error codec.

    ConciergeError  ->  HTTP status (the class's ``status_code``) + ``{"error", "detail", ...}``
    HTTP status + body  ->  the same ConciergeError subclass (`error_from_response`)

The body carries ``field`` for a validation error, ``retry_after`` for 429 and ``kind`` for
a ConnectorError. Decoding looks the class up by its machine code (and status, which tells
`InvalidForSource` from `ValidationFailed`); a code this version does not know becomes an
`UnrecognizedError` that keeps the code and status as sent.

Free of Starlette and of the registry's service layer (store, vault, mcp SDK): an HTTP client
imports this and the registry's models only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from concierge.errors import (
    ConciergeError,
    ConnectorError,
    RateLimited,
    UnrecognizedError,
    ValidationFailed,
    error_classes,
)
from concierge.registry.catalog_models import CatalogResult, CatalogTool, ResolutionTrace
from concierge.registry.models import Outcome, Sandbox
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
    "error_body",
    "error_from_response",
    "status_for",
]


# -- bodies ---------------------------------------------------------------------------------

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


# -- the error codec ------------------------------------------------------------------------

def status_for(exc: ConciergeError) -> int:
    """The HTTP status ``exc`` is answered with."""
    if isinstance(exc, UnrecognizedError):
        return exc.http_status
    return exc.status_code


def error_body(exc: ConciergeError) -> dict[str, Any]:
    """The JSON body ``exc`` is answered with."""
    body: dict[str, Any] = exc.to_dict()
    if isinstance(exc, ValidationFailed) and exc.field:
        body["field"] = exc.field
    if isinstance(exc, RateLimited):
        body["retry_after"] = exc.retry_after
    if isinstance(exc, ConnectorError):
        body["kind"] = exc.kind
    return body


def _tables() -> tuple[dict[tuple[str, int], type[ConciergeError]], dict[str, type[ConciergeError]]]:
    by_pair: dict[tuple[str, int], type[ConciergeError]] = {}
    by_code: dict[str, type[ConciergeError]] = {}
    for cls in error_classes():  # base classes first: a shared code decodes to the base
        if cls is UnrecognizedError:
            continue
        by_pair.setdefault((cls.error, cls.status_code), cls)
        by_code.setdefault(cls.error, cls)
    return by_pair, by_code


_BY_PAIR, _BY_CODE = _tables()


def error_from_response(status: int, body: Any) -> ConciergeError:
    """The `ConciergeError` an API error answer stands for (the inverse of `error_body`)."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error") or "error")
    detail = str(body.get("detail") or f"HTTP {status}")
    cls = _BY_PAIR.get((code, status)) or _BY_CODE.get(code)
    if cls is None or cls is ConciergeError:
        return UnrecognizedError(detail, code=code, status_code=status)
    if issubclass(cls, ValidationFailed):
        field = body.get("field")
        return cls(detail, field=str(field) if field else None)
    if issubclass(cls, RateLimited):
        try:
            retry = float(body.get("retry_after", 1.0))
        except (TypeError, ValueError):
            retry = 1.0
        return cls(detail, retry_after=retry)
    if issubclass(cls, ConnectorError):
        return cls(str(body.get("kind") or "unknown"), detail)
    return cls(detail)
