"""Every validation rule, with the message a person sees."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concierge.errors import ValidationFailed
from concierge.registry import AgentUpdate, Registry, UpdateSource
from concierge.registry import validation as rules

BASE: dict[str, Any] = {"name": "Acme", "base_url": "https://mcp.acme.example/mcp", "auth_kind": "none"}


def register_error(registry: Registry, **patch: Any) -> ValidationFailed:
    body = {**BASE, **patch}
    body = {k: v for k, v in body.items() if v is not ...}
    with pytest.raises(ValidationFailed) as info:
        registry.parse_register(body)
    return info.value


@pytest.fixture
def registry(tmp_path):
    reg = Registry.open(tmp_path)
    yield reg
    reg.close()


@pytest.mark.parametrize(("patch", "message"), [
    ({"base_url": "http://mcp.acme.example/mcp"},
     "base_url must use https for mcp.acme.example: plain http is only allowed for localhost, "
     "127.0.0.1 and [::1]"),
    ({"base_url": "ftp://mcp.acme.example"}, "base_url must be a full https:// URL"),
    ({"base_url": "mcp.acme.example"}, "base_url must be a full https:// URL"),
    ({"base_url": "https://user:pw@mcp.acme.example"}, "base_url must not contain a user name or password"),
    ({"base_url": "https://mcp.acme.example/mcp#frag"}, "base_url must not contain a #fragment"),
    ({"base_url": "https://mcp acme.example"}, "base_url must not contain spaces"),
    ({"base_url": "https://mcp.acme.example:99999"}, "base_url has an invalid port"),
    ({"base_url": "https://bad_host!.example"}, "is not a valid host name"),
    ({"base_url": ""}, "base_url is required"),
    ({"base_url": ...}, "base_url is required"),
    ({"auth_kind": "basic"}, "auth_kind: must be 'none', 'bearer', 'header_token' or 'oauth'"),
    ({"auth_kind": "bearer"}, "token is required when auth_kind is 'bearer'"),
    ({"auth_kind": "header_token", "token": "t0ken-value"},
     "auth_header is required when auth_kind is 'header_token'"),
    ({"auth_kind": "none", "token": "t0ken-value"}, "token must not be given when auth_kind is 'none'"),
    ({"auth_kind": "none", "auth_header": "X-Api-Key"}, "auth_header is only used with auth_kind 'header_token'"),
    ({"auth_kind": "bearer", "token": "abc", "auth_header": "X-Api-Key"},
     "auth_header is only used with auth_kind 'header_token'"),
    ({"auth_kind": "header_token", "token": "abc", "auth_header": "X Api Key"},
     "auth_header 'X Api Key' is not a valid HTTP header name"),
    ({"auth_kind": "header_token", "token": "abc", "auth_header": "Host"},
     "auth_header 'Host' is set by the transport itself"),
    ({"auth_kind": "header_token", "token": "abc", "auth_header": "content-length"},
     "auth_header 'content-length' is set by the transport itself"),
    ({"auth_kind": "header_token", "token": "abc", "auth_header": "Mcp-Session-Id"},
     "auth_header 'Mcp-Session-Id' is set by the transport itself"),
    ({"auth_kind": "bearer", "token": ""}, "token must not be empty"),
    ({"auth_kind": "bearer", "token": "abc\r\nX-Evil: 1"}, "token must not contain line breaks"),
    ({"app_namespace": "has space"}, "app_namespace 'has space' must be 1-64 characters"),
    ({"app_namespace": "x" * 65}, "must be 1-64 characters"),
    ({"app_namespace": "ünïcode"}, "must be 1-64 characters"),
    ({"rate_cap_per_minute": 0}, "rate_cap_per_minute: must be greater than or equal to 1"),
    ({"rate_cap_per_minute": 601}, "rate_cap_per_minute: must be less than or equal to 600"),
    ({"webhook_rate_cap_per_minute": 0}, "webhook_rate_cap_per_minute: must be greater than or equal to 1"),
    ({"webhook_rate_cap_per_minute": 6001}, "webhook_rate_cap_per_minute: must be less than or equal to 6000"),
    ({"allowed_tools": []}, "allowed_tools must name at least one tool"),
    ({"allowed_tools": ["search", "search"]}, "allowed_tools lists 'search' twice"),
    ({"allowed_tools": ["search", ""]}, "allowed_tools must not contain empty names"),
    ({"ingest_tool_calls": [{"arguments": {}}]}, "ingest_tool_calls.0.name is required"),
    ({"ingest_tool_calls": [{"name": "x", "arguments": [1]}]}, "ingest_tool_calls.0.arguments"),
    ({"ingest_tool_calls": [{"name": "x", "extra": 1}]}, "ingest_tool_calls.0.extra is not a known field"),
    ({"connect_timeout": 0}, "connect_timeout: must be greater than 0"),
    ({"call_timeout": 601}, "call_timeout: must be less than or equal to 600"),
    ({"name": ""}, "name: must have at least 1 character"),
    ({"name": ...}, "name is required"),
    ({"surprise": 1}, "surprise is not a known field"),
])
def test_register_rule_message(registry: Registry, patch: dict[str, Any], message: str) -> None:
    err = register_error(registry, **patch)
    assert message in err.detail
    assert err.to_dict()["error"] == "validation_error"


@pytest.mark.parametrize("url", ["http://localhost:8000/mcp", "http://127.0.0.1:9/mcp", "http://[::1]:8/mcp",
                                 "https://mcp.acme.example/mcp"])
def test_allowed_urls(registry: Registry, url: str) -> None:
    assert registry.parse_register({**BASE, "base_url": url}).base_url == url


def test_trailing_slash_stripped_and_host_lowercased(registry: Registry) -> None:
    req = registry.parse_register({**BASE, "base_url": "https://MCP.Acme.Example/mcp/"})
    assert req.base_url == "https://mcp.acme.example/mcp"


def test_defaults_match_reference(registry: Registry) -> None:
    req = registry.parse_register(BASE)
    assert (req.rate_cap_per_minute, req.webhook_rate_cap_per_minute) == (60, 600)
    assert (req.connect_timeout, req.call_timeout) == (10.0, 60.0)
    assert req.allowed_tools is None and req.ingest_tool_calls is None and req.app_namespace is None


def test_error_names_the_field(registry: Registry) -> None:
    err = register_error(registry, rate_cap_per_minute=9999)
    assert err.field == "rate_cap_per_minute"


@pytest.mark.parametrize(("body", "message"), [
    ({"base_url": "http://example.com"}, "base_url must use https for example.com"),
    ({"rate_cap_per_minute": 0}, "rate_cap_per_minute: must be greater than or equal to 1"),
    ({"auth_header": "Host"}, "auth_header 'Host' is set by the transport itself"),
    ({"allowed_tools": []}, "allowed_tools must name at least one tool"),
    ({"token": "bad\ntoken"}, "token must not contain line breaks"),
    ({"bogus": 1}, "bogus is not a known field"),
])
def test_update_rule_message(registry: Registry, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        registry.parse_update(body)
    assert message in info.value.detail


def test_update_null_keeps_scalar_but_clears_allowlist(registry: Registry) -> None:
    req = registry.parse_update({"name": None, "rate_cap_per_minute": None, "allowed_tools": None})
    assert req.sent() == {"allowed_tools": None}


@pytest.mark.parametrize(("body", "message"), [
    ({"slug": "Support Bot"}, "slug 'Support Bot' may only use lowercase letters, digits and -"),
    ({"slug": "support", "tool_sources": ["pipedream"]}, "tool_sources has unknown kind 'pipedream'"),
    ({"slug": "support", "tool_allowlist": ["a b"]}, "tool_allowlist entry 'a b' must be at most 128"),
    ({"slug": "support", "tool_allowlist": ["a", "a"]}, "tool_allowlist lists 'a' twice"),
])
def test_agent_rules(registry: Registry, body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        registry.create_agent(body)
    assert message in info.value.detail


def test_agent_defaults(registry: Registry) -> None:
    agent = registry.create_agent({"slug": "support"})
    assert agent.tool_sources == ["user_mcp"] and agent.tool_allowlist == [] and agent.name == "support"


def test_sandbox_name_rule(registry: Registry) -> None:
    with pytest.raises(ValidationFailed, match="sandbox name 'my sandbox' must be 1-64 characters"):
        registry.create_sandbox("my sandbox")


# -- what the OpenAPI document states is what the rules enforce ---------------------------------

_FAST = settings(max_examples=300, derandomize=True, deadline=None,
                 suppress_health_check=list(HealthCheck))


def _accepted(fn: Any, value: Any) -> bool:
    try:
        fn(value)
    except ValueError:
        return False
    return True


def _url_like() -> st.SearchStrategy[str]:
    """Strings near URLs: the regex's own, mutated, and free text with URL pieces."""
    parts = st.sampled_from(["https://", "http://", "HTTP://", "ftp://", "localhost", "127.0.0.1",
                             "[::1]", "[fe80::1]", "[zz]", "a.b", "-a", "a..b", ":", ":65535", ":65536",
                             "/", "?", "#", " ", "\x1c", "\x85", "@", "%", "é", "_"])
    return st.one_of(st.from_regex(rules.BASE_URL_RE, fullmatch=True),
                     st.lists(parts, max_size=8).map("".join), st.text(max_size=30))


