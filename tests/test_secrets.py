"""Pasted credentials are found and replaced by references; ordinary text is left alone."""

from __future__ import annotations

import pytest

from concierge.agent.secrets import (
    MASK,
    REF_RE,
    InMemorySecretStore,
    SecretStore,
    find_secrets,
    named_credential,
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


# -- a value after a cue word, whatever its length -----------------------------------------------

CUED_SECRETS = [
    ("with bearer token demo-token-123", "demo-token-123"),
    ("my key is abc", "abc"),
    ("password: hunter2", "hunter2"),
    ("password hunter2", "hunter2"),
    ("add http://127.0.0.1:8765/mcp called Gamma with bearer token is test-token-123", "test-token-123"),
    ("the token for Demo is abc", "abc"),
    ("set the token for Demo to abc123", "abc123"),
    ("the bearer token for the Acme server is acme-1", "acme-1"),
    ("Authorization: Bearer abc", "abc"),
    ("token: 'correct horse battery'", "correct horse battery"),
    ("my password is hunter", "hunter"),
    ("the api key = 42", "42"),
    ("secret: xyz", "xyz"),
    ("use token 123456", "123456"),
    ("X-Api-Key: k1", "k1"),
    ("bearer abc123", "abc123"),
    ("rotate the token for Demo, the new token is n3w-t0ken", "n3w-t0ken"),
    ("the client secret is Zq", "Zq"),
    ("passphrase: correct-horse", "correct-horse"),
    ("api_key=abc", "abc"),
    ("Add https://x.example/mcp with header X-Api-Key and key k-9", "k-9"),
    ("TOKEN IS ABC", "ABC"),
    ("my token's abc123", "abc123"),
    ("The token is: tok_9", "tok_9"),
    # a later clause that names the credential (found in the REPL: this one reached the history file)
    ("we rotated the token, the new one is demo-token-456", "demo-token-456"),
    ("the token for Demo changed; it's now n3w-t0ken", "n3w-t0ken"),
    ("the key expired. The new one: k3y-2026", "k3y-2026"),
    ("we reset the password and changed it to hunter22", "hunter22"),
    ("the old token leaked, use tok-789 instead", "tok-789"),
    ("put the right token back: demo-token-123", "demo-token-123"),
    ("the key again = abc", "abc"),
    ("send k-12345 in the X-Api-Key header", "k-12345"),
    ("my PAT is ghp_short1", "ghp_short1"),
    ("creds: admin/hunter22", "admin/hunter22"),
    ("pw hunter22", "hunter22"),
    ("add https://x.example/mcp using basic auth user:pass", "user:pass"),
    ("it uses basic authentication with bob:s3cret", "bob:s3cret"),
    # a source's name of several words after "for" (found in the widget: these reached the server)
    ("the token for demo tools is abc123", "abc123"),
    ("put the right token back for demo tools: canary-widget-375", "canary-widget-375"),
    ("set the token for my demo tools server to xyz789", "xyz789"),
]

# Ordinary requests that mention credentials without giving one: redacting any of these would
# break the request (the planner would see a reference where a name or a word was).
CUED_PLAIN = [
    "rotate the token for Demo",
    "rotate the token for Demo tools",
    "rotate the token of AcmeProd",
    "rotate token acme-prod",
    "update the key for acme",
    "which key does it use",
    "what's my key?",
    "switch to a header token",
    "switch to bearer token auth",
    "bearer token auth",
    "register it with token auth",
    "token-based auth",
    "the token for Demo",
    "the token is expired, rotate it",
    "the token is wrong, rotate it for Demo",
    "the token was rotated yesterday",
    "the token expires in 30 days",
    "the token: none",
    "token is the same as before",
    "my password is the one I gave you",
    "the key for Demo is in the vault",
    "the key is X-Api-Key",
    "use header token X-Api-Key",
    "api key header X-Api-Key",
    "set the key header to X-Api-Key",
    "it needs a token in the X-Api-Key header",
    "the token goes in the Authorization header",
    "change the token to header",
    "with a bearer token, call it Demo",
    "what is the token for?",
    "where is the key stored?",
    "is my token valid?",
    "tokens are stored encrypted",
    "The signing secret issued once at registration",
    "a token is never taken as a plain argument",
    "the key is shown once",
    "the secret sauce",
    "key points: it works",
    "keyboard and monkey business",
    "bearer",
    "the token changed, the new one is in the vault",
    "rotate the token for Demo, it's expired",
    "the key for acme2 changed, use the new one",
    "the token is fine; it's server2 that fails",
    "give the token back to demo2",
    "put the token back in the vault",
    "pat the dog",
    "which credentials does it use?",
    "the creds are in the vault",
    "send the token in the X-Api-Key header",
    "send ticket42 as a header",
    "rotate the token for demo tools",
    "the token for demo tools is expired",
    "the token for demo tools is in the vault",
    "the key for acme is to be rotated",
]


@pytest.mark.parametrize(("text", "secret"), CUED_SECRETS)
def test_a_value_after_a_cue_word_is_a_credential_whatever_its_length(text: str, secret: str) -> None:
    store = InMemorySecretStore()
    result = redact(text, store)
    assert [text[a:b] for a, b in find_secrets(text)] == [secret]
    assert secret not in result.text.replace("[secret:", "")
    assert [store.get(ref) for ref in result.refs] == [secret]


@pytest.mark.parametrize("text", CUED_PLAIN)
def test_talking_about_credentials_is_not_a_credential(text: str) -> None:
    assert find_secrets(text) == [], text
    assert redact(text).text == text


def test_scrub_replaces_a_short_value_only_as_a_whole_word() -> None:
    pairs = [("sec_00000002", "demo")]
    assert scrub("the demo server, namespace demo_tools", pairs) == \
        "the [secret:sec_00000002] server, namespace demo_tools"
    assert scrub('{"token": "hunter2"}', [("sec_00000003", "hunter2")]) == '{"token": "[secret:sec_00000003]"}'


@pytest.mark.parametrize("text", ["demo-token-123", "secret42", "password1", "  my_api_key_7 ", '"MyToken2026"'])
def test_a_lone_word_that_names_itself_a_credential_is_one(text: str) -> None:
    assert named_credential(text)


@pytest.mark.parametrize("text", ["secret-store", "token", "jira-prod-2", "show secret-store-2", "tok3n",
                                  "https://x.example/token123", "[secret:sec_0123abcd]", "sec_0123abcd99",
                                  "rotate the token for demo-token-123"])
def test_other_words_and_sentences_are_not_named_credentials(text: str) -> None:
    """A sentence is left to the cue words ("the token is …"): a source may be called
    "secret-store-2", and "show secret-store-2" must still find it."""
    assert not named_credential(text)


def test_a_credential_in_a_url_query_ends_at_the_next_parameter() -> None:
    """Found driving the planner: "…/mcp?api_key=sk_live_…&region=eu" took "&region=eu" into
    the credential (a wrong token, and the URL lost its region)."""
    store = InMemorySecretStore()
    result = redact("add https://mcp.example.com/mcp?api_key=sk_live_abcdef1234567890&region=eu, bearer", store)
    (ref,) = result.refs
    assert store.get(ref) == "sk_live_abcdef1234567890"
    assert result.text == f"add https://mcp.example.com/mcp?api_key={ref_text(ref)}&region=eu, bearer"
    fragment = redact("https://x.example/mcp?key=abcdef123456#top", store)
    assert store.get(fragment.refs[0]) == "abcdef123456" and fragment.text.endswith("]#top")
