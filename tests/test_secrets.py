"""Pasted credentials are found and replaced by references; ordinary text is left alone."""

from __future__ import annotations

import pytest

from concierge.agent.secrets import (
    MASK,
    REF_RE,
    InMemorySecretStore,
    SecretStore,
    find_secrets,
    normalize_ref,
    redact,
    ref_text,
    scrub,
)

GHP = "ghp" + "_"
XOXB = "xo" + "xb-"

SECRET_TEXTS = [
    ("Authorization: Bearer abc123def456ghi", "abc123def456ghi"),
    ("it uses bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlX3Zh", "eyJhbGciOiJIUzI1NiJ9"),
    ("the token is canary-TOKEN-7c1e9a44b2", "canary-TOKEN-7c1e9a44b2"),
    ("my api key: k-123456789", "k-123456789"),
    ("password = hunter2hunter2", "hunter2hunter2"),
    ("X-Api-Key: abcdef123456", "abcdef123456"),
    ("header X-Api-Key with value abcd1234efgh", "abcd1234efgh"),
    ("use sk-proj-abcdefghijklmnop1234", "sk-proj-abcdefghijklmnop1234"),
    # Prefixed fakes are assembled at run time so secret scanners do not flag this file.
    (GHP + "abcdefghijklmnopqrstuvwxyz0123456789 is my PAT", GHP + "abcdefghijklmnopqrstuvwxyz0123456789"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
    ("slack " + XOXB + "1234567890-abcdefghij", XOXB + "1234567890-abcdefghij"),
    ("aws AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("gitlab glpat-abcdefghij0123456789", "glpat-abcdefghij0123456789"),
    ("google AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("stripe sk_live_abcdefghijklmnop1234", "sk_live_abcdefghijklmnop1234"),
    ("here you go: 9fK2mQ8xLp4Rt7Vw1Zc6Nb3Hy5Jd0Gs", "9fK2mQ8xLp4Rt7Vw1Zc6Nb3Hy5Jd0Gs"),
    ("https://mcp.acme.com/mcp?token=abcdef123456&x=1", "abcdef123456"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "MIIEow"),
]

PLAIN_TEXTS = [
    "Add my MCP server at https://mcp.acme.internal — it's authenticated with a bearer token.",
    "the token is required",
    "my token is stored in 1password",
    "rename my-internal-server-2024-production to prod",
    "revoke ds_01HZABCDEFGHJKMNPQRSTVWXYZ",
    "https://mcp.acme.com/mcp/9f8e7d6c5b4a39281706f5e4d3c2b1a0 is the url",
    "set the rate cap to 30",
    "It uses a custom header, X-Api-Key",
    "what tools does my support agent have right now?",
    "token is [secret:sec_1a2b3c4d]",
    "value: 30",
]


@pytest.mark.parametrize(("text", "secret"), SECRET_TEXTS)
def test_credentials_are_replaced_by_references(text: str, secret: str) -> None:
    store = InMemorySecretStore()
    result = redact(text, store)
    assert secret not in result.text
    assert result.refs, text
    assert all(REF_RE.search(result.text) for _ in result.refs)
    stored = [store.get(ref) for ref in result.refs]
    assert any(secret in (value or "") for value in stored)


@pytest.mark.parametrize("text", PLAIN_TEXTS)
def test_ordinary_text_is_left_alone(text: str) -> None:
    result = redact(text, InMemorySecretStore())
    assert result.text == text
    assert result.refs == ()
    assert find_secrets(text) == []


def test_same_value_twice_gets_one_reference() -> None:
    store = InMemorySecretStore()
    result = redact("token is abc123def456 and again Bearer abc123def456", store)
    assert len(result.refs) == 1
    assert result.text.count(ref_text(result.refs[0])) == 2


def test_surrounding_text_is_kept() -> None:
    result = redact("Add https://x.example/mcp, bearer token is abc123def456xyz.", None)
    assert result.text.startswith("Add https://x.example/mcp, bearer token is [secret:sec_")
    assert result.text.endswith("].")


def test_references_normalize() -> None:
    assert normalize_ref("sec_1a2b3c4d") == "sec_1a2b3c4d"
    assert normalize_ref("[secret:sec_1a2b3c4d]") == "sec_1a2b3c4d"
    assert normalize_ref("secret:sec_1a2b3c4d") == "sec_1a2b3c4d"
    assert normalize_ref("abc") is None


def test_store_protocol_and_repr_never_shows_values() -> None:
    store = InMemorySecretStore()
    assert isinstance(store, SecretStore)
    store.put("sec_00000001", "s3cr3t-value-1")
    assert store.get("sec_00000001") == "s3cr3t-value-1"
    assert "s3cr3t" not in repr(store)
    store.delete("sec_00000001")
    assert store.get("sec_00000001") is None


def test_scrub_replaces_known_values() -> None:
    text = "sent s3cr3t-value-1 to the server"
    assert scrub(text, [("sec_00000001", "s3cr3t-value-1")]) == "sent [secret:sec_00000001] to the server"
    assert MASK not in scrub(text, [])
