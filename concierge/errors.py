"""Every exception Concierge raises on purpose, in one tree.

Each class has one machine code (``error``) and one HTTP status (``status_code``), both class
attributes: the server's codec (`concierge.wire`) reads them, and decodes an error answer back
into the same class, so a remote error is the same exception as a local one.

    ConciergeError                 500 error              base; ``.detail`` is a sentence
    ├── ValidationFailed           400 validation_error   bad input; ``.field`` names the field
    │   ├── ConfigError            400 config_error       a bad settings file or setting
    │   ├── InvalidCursor          400 invalid_cursor     a page cursor this list did not hand out
    │   ├── InvalidDatabaseUrl     400 invalid_database_url  CONCIERGE_DATABASE_URL / --database-url unusable
    │   ├── InvalidForSource       409 validation_error   valid alone, not for the source as stored
    │   ├── PayloadTooLarge        413 payload_too_large
    │   └── UnsupportedMediaType   415 unsupported_media_type
    ├── ToolArgumentError          400 invalid_arguments  the model's arguments do not fit the tool
    ├── PermissionDenied           403 forbidden          a key or role may not do this
    │   ├── AgentInactive          403 agent_inactive
    │   ├── ForbiddenOrigin        403 forbidden_origin   anonymous access from a foreign page or host
    │   ├── NotAllowed             403 not_allowed        outside an allowlist or tool_sources
    │   └── Unauthenticated        401 unauthorized       no API key, or an unknown one
    │       └── SignatureInvalid   401 invalid_signature  a webhook not signed with the source's secret
    ├── NotFound                   404 not_found
    ├── Conflict                   409 conflict           the operation clashes with state
    │   ├── Ambiguous              409 ambiguous          a name that fits several things
    │   ├── NamespaceTaken         409 namespace_taken
    │   ├── NothingToPull          409 nothing_to_pull
    │   ├── NotSupported           409 not_supported      a tool the gateway cannot offer
    │   ├── SessionBusy            409 session_busy
    │   ├── SourceInactive         409 source_inactive    paused, failing or revoked
    │   ├── SourceRevoked          409 source_revoked     no secret is stored for a revoked source
    │   ├── StaleVersion           409 stale_version      a compare-and-set saw another version
    │   ├── ToolHeld               409 tool_held          its definition changed since it was approved
    │   └── UnknownTool            409 unknown_tool       not in the agent's catalog
    ├── RateLimited                429 rate_limited       ``.retry_after`` seconds
    ├── ConnectorError             502 mcp_error          talking MCP failed; ``.kind`` is an ErrorKind
    ├── ModelError                 502 model_error        the chat model failed or refused
    │   ├── MaxTurnsExceeded           max_turns_exceeded the engine's loop hit its turn bound
    │   ├── ModelAuthFailed            model_auth
    │   ├── ModelBadRequest            model_bad_request
    │   ├── ModelBadResponse           model_bad_response
    │   ├── ModelConfigError           model_config
    │   ├── ModelForbidden             model_forbidden
    │   ├── ModelNotFound              model_not_found
    │   ├── ModelQuotaExceeded         model_quota
    │   ├── ModelRateLimited           model_rate_limited
    │   ├── ModelServerError           model_server_error
    │   ├── ModelTimeout               model_timeout
    │   ├── ModelUnreachable           model_unreachable
    │   └── ScriptExhausted            script_exhausted   a ScriptedModel ran out of replies
    ├── ServerUnreachable          502 connection_error   (client side) the concierge server cannot be reached
    │   └── ServerTimeout          504 timeout            (client side) it did not answer in time
    ├── StoreError                 500 store_error        the database refused or failed
    │   ├── DatabaseBusy           503 database_busy      another process held the SQLite write lock
    │   ├── DatabaseUnavailable    503 database_unavailable  cannot be opened or reached
    │   ├── IntegrityError         409 integrity_error    a constraint refused a write
    │   │   └── UniqueViolation    409 unique_violation   a unique index refused a duplicate
    │   └── SchemaTooNew           500 schema_too_new     migrated by a newer Concierge
    ├── Unsupported                501 unsupported        this backend cannot do that
    ├── VaultError                 500 vault_error        the master key or the vault is unusable
    │   └── WrongMasterKey         500 wrong_master_key
    ├── InternalError              500 internal_error     a bug on the server (decoded from its answer)
    └── UnrecognizedError          any (its code)         a code this version does not know (decoded)

`ErrorKind` classifies why talking to an MCP server failed (a `ConnectorError`'s ``kind``, the
kind stored with a failed health check).

Lower-level errors (sqlite3, aiosqlite, asyncpg, httpx2, mcp, openai) are translated into these at the boundary
of the module that called them and never leak to the surfaces.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

__all__ = [
    "AgentInactive",
    "Ambiguous",
    "ConciergeError",
    "ConfigError",
    "Conflict",
    "ConnectorError",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "ErrorKind",
    "ForbiddenOrigin",
    "IntegrityError",
    "InternalError",
    "InvalidCursor",
    "InvalidDatabaseUrl",
    "InvalidForSource",
    "MaxTurnsExceeded",
    "ModelAuthFailed",
    "ModelBadRequest",
    "ModelBadResponse",
    "ModelConfigError",
    "ModelError",
    "ModelForbidden",
    "ModelNotFound",
    "ModelQuotaExceeded",
    "ModelRateLimited",
    "ModelServerError",
    "ModelTimeout",
    "ModelUnreachable",
    "NamespaceTaken",
    "NotAllowed",
    "NotFound",
    "NotSupported",
    "NothingToPull",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "SchemaTooNew",
    "ScriptExhausted",
    "ServerTimeout",
    "ServerUnreachable",
    "SessionBusy",
    "SignatureInvalid",
    "SourceInactive",
    "SourceRevoked",
    "StaleVersion",
    "StoreError",
    "ToolArgumentError",
    "ToolHeld",
    "Unauthenticated",
    "UniqueViolation",
    "UnknownTool",
    "UnrecognizedError",
    "Unsupported",
    "UnsupportedMediaType",
    "ValidationFailed",
    "VaultError",
    "WrongMasterKey",
    "error_classes",
]


class ErrorKind(StrEnum):
    """Why talking to an MCP server failed."""

    UNAUTHORIZED = "unauthorized"  # HTTP 401
    FORBIDDEN = "forbidden"  # HTTP 403
    AUTH_REQUIRED = "auth_required"  # OAuth: nobody signed in yet, or the refresh token was refused
    NOT_FOUND = "not_found"  # HTTP 404
    CONNECTION_REFUSED = "connection_refused"  # nothing listens, or the connection broke
    SPAWN_FAILED = "spawn_failed"  # stdio: the program could not be started (not found, not executable)
    PROCESS_EXITED = "process_exited"  # stdio: the program exited (or closed its stdout)
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    NOT_MCP = "not_mcp"  # answered, but not an MCP endpoint (HTML page, non-JSON-RPC JSON, 405...)
    PROTOCOL = "protocol"  # MCP-level error / malformed answer
    TOO_MANY_TOOLS = "too_many_tools"  # page cap or tool cap exceeded
    TOO_LARGE = "too_large"  # one message over the size cap (stopped reading there)
    SERVER_ERROR = "server_error"  # HTTP 5xx
    INVALID_URL = "invalid_url"
    BLOCKED = "blocked"  # the URL policy refused the address (never connected)
    UNREACHABLE = "unreachable"  # hosted mode: refused, closed, not MCP, TLS... told apart for nobody
    UNKNOWN = "unknown"


class ConciergeError(Exception):
    """Base of every error Concierge raises on purpose."""

    error: ClassVar[str] = "error"
    """The machine code, one per class."""
    status_code: ClassVar[int] = 500
    """The HTTP status the server answers with."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


