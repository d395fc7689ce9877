"""Validation rules for registry input. Each rule raises ``ValueError`` with a sentence that
names the field; `from_pydantic` turns a pydantic error into a `ValidationFailed`.

Kept free of pydantic so the same rules serve request bodies, merged partial updates and
the conversational tools.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError

from concierge.errors import ValidationFailed

__all__ = [
    "LOCAL_HOSTS",
    "check_allowed_tools",
    "check_allowlist",
    "check_auth_combination",
    "check_header_name",
    "check_namespace",
    "check_slug",
    "check_token",
    "check_tool_sources",
    "from_pydantic",
    "normalize_base_url",
]

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SLUG_RE = re.compile(r"^[a-z0-9-]+$")
# RFC 9110 field-name = token
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the HTTP/MCP transport sets itself; a user value would break or hijack the request.
TRANSPORT_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding",
    "connection", "keep-alive", "upgrade", "te", "trailer", "accept", "accept-encoding",
    "expect", "proxy-authorization", "proxy-connection", "cookie",
    "mcp-session-id", "mcp-protocol-version", "last-event-id",
})
KNOWN_TOOL_SOURCES = frozenset({"user_mcp"})
MAX_URL = 2048
MAX_TOKEN = 8192


def normalize_base_url(url: str) -> str:
    """https only (http for localhost, 127.0.0.1, [::1]); no userinfo or fragment; no trailing slash."""
    url = url.strip()
    if not url:
        raise ValueError("base_url is required")
    if len(url) > MAX_URL:
        raise ValueError(f"base_url is longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("base_url must not contain spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"base_url must be a full https:// URL such as https://mcp.example.com/mcp (got {url!r})")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("base_url must not contain a user name or password; "
                         "use auth_kind and token for credentials")
    if parts.fragment or url.endswith("#"):
        raise ValueError("base_url must not contain a #fragment")
    try:
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"base_url has an invalid port ({exc})") from None
    if not host:
        raise ValueError("base_url has no host name")
    if scheme == "http" and host not in LOCAL_HOSTS:
        raise ValueError(
            f"base_url must use https for {host}: plain http is only allowed for localhost, "
            "127.0.0.1 and [::1] (local development)")
    _check_host(host)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?", host):
        raise ValueError(f"base_url host {host!r} is not a valid host name")


def check_token(token: SecretStr | None) -> SecretStr | None:
    if token is None:
        return None
    value = token.get_secret_value()
    if not value:
        raise ValueError("token must not be empty")
    if len(value) > MAX_TOKEN:
        raise ValueError(f"token is longer than {MAX_TOKEN} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("token must not contain line breaks or control characters")
    if not value.isascii():
        raise ValueError("token must contain only ASCII characters (it is sent in an HTTP header)")
    return token


def check_header_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name:
        return None
    if not HEADER_NAME_RE.fullmatch(name):
        raise ValueError(f"auth_header {name!r} is not a valid HTTP header name "
                         "(letters, digits and - only, e.g. X-Api-Key)")
    if name.lower() in TRANSPORT_HEADERS:
        raise ValueError(f"auth_header {name!r} is set by the transport itself; "
                         "choose another header such as X-Api-Key")
    return name


def check_auth_combination(auth_kind: str, *, has_token: bool, token_sent: bool,
                           auth_header: str | None) -> None:
    """token required iff auth_kind != none (refused for none); auth_header iff header_token."""
    kind = str(auth_kind)
    if kind == "none":
        if token_sent:
            raise ValueError("token must not be given when auth_kind is 'none' "
                             "(choose bearer or header_token to send a credential)")
        if auth_header:
            raise ValueError("auth_header is only used with auth_kind 'header_token'")
        return
    if not has_token:
        raise ValueError(f"token is required when auth_kind is {kind!r}")
    if kind == "header_token" and not auth_header:
        raise ValueError("auth_header is required when auth_kind is 'header_token' (e.g. X-Api-Key)")
    if kind == "bearer" and auth_header:
        raise ValueError("auth_header is only used with auth_kind 'header_token'; "
                         "bearer always sends Authorization: Bearer <token>")


def check_namespace(ns: str | None) -> str | None:
    if ns is None:
        return None
    if not NAMESPACE_RE.fullmatch(ns):
        raise ValueError(f"app_namespace {ns!r} must be 1-64 characters of letters, digits, _ and -")
    return ns


def _check_names(field: str, names: Iterable[str], *, pattern: re.Pattern[str] | None = None) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{field} must not contain empty names")
        name = name.strip()
        if len(name) > 128 or any(c.isspace() or ord(c) < 32 for c in name):
            raise ValueError(f"{field} entry {name[:40]!r} must be at most 128 characters with no spaces")
        if pattern is not None and not pattern.fullmatch(name):
            raise ValueError(f"{field} entry {name!r} may only use letters, digits, _, -, . and * globs")
        if name in seen:
            raise ValueError(f"{field} lists {name!r} twice")
        seen.add(name)
        out.append(name)
    return out


def check_allowed_tools(names: list[str] | None) -> list[str] | None:
    """Per-source allowlist: null means every tool; a list must be non-empty and unique."""
    if names is None:
        return None
    if not names:
        raise ValueError("allowed_tools must name at least one tool; "
                         "leave it out (or null) to allow every tool")
    return _check_names("allowed_tools", names)


def check_allowlist(names: list[str]) -> list[str]:
    """Agent allowlist: [] means all; entries are exact names or globs like acme_*."""
    return _check_names("tool_allowlist", names, pattern=re.compile(r"^[A-Za-z0-9_.*?\-\[\]]+$"))


def check_tool_sources(kinds: list[str]) -> list[str]:
    out = _check_names("tool_sources", kinds)
    unknown = [k for k in out if k not in KNOWN_TOOL_SOURCES]
    if unknown:
        raise ValueError(f"tool_sources has unknown kind {unknown[0]!r}; known: "
                         + ", ".join(sorted(KNOWN_TOOL_SOURCES)))
    return out


def check_slug(slug: str) -> str:
    if not SLUG_RE.fullmatch(slug):
        raise ValueError(f"slug {slug!r} may only use lowercase letters, digits and - (e.g. support-bot)")
    return slug


def from_pydantic(exc: ValidationError) -> ValidationFailed:
    """One clear sentence naming the field, from pydantic's error list."""
    errors = exc.errors(include_url=False)
    sentences = []
    first_field: str | None = None
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        first_field = first_field or (loc.split(".")[0] if loc else None)
        msg = _message(err)
        if not loc or loc.split(".")[0] in msg:
            sentences.append(msg)
        elif err.get("type") in ("missing", "extra_forbidden"):
            sentences.append(f"{loc} {msg}")
        else:
            sentences.append(f"{loc}: {msg}")
    return ValidationFailed("; ".join(sentences), field=first_field)


def _message(err: dict[str, Any]) -> str:
    typ = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    if typ == "value_error":
        return msg.removeprefix("Value error, ")
    if typ == "missing":
        return "is required"
    if typ == "extra_forbidden":
        return "is not a known field"
    if typ == "enum" or typ == "literal_error":
        return msg.replace("Input should be", "must be")
    return msg.replace("Input should be", "must be")
