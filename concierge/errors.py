"""The exceptions Concierge raises, under one base.

    ConciergeError                     base; ``.error`` is a short code, ``.detail`` a sentence
    ├── ValidationFailed               bad input; names the field and the rule (API: 400)
    ├── NotFound                       unknown sandbox / source / agent id (API: 404)
    ├── Conflict                       the operation clashes with state (taken namespace, revoked source)
    ├── PermissionDenied               a key or role may not do this (API: 403)
    ├── RateLimited                    a per-source cap is exhausted; ``retry_after`` seconds
    ├── ConnectorError                 talking MCP to a user's server failed; ``.kind`` classifies it
    └── ModelError                     the chat model could not be reached or refused the request
        └── MaxTurnsExceeded           the engine's loop hit its turn bound

Lower-level errors (sqlite3, httpx2, mcp, openai) are translated into these at the boundary
of the module that called them and never leak to the surfaces.
"""

from __future__ import annotations

__all__ = [
    "ConciergeError",
    "Conflict",
    "ConnectorError",
    "MaxTurnsExceeded",
    "ModelError",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ValidationFailed",
]


class ConciergeError(Exception):
    """Base of every error Concierge raises on purpose."""

    error: str = "error"

    def __init__(self, detail: str, *, error: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if error is not None:
            self.error = error

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


class ValidationFailed(ConciergeError):
    """Input broke a rule. ``field`` names the offending field when there is one."""

    error = "validation_error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class NotFound(ConciergeError):
    error = "not_found"


class Conflict(ConciergeError):
    error = "conflict"


class PermissionDenied(ConciergeError):
    error = "forbidden"


class RateLimited(ConciergeError):
    error = "rate_limited"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ConnectorError(ConciergeError):
    """An MCP server could not be reached or did not behave.

    ``kind`` is a `concierge.mcp_client.kinds.ErrorKind` (a value it does not know becomes
    ``unknown``); ``detail`` reads ``"<kind>: <one sentence>"``, the kind said once.
    ``delivered`` is False only when the request certainly never reached the server (so
    retrying it cannot run a tool twice).
    """

    error = "mcp_error"

    def __init__(self, kind: str, detail: str, *, http_status: int | None = None,
                 delivered: bool = True) -> None:
        from concierge.mcp_client.kinds import ErrorKind  # a bare enum module: no SDK import

        try:
            self.kind = ErrorKind(kind)
        except ValueError:
            self.kind = ErrorKind.UNKNOWN
        prefix = f"{self.kind.value}: "
        self.sentence = detail.removeprefix(prefix)
        super().__init__(prefix + self.sentence)
        self.http_status = http_status
        self.delivered = delivered


class ModelError(ConciergeError):
    error = "model_error"


class MaxTurnsExceeded(ModelError):
    error = "max_turns_exceeded"