# -- 400 ------------------------------------------------------------------------------------

class ValidationFailed(ConciergeError):
    """Input broke a rule. ``field`` names the offending field when there is one."""

    error = "validation_error"
    status_code = 400

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class ConfigError(ValidationFailed):
    """A setting or the settings file is wrong; ``field`` names the setting."""

    error = "config_error"


class InvalidForSource(ValidationFailed):
    """An update that is valid on its own but not for the source as stored (a switch to
    ``bearer`` for a source that has no token): HTTP 409, still a validation error."""

    status_code = 409


class InvalidCursor(ValidationFailed):
    """A page cursor that this list did not hand out."""

    error = "invalid_cursor"

    def __init__(self, detail: str, *, field: str | None = "cursor") -> None:
        super().__init__(detail, field=field)


class InvalidDatabaseUrl(ValidationFailed):
    """``CONCIERGE_DATABASE_URL`` / ``--database-url`` cannot be used."""

    error = "invalid_database_url"


class PayloadTooLarge(ValidationFailed):
    error = "payload_too_large"
    status_code = 413


class UnsupportedMediaType(ValidationFailed):
    error = "unsupported_media_type"
    status_code = 415


class ToolArgumentError(ConciergeError):
    """The model's arguments do not fit the tool (sent back to the model to fix)."""

    error = "invalid_arguments"
    status_code = 400


# -- 401 / 403 ------------------------------------------------------------------------------

class PermissionDenied(ConciergeError):
    error = "forbidden"
    status_code = 403


class AgentInactive(PermissionDenied):
    error = "agent_inactive"


class ForbiddenOrigin(PermissionDenied):
    error = "forbidden_origin"


class NotAllowed(PermissionDenied):
    error = "not_allowed"


class Unauthenticated(PermissionDenied):
    """No API key, or one the server does not know (401, where other refusals are 403)."""

    error = "unauthorized"
    status_code = 401


class SignatureInvalid(Unauthenticated):
    """The webhook request is not signed with the source's current secret."""

    error = "invalid_signature"


# -- 404 / 409 ------------------------------------------------------------------------------

class NotFound(ConciergeError):
    error = "not_found"
    status_code = 404


class Conflict(ConciergeError):
    error = "conflict"
    status_code = 409


class Ambiguous(Conflict):
    error = "ambiguous"


