"""Validation rules for registry input. Each rule raises ``ValueError`` with a sentence that
names the field; `from_pydantic` turns a pydantic error into a `ValidationFailed`.

Kept free of pydantic so the same rules serve request bodies, merged partial updates and
the conversational tools.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationError
from pydantic_core import ErrorDetails

from concierge.errors import ValidationFailed

__all__ = [
    "AUTH_SCHEMAS",
    "BASE_URL_RE",
    "FIELD_SCHEMAS",
    "LOCAL_HOSTS",
    "NOT_BLANK",
    "SANDBOX_NAME_PATTERN",
    "check_allowed_tools",
    "check_allowlist",
    "check_args",
    "check_auth_combination",
    "check_client_id",
    "check_client_secret",
    "check_command",
    "check_cwd",
    "check_env",
    "check_extra_headers",
    "check_header_name",
    "check_namespace",
    "check_oauth_combination",
    "check_scopes",
    "check_secret_env",
    "check_slug",
    "check_token",
    "check_tool_sources",
    "check_transport_combination",
    "command_line",
    "from_pydantic",
    "normalize_base_url",
    "trimmed_length_pattern",
]

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Variables a program's environment must not take from a source: they change which code runs.
REFUSED_ENV = frozenset({"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONSTARTUP", "PYTHONPATH",
                         "NODE_OPTIONS", "BASH_ENV", "ENV", "DYLD_INSERT_LIBRARIES"})
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
MAX_NAME = 128  # a tool name in allowed_tools / tool_allowlist


# -- the rules as regular expressions, for the OpenAPI document ---------------------------------
#
# Each pattern accepts exactly what the rule below it accepts (a test holds them together),
# written so that both Python's `re` and ECMA-262 (JSON Schema) read it the same way: no
# flags, no escapes beyond \\ and a literal character class.

def _char_class(chars: str, *, negate: bool = False) -> str:
    special = set("\\]^-[")
    body = "".join("\\" + c if c in special else c for c in chars)
    return f"[{'^' if negate else ''}{body}]"


def _ci(word: str) -> str:
    """``word`` in any letter case, without a flag (ECMA-262 patterns have none)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


# What str.strip() removes (Python's whitespace), and what pydantic's str_strip_whitespace
# removes (Unicode White_Space: the same without the four separators U+001C..U+001F).
PY_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(
    map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
TRIMMED = PY_SPACE.replace("\x1c\x1d\x1e\x1f", "")
_CONTROL = "".join(map(chr, range(0x20)))
_W, _T = _char_class(PY_SPACE), _char_class(TRIMMED)
_REFUSED_ENV_CI = [_ci(name) for name in REFUSED_ENV]
_NOT_T = _char_class(TRIMMED, negate=True)
_BLANK_OR_CONTROL = _char_class(_CONTROL + PY_SPACE, negate=True)  # neither space nor control

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = "[0-9A-Fa-f]{1,4}"
_LS32 = f"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = "(?:" + "|".join([
    f"(?:{_H16}:){{6}}{_LS32}",
    f"::(?:{_H16}:){{5}}{_LS32}",
    f"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    f"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
    f"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    f"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
    f"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    f"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
    f"(?:(?:{_H16}:){{0,6}}{_H16})?::",
]) + ")"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[{_IPV6}\])"
_LOCAL = rf"(?:{_ci('localhost')}|127\.0\.0\.1|\[::1\])"
_PORT = "(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})?)?"
_PATH = "(?:[/?]" + _char_class("#" + _CONTROL + PY_SPACE, negate=True) + "*)?"
BASE_URL_RE = re.compile(rf"(?:{_ci('https')}://{_HOST}|{_ci('http')}://{_LOCAL}){_PORT}{_PATH}")
"""A base_url `normalize_base_url` accepts, once stripped of surrounding whitespace."""