@_FAST
@given(_url_like())
def test_the_documented_base_url_pattern_is_the_rule(url: str) -> None:
    documented = re.search(rules.FIELD_SCHEMAS["base_url"]["pattern"], url) is not None
    assert documented == _accepted(rules.normalize_base_url, url), url


@_FAST
@given(st.one_of(st.from_regex(rules.FIELD_SCHEMAS["token"]["pattern"]), st.text(max_size=12)))
def test_the_documented_token_pattern_is_the_rule(token: str) -> None:
    documented = re.search(rules.FIELD_SCHEMAS["token"]["pattern"], token) is not None
    try:
        UpdateSource.model_validate({"token": token})
        accepted = True
    except Exception:  # noqa: BLE001  (a pydantic ValidationError)
        accepted = False
    assert documented == accepted, repr(token)


@_FAST
@given(st.one_of(st.from_regex(rules.FIELD_SCHEMAS["app_namespace"]["pattern"]), st.text(max_size=70)))
def test_the_documented_namespace_pattern_is_the_rule(ns: str) -> None:
    documented = re.search(rules.FIELD_SCHEMAS["app_namespace"]["pattern"], ns) is not None
    try:
        UpdateSource.model_validate({"app_namespace": ns})
        accepted = True
    except Exception:  # noqa: BLE001
        accepted = False
    assert documented == accepted, repr(ns)


@pytest.mark.parametrize("body", [
    {"tool_sources": None, "model_settings": None, "status": None},
    {"name": None},
    {"tool_allowlist": "x"},
])
def test_partial_update_errors_never_show_the_internal_sentinel(body: dict[str, Any]) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011
        AgentUpdate.model_validate(body)
    detail = rules.from_pydantic(info.value).detail
    assert "UNSET" not in detail and "Unset" not in detail, detail
    assert "constrained-str" not in detail and "[" not in detail.split(":")[0], detail
    assert detail.split(":")[0] in body


def test_string_lengths_read_as_characters():
    with pytest.raises(Exception) as info:  # noqa: PT011
        UpdateSource.model_validate({"name": "x" * 201})
    assert rules.from_pydantic(info.value).detail == "name: must have at most 200 characters"