class NamespaceTaken(Conflict):
    error = "namespace_taken"


class NothingToPull(Conflict):
    error = "nothing_to_pull"


class NotSupported(Conflict):
    error = "not_supported"


class SessionBusy(Conflict):
    error = "session_busy"


class SourceInactive(Conflict):
    error = "source_inactive"


class SourceRevoked(Conflict):
    error = "source_revoked"


class StaleVersion(Conflict):
    """A compare-and-set saw a version other than the one expected (``current``)."""

    error = "stale_version"

    def __init__(self, detail: str, *, current: int | None = None) -> None:
        super().__init__(detail)
        self.current = current


class ToolHeld(Conflict):
    """A tool whose definition changed since an owner or editor approved it (or is new)."""

    error = "tool_held"


class UnknownTool(Conflict):
    error = "unknown_tool"


# -- 429 ------------------------------------------------------------------------------------

class RateLimited(ConciergeError):
    error = "rate_limited"
    status_code = 429

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# -- 5xx ------------------------------------------------------------------------------------

class ConnectorError(ConciergeError):
    """An MCP server could not be reached or did not behave.

    ``kind`` is an `ErrorKind` (a value it does not know becomes
    ``unknown``); ``detail`` reads ``"<kind>: <one sentence>"``, the kind said once.
    ``delivered`` is False only when the request certainly never reached the server (so
    retrying it cannot run a tool twice).
    """

    error = "mcp_error"
    status_code = 502

    def __init__(self, kind: str, detail: str, *, http_status: int | None = None,
                 delivered: bool = True) -> None:
        try:
            self.kind: ErrorKind = ErrorKind(kind)
        except ValueError:
            self.kind = ErrorKind.UNKNOWN
        prefix = f"{self.kind.value}: "
        self.sentence = detail.removeprefix(prefix)
        super().__init__(prefix + self.sentence)
        self.http_status = http_status
        self.delivered = delivered


class ModelError(ConciergeError):
    error = "model_error"
    status_code = 502


class MaxTurnsExceeded(ModelError):
    error = "max_turns_exceeded"


class ModelAuthFailed(ModelError):
    error = "model_auth"


class ModelBadRequest(ModelError):
    error = "model_bad_request"


class ModelBadResponse(ModelError):
    error = "model_bad_response"


class ModelConfigError(ModelError):
    error = "model_config"


class ModelForbidden(ModelError):
    error = "model_forbidden"


class ModelNotFound(ModelError):
    error = "model_not_found"


class ModelQuotaExceeded(ModelError):
    error = "model_quota"


class ModelRateLimited(ModelError):
    error = "model_rate_limited"


class ModelServerError(ModelError):
    error = "model_server_error"


class ModelTimeout(ModelError):
    error = "model_timeout"


class ModelUnreachable(ModelError):
    error = "model_unreachable"


class ScriptExhausted(ModelError):
    """A `ScriptedModel` was asked for more replies than its script holds."""

    error = "script_exhausted"


class ServerUnreachable(ConciergeError):
    """The concierge server (``--api-url``) cannot be reached (raised by the HTTP client)."""

    error = "connection_error"
    status_code = 502


class ServerTimeout(ServerUnreachable):
    error = "timeout"
    status_code = 504


class StoreError(ConciergeError):
    """The database refused or failed (driver errors are translated into these at the engine)."""

    error = "store_error"


class DatabaseBusy(StoreError):
    error = "database_busy"
    status_code = 503


class DatabaseUnavailable(StoreError):
    """The database cannot be opened or reached (names the URL, never its password)."""

    error = "database_unavailable"
    status_code = 503


class IntegrityError(StoreError):
    """A constraint refused a write; ``constraint`` names it when known."""

    error = "integrity_error"
    status_code = 409

    def __init__(self, detail: str, *, constraint: str | None = None) -> None:
        super().__init__(detail)
        self.constraint = constraint


class UniqueViolation(IntegrityError):
    error = "unique_violation"


class SchemaTooNew(StoreError):
    error = "schema_too_new"


class Unsupported(ConciergeError):
    """This backend cannot do what was asked."""

    error = "unsupported"
    status_code = 501


class VaultError(ConciergeError):
    error = "vault_error"


class WrongMasterKey(VaultError):
    error = "wrong_master_key"


class InternalError(ConciergeError):
    """A bug on the server: its answer names only the request id (decoded by the client)."""

    error = "internal_error"


class UnrecognizedError(ConciergeError):
    """An error answer whose code this version does not know (a newer server): its code and
    status are kept as the server sent them."""

    def __init__(self, detail: str, *, code: str, status_code: int) -> None:
        super().__init__(detail)
        self.code = code
        self.http_status = status_code

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


def error_classes() -> list[type[ConciergeError]]:
    """Every class of the tree, base first (for codecs and the tree's own test)."""
    found: list[type[ConciergeError]] = []
    pending: list[type[ConciergeError]] = [ConciergeError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(sorted(cls.__subclasses__(), key=lambda c: c.__name__))
    return [c for c in found if c.__module__ == __name__]