NOT_BLANK = _NOT_T
"""A string with a character left once pydantic trims it (``minLength: 1`` after trimming)."""
SANDBOX_NAME_PATTERN = rf"^{_W}*[A-Za-z0-9_-]{{1,64}}{_W}*$"
# Items are documented without surrounding whitespace: it is trimmed, and two names equal
# once trimmed are a duplicate, which "uniqueItems" can only state for names sent bare.
_TOOL_NAME = rf"^{_BLANK_OR_CONTROL}{{1,{MAX_NAME}}}$"
_GLOB = r"[A-Za-z0-9_.*?\-\[\]]"

FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "base_url": {"type": "string", "maxLength": MAX_URL,
                 "pattern": f"^{_W}*{BASE_URL_RE.pattern}{_W}*$"},
    "token": {"type": "string", "maxLength": MAX_TOKEN,
              "pattern": f"^{_T}*[!-~](?:[ -~]*[!-~])?{_T}*$"},
    "auth_header": {"type": "string", "pattern": rf"^{_W}*(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+)?{_W}*$",
                    "not": {"pattern": rf"^{_W}*(?:" + "|".join(_ci(h) for h in sorted(TRANSPORT_HEADERS))
                            + rf"){_W}*$"}},
    "app_namespace": {"type": "string", "pattern": rf"^{_T}*[A-Za-z0-9_-]{{1,64}}{_T}*$"},
    "allowed_tools": {"type": "array", "minItems": 1, "uniqueItems": True,
                      "items": {"type": "string", "pattern": _TOOL_NAME}},
    "tool_allowlist": {"type": "array", "uniqueItems": True,
                       "items": {"type": "string", "pattern": rf"^{_GLOB}{{1,{MAX_NAME}}}$"}},
    "tool_sources": {"type": "array", "uniqueItems": True,
                     "items": {"type": "string", "enum": sorted(KNOWN_TOOL_SOURCES)}},
    # stdio programs and OAuth (see the rules below)
    "command": {"type": "string", "pattern": rf"^{_T}*[!-~]{{1,4096}}{_T}*$"},
    "args": {"type": "array", "maxItems": 100,
             "items": {"type": "string", "maxLength": 4096, "pattern": "^[^\\x00]*$"}},
    "env": {"type": "object", "maxProperties": 50,
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                              "not": {"pattern": "^(?:" + "|".join(sorted(_REFUSED_ENV_CI)) + ")$"}},
            "additionalProperties": {"type": "string", "maxLength": MAX_TOKEN, "pattern": "^[^\\x00]*$"}},
    "secret_env": {"type": "object", "maxProperties": 50,
                   "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                                     "not": {"pattern": "^(?:" + "|".join(sorted(_REFUSED_ENV_CI)) + ")$"}},
                   "additionalProperties": {"type": "string", "maxLength": MAX_TOKEN,
                                            "pattern": f"^{_T}*[!-~](?:[ -~]*[!-~])?{_T}*$"}},
    "cwd": {"type": "string", "pattern": rf"^{_T}*/[ -~]{{0,4095}}{_T}*$"},
    "client_id": {"type": "string", "pattern": rf"^{_T}*[!-~](?:[ -~]{{0,510}}[!-~])?{_T}*$"},
    "client_secret": {"type": "string", "maxLength": MAX_TOKEN,
                      "pattern": f"^{_T}*[!-~](?:[ -~]*[!-~])?{_T}*$"},
    "scopes": {"type": "array", "maxItems": 50, "uniqueItems": True,
               "items": {"type": "string", "pattern": rf"^{_T}*[!#-\[\]-~]{{1,256}}{_T}*$"}},
    "headers": {"type": "object", "maxProperties": 20,
                "propertyNames": {"pattern": rf"^{_W}*[!#$%&'*+.^_`|~0-9A-Za-z-]+{_W}*$",
                                  "not": {"pattern": rf"^{_W}*(?:" + "|".join(
                                      _ci(h) for h in sorted(TRANSPORT_HEADERS | {"authorization"}))
                                      + rf"){_W}*$"}},
                "additionalProperties": {"type": "string", "maxLength": MAX_TOKEN,
                                         "pattern": rf"^{_W}*[ -~]*{_W}*$"}},
    # the pattern states the length (1-64 once trimmed); a length on the raw string would not
    "slug": {"type": "string", "pattern": rf"^{_T}*[a-z0-9-]{{1,64}}{_T}*$",
             "minLength": None, "maxLength": None},
}

