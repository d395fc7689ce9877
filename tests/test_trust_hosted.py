"""Hosted mode against a real public address, inside a network namespace this module creates
(`tests.trust_netns`): the port-scanner wording, TLS and Host kept right while the socket goes
to the pinned address, no rebinding, Concierge's own address behind a wildcard bind, the real
``concierge serve --host`` choosing hosted mode, and ``concierge gateway --host`` requiring a key
(or ``--insecure-no-auth``). Nothing dials a non-loopback address outside the namespace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from concierge.cli.server_cmds import url_policy_mode
from tests.trust_netns import PUBLIC, netns, run_scenario


@pytest.fixture(scope="module")
def ns() -> Iterator[str]:
    with netns() as name:
        yield name


def test_serve_on_a_non_loopback_address_defaults_to_hosted() -> None:
    assert url_policy_mode("127.0.0.1", None) == "local" and url_policy_mode("::1", None) == "local"
    assert url_policy_mode("0.0.0.0", None) == "hosted" and url_policy_mode(PUBLIC, None) == "hosted"
    assert url_policy_mode("127.0.0.1", "hosted") == "hosted"


def test_hosted_health_checks_cannot_tell_a_closed_port_from_an_open_one(ns: str) -> None:
    out = run_scenario(ns, "wording")
    alike = ["closed", "html", "server_error", "hang", "plain_for_tls"]
    sentences = {label: (out[label]["kind"], out[label]["error"], out[label]["status"]) for label in alike}
    assert len(set(sentences.values())) == 1, sentences
    kind, error, status = sentences["closed"]
    assert kind == "unreachable" and status is None and "no MCP server answered" in error
    assert out["mcp"]["ok"] is True  # a real MCP server at a public address is reached
    assert out["auth"]["kind"] == "unauthorized"  # the person needs this one, and gets it


def test_the_checked_address_is_dialled_with_tls_and_host_for_the_name(ns: str) -> None:
    out: dict[str, Any] = run_scenario(ns, "tls_and_pinning")
    assert out["probe"] == {"ok": True, "error": None, "tools": ["echo"]}
    assert out["public_hosts"] == [f"mcp.example.test:{out['port']}"]  # Host is the URL's name
    assert out["by_address"]["ok"] is False  # the certificate is for the name: SNI used the name
    # Six concurrent calls on one session: one lookup, all answered by the public server; the
    # resolver's second answer (127.0.0.1, where another server waits) is never used.
    assert out["calls"] == ["public"] * 6 and out["lookups_per_session"] == 1
    assert out["loopback_requests"] == 0


def test_a_wildcard_bound_concierge_is_recognised_after_connecting(ns: str) -> None:
    out = run_scenario(ns, "wildcard_self")
    assert out["kind"] == "blocked" and "itself" in out["error"], out
    assert out["requests"] == 0 and out["other_ok"] is True


def test_serve_on_a_public_address_refuses_internal_and_self_urls(ns: str) -> None:
    out = run_scenario(ns, "serve_hosted")
    assert "URL policy hosted" in out.pop("banner")
    for url, answer in out.items():
        assert answer["status"] == 400 and answer["field"] == "base_url", (url, answer)
    assert "itself" in out[next(u for u in out if PUBLIC in u)]["detail"]


def test_gateway_on_a_public_address_needs_a_key_or_insecure_no_auth(ns: str) -> None:
    out = run_scenario(ns, "gateway")
    assert out["no_keys"]["code"] == 1 and "--insecure-no-auth" in out["no_keys"]["stderr"]
    assert out["insecure_anonymous"] == 200
    assert out["anonymous"] == 401 and out["bogus"] == 401
    assert out["editor"] == 200 and out["viewer"] == 403 and out["other_sandbox"] == 403
    assert "API key required" in out["banner"]


def test_a_gateway_over_a_remote_registry_cannot_check_keys_on_a_public_bind() -> None:
    import argparse

    from concierge.cli.catalog_cmds import _gateway_authorize
    from concierge.errors import ValidationFailed
    from concierge.remote import RemoteBackend

    remote = RemoteBackend("http://127.0.0.1:9", api_key="ck_test-token-123")
    args = argparse.Namespace(host=PUBLIC, insecure_no_auth=False, sandbox=None)
    with pytest.raises(ValidationFailed) as caught:
        _gateway_authorize(args, remote)
    assert caught.value.field == "host" and "--insecure-no-auth" in caught.value.detail
    assert _gateway_authorize(argparse.Namespace(host=PUBLIC, insecure_no_auth=True, sandbox=None), remote) is None
    assert _gateway_authorize(argparse.Namespace(host="127.0.0.1", insecure_no_auth=False, sandbox=None),
                              remote) is None
