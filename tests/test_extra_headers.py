"""Extra non-secret headers per endpoint (Flashduty's ``headers``): checked like ``auth_header``,
sent with every request (streamable HTTP and SSE), shown in reprs, and never above a secret."""

from __future__ import annotations

from typing import Any

import pytest

from concierge.mcp_client import Endpoint, McpSession, probe
from concierge.registry.validation import MAX_EXTRA_HEADERS, check_extra_headers
from tests.mcp_servers import ASGIApp, Receive, Scope, Send, demo_app, demo_sse_app, serve_in_thread

pytestmark = pytest.mark.anyio

CANARY = "canary-HEADER-TOKEN-91ab"


class Recording:
    """Records the headers of every HTTP request (then serves ``app``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@pytest.mark.parametrize(("app", "path"), [(demo_app, "/mcp"), (demo_sse_app, "/sse")])
async def test_extra_headers_go_with_every_request(app: Any, path: str) -> None:
    recording = Recording(app())
    with serve_in_thread(recording) as srv:
        endpoint = Endpoint(srv.url(path), extra_headers={"X-Tenant": "acme", "X-Region": "eu-1"})
        result = await probe(endpoint)
        assert result.ok, result.error
        async with McpSession(endpoint) as session:
            await session.call_tool("echo", {"text": "hi"})
    assert len(recording.seen) >= 3
    assert all(h.get("x-tenant") == "acme" and h.get("x-region") == "eu-1" for h in recording.seen)


async def test_a_secret_header_wins_over_an_extra_one_of_the_same_name() -> None:
    recording = Recording(demo_app(token=None, header=None))
    with serve_in_thread(recording) as srv:
        endpoint = Endpoint(srv.url(), headers={"X-Api-Key": CANARY}, extra_headers={"x-api-key": "plain"})
        assert (await probe(endpoint)).ok
    assert {h["x-api-key"] for h in recording.seen} == {CANARY}
    assert CANARY not in repr(endpoint) and "extra_headers={'x-api-key': 'plain'}" in repr(endpoint)


def test_extra_headers_are_checked_like_auth_header() -> None:
    assert check_extra_headers(None) is None
    assert check_extra_headers({" X-Tenant ": " acme "}) == {"X-Tenant": "acme"}
    refused = {
        "Bad Name": "headers: 'Bad Name' is not a valid HTTP header name",
        "Mcp-Session-Id": "headers: 'Mcp-Session-Id' is set by the transport itself",
        "Content-Type": "headers: 'Content-Type' is set by the transport itself",
        "Authorization": "headers: 'Authorization' carries the credential",
        "x-api-key": "headers: 'x-api-key' carries the credential",
    }
    for name, message in refused.items():
        with pytest.raises(ValueError) as err:
            check_extra_headers({name: "v"}, auth_header="X-Api-Key")
        assert str(err.value).startswith(message), err.value
    with pytest.raises(ValueError, match="given twice"):
        check_extra_headers({"X-A": "1", "x-a": "2"})
    with pytest.raises(ValueError, match="printable ASCII on one line"):
        check_extra_headers({"X-A": "line\r\nInjected: yes"})
    with pytest.raises(ValueError, match="at most 20 headers"):
        check_extra_headers({f"X-{i}": "v" for i in range(MAX_EXTRA_HEADERS + 1)})
    with pytest.raises(ValueError, match=r"^--header-value: "):
        check_extra_headers({"Host": "x"}, field="--header-value")