_NO_HEADER = {"anyOf": [{"type": "null"}, {"type": "string", "pattern": f"^{_W}*$"}]}
_A_HEADER = {"type": "string", "not": {"pattern": f"^{_W}*$"}}


def _when(kind: str, then: dict[str, Any], *, sent: bool) -> dict[str, Any]:
    test: dict[str, Any] = {"properties": {"auth_kind": {"const": kind}}}
    if sent:
        test["required"] = ["auth_kind"]
    return {"if": test, "then": then}


AUTH_SCHEMAS: dict[str, list[dict[str, Any]]] = {
    # register: `check_auth_combination` on the body alone
    "RegisterSource": [
        _when("none", {"properties": {"token": {"type": "null"}, "auth_header": _NO_HEADER}}, sent=False),
        _when("bearer", {"required": ["token"], "properties": {
            "token": {"type": "string"}, "auth_header": _NO_HEADER}}, sent=False),
        _when("header_token", {"required": ["token", "auth_header"], "properties": {
            "token": {"type": "string"}, "auth_header": _A_HEADER}}, sent=False),
        # oauth: no token (the sign-in gets them); client_id etc. only with oauth
        {"if": {"properties": {"auth_kind": {"const": "oauth"}}},
         "then": {"properties": {"token": {"type": "null"}, "auth_header": _NO_HEADER}},
         "else": {"properties": {k: {"type": "null"} for k in ("client_id", "client_secret", "scopes", "grant")}}},
        {"if": {"required": ["client_secret"], "properties": {"client_secret": {"type": "string"}}},
         "then": {"required": ["client_id"], "properties": {"client_id": {"type": "string"}}}},
        {"if": {"required": ["grant"], "properties": {"grant": {"const": "client_credentials"}}},
         "then": {"required": ["client_id", "client_secret"], "properties": {
             "client_id": {"type": "string"}, "client_secret": {"type": "string"}}}},
        # stdio: a command, no URL, headers or HTTP auth; otherwise a URL and no program
        {"if": {"required": ["transport"], "properties": {"transport": {"const": "stdio"}}},
         "then": {"required": ["command"], "properties": {
             "command": {"type": "string"}, "base_url": {"type": "null"}, "headers": {"type": "null"},
             "auth_kind": {"const": "none"}}},
         "else": {"required": ["base_url"], "properties": {
             "base_url": {"type": "string"},
             **{k: {"type": "null"} for k in ("command", "args", "env", "secret_env", "cwd")}}}},
    ],
    # update: what a body breaks on its own when it sends auth_kind (what depends on the stored
    # source, such as a switch to bearer for a source without a token, is a 409)
    "UpdateSource": [
        _when("none", {"properties": {"token": {"type": "null"}, "auth_header": _NO_HEADER}}, sent=True),
        _when("bearer", {"properties": {"auth_header": _NO_HEADER}}, sent=True),
        _when("header_token", {"properties": {"auth_header": _A_HEADER}}, sent=True),
        _when("oauth", {"properties": {"token": {"type": "null"}}}, sent=True),
        {"if": {"required": ["auth_kind"], "properties": {"auth_kind": {"enum": ["none", "bearer", "header_token"]}}},
         "then": {"properties": {k: {"type": "null"} for k in ("client_id", "client_secret", "scopes", "grant")}}},
    ],
}
"""The auth rules (token iff not none, auth_header iff header_token) as JSON Schema, by model."""


def trimmed_length_pattern(min_length: int, max_length: int | None) -> str:
    """A pattern for a string whose length counts once pydantic has trimmed it."""
    if max_length is None:
        return _NOT_T if min_length >= 1 else ""
    core = _NOT_T if max_length == 1 else rf"{_NOT_T}(?:[\s\S]{{0,{max_length - 2}}}{_NOT_T})?"
    return f"^{_T}*{core}{_T}*$" if min_length >= 1 else f"^{_T}*(?:{core})?{_T}*$"
"""JSON Schema for the fields whose rule is code (above and below), merged into the OpenAPI
document's request bodies so that the document states every rule the server enforces."""


def normalize_base_url(url: str) -> str:
    """https only (http for localhost, 127.0.0.1, [::1]); no userinfo or fragment; no trailing slash."""
    url = url.strip()
    if not url:
        raise ValueError("base_url is required")
    if len(url) > MAX_URL:
        raise ValueError(f"base_url is longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError("base_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. a bracketed host that is not an IPv6 address
        raise ValueError(f"base_url is not a valid URL ({exc})") from None
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
    if not BASE_URL_RE.fullmatch(url):  # what the checks above let through and no URL should have
        raise ValueError(f"base_url must be a URL such as https://mcp.example.com/mcp: a host name or IP "
                         f"address, an optional port (0-65535) and path (got {url[:100]!r})")
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


MAX_EXTRA_HEADERS = 20


def check_extra_headers(headers: Mapping[str, str] | None, *, field: str = "headers",
                        auth_header: str | None = None) -> dict[str, str] | None:
    """Headers that are not secrets, sent with every request (Flashduty's ``headers``;
    ``--header-value NAME=VALUE``): each name by the rules of ``auth_header`` (a valid name
    the transport does not own), and neither ``Authorization`` nor the source's own
    ``auth_header`` (credentials go through the vault); each value printable, on one line."""
    if headers is None:
        return None
    if len(headers) > MAX_EXTRA_HEADERS:
        raise ValueError(f"{field} may have at most {MAX_EXTRA_HEADERS} headers (got {len(headers)})")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for raw_name, raw_value in headers.items():
        name, value = str(raw_name).strip(), str(raw_value).strip()
        if not HEADER_NAME_RE.fullmatch(name):
            raise ValueError(f"{field}: {name!r} is not a valid HTTP header name "
                             "(letters, digits and - only, e.g. X-Tenant)")
        low = name.lower()
        if low in TRANSPORT_HEADERS:
            raise ValueError(f"{field}: {name!r} is set by the transport itself; choose another header")
        if low == "authorization" or (auth_header and low == auth_header.strip().lower()):
            raise ValueError(f"{field}: {name!r} carries the credential; give it as the source's token "
                             "(stored in the vault), not as a plain header")
        if low in seen:
            raise ValueError(f"{field}: {name!r} is given twice")
        if len(value) > MAX_TOKEN:
            raise ValueError(f"{field}: the value of {name!r} is longer than {MAX_TOKEN} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in value) or not value.isascii():
            raise ValueError(f"{field}: the value of {name!r} must be printable ASCII on one line")
        seen.add(low)
        out[name] = value
    return out


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


# -- stdio programs and OAuth ----------------------------------------------------------------

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SCOPE_RE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 scope-token
MAX_ARGS = 100
MAX_ENV = 50
MAX_ARG = 4096


def command_line(command: str, args: Iterable[str]) -> str:
    """The command in plain words, quoted as a shell would need it (``uvx mcp-server-git``)."""
    import shlex

    return shlex.join([command, *args])


def _printable(text: str) -> bool:
    return not any(ord(c) < 32 or ord(c) == 127 for c in text)


def check_command(command: str | None) -> str | None:
    if command is None:
        return None
    command = command.strip()
    if not command:
        raise ValueError("command must not be empty (e.g. uvx, npx or python)")
    if any(c.isspace() for c in command):
        raise ValueError(f"command {command!r} must be the program alone; give its arguments as args "
                         "(--arg), one each")
    if not re.fullmatch(r"[!-~]{1,4096}", command):
        raise ValueError("command must be a program name or path of printable ASCII characters "
                         f"(at most {MAX_ARG})")
    return command


def check_args(args: list[str] | None) -> list[str] | None:
    if args is None:
        return None
    if len(args) > MAX_ARGS:
        raise ValueError(f"args may have at most {MAX_ARGS} entries (got {len(args)})")
    for i, arg in enumerate(args):
        if len(arg) > MAX_ARG or "\x00" in arg:
            raise ValueError(f"args.{i} must have no NUL characters and at most {MAX_ARG} characters")
    return list(args)


def _check_env_name(name: str, field: str) -> str:
    name = str(name)
    if not ENV_NAME_RE.fullmatch(name):
        raise ValueError(f"{field}: {name!r} is not a valid environment variable name "
                         "(letters, digits and _, not starting with a digit)")
    if name.upper() in REFUSED_ENV:
        raise ValueError(f"{field}: {name} is not allowed (it changes which code the program runs)")
    return name


def check_env(env: Mapping[str, str] | None, *, field: str = "env") -> dict[str, str] | None:
    if env is None:
        return None
    if len(env) > MAX_ENV:
        raise ValueError(f"{field} may have at most {MAX_ENV} variables (got {len(env)})")
    out: dict[str, str] = {}
    for raw, value in env.items():
        name = _check_env_name(raw, field)
        if "\x00" in str(value) or len(str(value)) > MAX_TOKEN:
            raise ValueError(f"{field}: the value of {name} must have no NUL characters, at most "
                             f"{MAX_TOKEN} long")
        out[name] = str(value)
    return out


def check_secret_env(env: Mapping[str, SecretStr] | None) -> dict[str, SecretStr] | None:
    if env is None:
        return None
    if len(env) > MAX_ENV:
        raise ValueError(f"secret_env may have at most {MAX_ENV} variables (got {len(env)})")
    out: dict[str, SecretStr] = {}
    for raw, value in env.items():
        name = _check_env_name(raw, "secret_env")
        try:
            check_token(value)
        except ValueError as exc:
            raise ValueError(f"secret_env: the value of {name}: {str(exc).removeprefix('token ')}") from None
        out[name] = value
    return out


def check_cwd(cwd: str | None) -> str | None:
    if cwd is None:
        return None
    cwd = cwd.strip()
    if not re.fullmatch(r"/[ -~]{0,4095}", cwd):
        raise ValueError(f"cwd must be an absolute directory path such as /srv/repo (got {cwd[:100]!r})")
    return cwd


def check_client_id(client_id: str | None) -> str | None:
    if client_id is None:
        return None
    client_id = client_id.strip()
    if not re.fullmatch(r"[!-~](?:[ -~]{0,510}[!-~])?", client_id):
        raise ValueError("client_id must be 1-512 printable ASCII characters")
    return client_id


def check_client_secret(secret: SecretStr | None) -> SecretStr | None:
    if secret is None:
        return None
    try:
        return check_token(secret)
    except ValueError as exc:
        raise ValueError(str(exc).replace("token", "client_secret", 1)) from None


def check_scopes(scopes: list[str] | None) -> list[str] | None:
    if scopes is None:
        return None
    out: list[str] = []
    if not scopes:
        return []
    for scope in scopes:
        part = str(scope).strip()
        if not SCOPE_RE.fullmatch(part) or len(part) > 256:
            raise ValueError(f"scopes: {part[:60]!r} is not a valid OAuth scope "
                             "(printable ASCII without spaces, quotes or backslashes; one scope each)")
        if part in out:
            raise ValueError(f"scopes lists {part!r} twice")
        out.append(part)
    if len(out) > 50:
        raise ValueError("scopes may list at most 50 scopes")
    return out


_STDIO_ONLY = ("command", "args", "env", "secret_env", "cwd")


def check_transport_combination(transport: str, *, base_url: str | None, command: str | None,
                                args: Any, env: Any, secret_env: Any, cwd: str | None, headers: Any,
                                auth_kind: str) -> None:
    """stdio: command, no base_url, headers or HTTP auth; otherwise base_url and no stdio fields."""
    given = {"command": command, "args": args, "env": env, "secret_env": secret_env, "cwd": cwd}
    if transport == "stdio":
        if not command:
            raise ValueError("command is required when transport is 'stdio' (e.g. uvx with args "
                             "['mcp-server-git'])")
        if base_url is not None:
            raise ValueError("base_url is not used when transport is 'stdio' (the program is run instead)")
        if headers is not None:
            raise ValueError("headers are not used when transport is 'stdio' (give the program env instead)")
        both = set(env or {}) & set(secret_env or {})
        if both:
            raise ValueError(f"env {sorted(both)[0]} is given both as a plain and as a secret value")
        if str(auth_kind) != "none":
            raise ValueError("auth_kind must be 'none' when transport is 'stdio'; give the program its "
                             "credentials as secret_env")
        return
    if not base_url:
        raise ValueError("base_url is required (or transport 'stdio' with a command)")
    for name in _STDIO_ONLY:
        if given[name] is not None:
            raise ValueError(f"{name} is only used when transport is 'stdio'")


def check_oauth_combination(auth_kind: str, *, client_id: str | None, client_secret: bool,
                            scopes: list[str] | None, grant: str | None) -> None:
    """client_id/client_secret/scopes/grant only with oauth; client_credentials needs both."""
    if str(auth_kind) != "oauth":
        for name, value in (("client_id", client_id), ("client_secret", client_secret), ("scopes", scopes),
                            ("grant", grant)):
            if value is not None and value is not False:
                raise ValueError(f"{name} is only used with auth_kind 'oauth'")
        return
    if client_secret and not client_id:
        raise ValueError("client_secret needs its client_id")
    if grant == "client_credentials" and not (client_id and client_secret):
        raise ValueError("grant 'client_credentials' needs client_id and client_secret")


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


# Parts of a pydantic error location that name a union member, not a field:
# "constrained-str", "list[constrained-str]", "literal['a','b']", "enum[Unset]", "function-after[...]".
_UNION_TAG = re.compile(r"^(?:[a-z]+(?:-[a-z]+)*(?:\[.*\])?|[a-z]+\[.*\])$")
_FIELD_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_unset_branch(err: ErrorDetails) -> bool:
    """The error of the internal "not sent" member of a partial update's union: it only
    says that the value is not the sentinel, which no caller can send or needs to read."""
    return any(str(p).startswith("enum[Unset]") for p in err.get("loc", ())) or (
        err.get("type") == "enum" and "UNSET" in str(err.get("msg", "")))


def _loc(err: ErrorDetails) -> str:
    parts = []
    for part in err.get("loc", ()):
        if isinstance(part, int):
            parts.append(str(part))
        elif part != "__root__" and (_FIELD_PART.fullmatch(part) or not _UNION_TAG.fullmatch(part)):
            parts.append(part)
    return ".".join(parts)


def from_pydantic(exc: ValidationError) -> ValidationFailed:
    """One clear sentence naming the field, from pydantic's error list (internal details such
    as union members and the partial-update sentinel left out)."""
    errors = [e for e in exc.errors(include_url=False) if not _is_unset_branch(e)] or \
        exc.errors(include_url=False)
    sentences: list[str] = []
    first_field: str | None = None
    for err in errors:
        loc = _loc(err)
        first_field = first_field or (loc.split(".")[0] if loc else None)
        msg = _message(err)
        if not loc or loc.split(".")[0] in msg:
            sentence = msg
        elif err.get("type") in ("missing", "extra_forbidden"):
            sentence = f"{loc} {msg}"
        else:
            sentence = f"{loc}: {msg}"
        if sentence not in sentences:
            sentences.append(sentence)
    return ValidationFailed("; ".join(sentences), field=first_field)


def _message(err: ErrorDetails) -> str:
    typ = err.get("type", "")
    msg = str(err.get("msg", "invalid value"))
    ctx = err.get("ctx") or {}
    if typ == "value_error":
        return msg.removeprefix("Value error, ")
    if typ == "missing":
        return "is required"
    if typ == "extra_forbidden":
        return "is not a known field"
    if typ in ("too_short", "too_long", "string_too_short", "string_too_long"):
        unit = "character" if isinstance(err.get("input"), str) else "item"
        bound = ctx.get("min_length") if typ.endswith("short") else ctx.get("max_length")
        plural = "" if bound == 1 else "s"
        return f"must have at {'least' if typ.endswith('short') else 'most'} {bound} {unit}{plural}"
    return msg.replace("Input should be", "must be")
