"""The URL policy (`concierge.mcp_client.url_policy`): numeric hosts read as ``inet_aton``
reads them, what hosted mode refuses, Concierge itself refused in every mode, and every
connection made to the address that was checked (no second DNS lookup).

Everything here stays on loopback: names are resolved by a resolver the test injects, and
the servers are real MCP servers on 127.0.0.1. Hosted mode with a real public address lives
in a network namespace (`test_trust_hosted.py`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from concierge.errors import ValidationFailed
from concierge.mcp_client import Endpoint, ErrorKind, McpSession, probe
from concierge.mcp_client.url_policy import UrlPolicy, UrlRefused, host_address, is_own_outbound, refusal
from concierge.registry import Registry
from tests.mcp_servers import RunningServer, closed_port_url, serve_in_thread, slow_app, tools_app

pytestmark = pytest.mark.anyio

LOOPBACK = ipaddress.ip_address("127.0.0.1")


# -- numeric hosts ------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0X7F000001", "0177.0.0.1", "127.1", "127.0.1",
                                  "0x7f.1", "0177.0x0.0.01", "127.0.0.1.", "017700000001"])
def test_every_inet_aton_spelling_of_loopback_is_read_as_127_0_0_1(host: str) -> None:
    assert host_address(host) == LOOPBACK


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.0.0.1", "08.0.0.1", "1e3", "",
                                  "127.0.0.1..", "1..1", "4294967296"])
def test_names_and_broken_numbers_are_not_addresses(host: str) -> None:
    assert host_address(host) is None


def test_a_bare_0x_is_zero_as_browsers_read_it() -> None:
    assert host_address("0x") == ipaddress.ip_address("0.0.0.0")


def test_ipv6_and_mapped_forms() -> None:
    assert host_address("[::1]") == ipaddress.ip_address("::1")
    assert host_address("::ffff:127.0.0.1") == ipaddress.ip_address("::ffff:7f00:1")
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1")) == "an IPv4-mapped IPv6 address (for 127.0.0.1)"
    assert "IPv4-mapped" in (refusal(ipaddress.ip_address("::ffff:93.184.216.34")) or "")


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "CGNAT"), ("169.254.1.1", "link-local"), ("169.254.169.254", "metadata"),
    ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"), ("240.0.0.1", "public"),
    ("::1", "loopback"), ("fc00::1", "private"), ("fd00:ec2::254", "metadata"), ("fe80::1", "link-local"),
    ("::", "unspecified"), ("ff02::1", "multicast"), ("2002:7f00:1::", "6to4"), ("64:ff9b::a00:1", "NAT64"),
    ("168.63.129.16", "metadata"),
])
def test_hosted_mode_refuses_and_names_the_reason(address: str, reason: str) -> None:
    said = refusal(ipaddress.ip_address(address))
    assert said is not None and reason in said, (address, said)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


# -- check_url (registration) -------------------------------------------------------------------

ISSUE_URLS = [
    "https://169.254.169.254/latest/meta-data/", "https://metadata.google.internal/computeMetadata/v1/",
    "https://[fd00:ec2::254]/", "https://0.0.0.0/mcp", "https://[::ffff:127.0.0.1]/mcp", "https://2130706433/mcp",
    "https://0x7f000001/mcp", "https://0177.0.0.1/mcp", "https://127.1/mcp", "https://10.0.0.5/mcp",
    "https://172.16.3.4/mcp", "https://192.168.0.10/mcp", "https://100.64.1.1/mcp", "https://[fe80::1]/mcp",
    "https://localhost/mcp", "http://localhost:8765/mcp", "http://127.0.0.1:8765/mcp", "https://x.localhost/",
    "https://1.2.3.4.5/mcp",
]


@pytest.mark.parametrize("url", ISSUE_URLS)
def test_hosted_check_url_refuses_what_the_issue_measured(url: str) -> None:
    with pytest.raises(UrlRefused, match="base_url"):
        UrlPolicy("hosted").check_url(url)


@pytest.mark.parametrize("url", ["https://mcp.example.com/mcp", "https://93.184.216.34:8443/mcp"])
def test_hosted_check_url_lets_public_urls_through(url: str) -> None:
    UrlPolicy("hosted").check_url(url)


def test_local_mode_keeps_todays_rules_but_never_concierge_itself() -> None:
    policy = UrlPolicy()
    for url in ("http://127.0.0.1:8765/mcp", "https://10.0.0.5/mcp", "https://169.254.169.254/"):
        policy.check_url(url)  # the person at the keyboard owns this machine's network
    policy.add_self("127.0.0.1", 8080)
    for url in ("http://127.0.0.1:8080/", "http://localhost:8080/api/v1/storage/sandboxes/x/agents/y/mcp",
                "http://[::1]:8080/mcp", "https://0.0.0.0:8080/", "https://2130706433:8080/", "https://127.1:8080/"):
        with pytest.raises(UrlRefused, match="Concierge server itself"):
            policy.check_url(url)
    policy.check_url("http://127.0.0.1:8081/mcp")  # another port is another server


def test_a_wildcard_bind_makes_every_loopback_and_unspecified_address_itself() -> None:
    policy = UrlPolicy("hosted")
    policy.add_self("0.0.0.0", 443)
    with pytest.raises(UrlRefused, match="itself"):
        policy.check_url("https://127.0.0.1/")
    assert policy.is_self(ipaddress.ip_address("::"), 443)
    assert policy.connected_to_self(("93.184.216.34", 50123), ("93.184.216.34", 443))
    assert not policy.connected_to_self(("10.0.0.2", 50123), ("93.184.216.34", 443))


def test_the_registry_refuses_with_a_400_naming_base_url(tmp_path: Path) -> None:
    registry = Registry.open(tmp_path / "home", url_policy=UrlPolicy("hosted"))
    try:
        for url in ("https://169.254.169.254/", "https://2130706433/mcp"):
            with pytest.raises(ValidationFailed) as caught:
                anyio.run(registry.register, {"name": "x", "base_url": url, "auth_kind": "none"})
            assert caught.value.field == "base_url" and type(caught.value) is ValidationFailed  # a 400
        assert registry.list_sources() == []
    finally:
        registry.close()


# -- resolution at connect time: a resolver the test injects, real servers on loopback ---------

class Resolver:
    """Answers from a script (the last answer repeats) and counts the lookups."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


class HostRecorder:
    """ASGI wrapper that records the Host header of every request."""

    def __init__(self, app: Any) -> None:
        self.app, self.hosts = app, []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.hosts.append(dict(scope["headers"]).get(b"host", b"").decode())
        await self.app(scope, receive, send)


def _named_app() -> Any:
    """A real MCP server that accepts any Host (as a public server would)."""
    from mcp.server.lowlevel import Server
    import mcp_types as types

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name="echo", input_schema={"type": "object"})])

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        await anyio.sleep(0.2)  # long enough that concurrent calls need several connections
        return types.CallToolResult(content=[types.TextContent(type="text", text="ok")])

    return Server("named", on_list_tools=on_list_tools, on_call_tool=on_call_tool).streamable_http_app(
        streamable_http_path="/mcp", host="0.0.0.0")


@pytest.fixture(scope="module")
def named_server() -> Iterator[tuple[RunningServer, HostRecorder]]:
    recorder = HostRecorder(_named_app())
    with serve_in_thread(recorder) as srv:
        yield srv, recorder


async def test_hosted_mode_refuses_a_name_that_resolves_to_loopback_and_never_connects(
        named_server: tuple[RunningServer, HostRecorder]) -> None:
    srv, recorder = named_server
    before = len(recorder.hosts)
    for answers in (["127.0.0.1"], ["93.184.216.34", "10.0.0.7"], ["::ffff:127.0.0.1"]):
        resolver = Resolver(answers)
        endpoint = Endpoint(f"https://mcp.example.test:{srv.port}/mcp", connect_timeout=5,
                            url_policy=UrlPolicy("hosted", resolver=resolver))
        result = await probe(endpoint)
        assert not result.ok and result.error_kind is ErrorKind.BLOCKED, result
        assert "mcp.example.test resolves to" in (result.error or "") and "hosted" in (result.error or "")
    assert len(recorder.hosts) == before  # nothing reached the loopback server


async def test_local_mode_connects_to_the_resolved_address_with_the_urls_host_header(
        named_server: tuple[RunningServer, HostRecorder]) -> None:
    srv, recorder = named_server
    resolver = Resolver(["127.0.0.1"])
    endpoint = Endpoint(f"http://mcp.example.test:{srv.port}/mcp", url_policy=UrlPolicy(resolver=resolver))
    result = await probe(endpoint)
    assert result.ok and [t.name for t in result.tools] == ["echo"], result
    assert recorder.hosts[-1] == f"mcp.example.test:{srv.port}"
    assert resolver.calls == ["mcp.example.test"]


async def test_a_session_resolves_once_and_never_follows_a_second_answer(
        named_server: tuple[RunningServer, HostRecorder]) -> None:
    """Rebinding: the resolver's second answer would be another address (nothing listens on
    127.0.0.2). Concurrent calls need several connections; all go to the pinned address."""
    srv, _ = named_server
    resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])
    endpoint = Endpoint(f"http://mcp.example.test:{srv.port}/mcp", url_policy=UrlPolicy(resolver=resolver))
    async with McpSession(endpoint) as session:
        results: list[Any] = []

        async def call() -> None:
            results.append(await session.call_tool("echo", {}))

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(call)
    assert [r.text for r in results] == ["ok"] * 6
    assert resolver.calls == ["mcp.example.test"]


async def test_a_url_at_concierges_own_port_is_blocked_at_connect_time(
        named_server: tuple[RunningServer, HostRecorder]) -> None:
    """A name the registration could not recognise resolves to Concierge itself: refused
    before connecting, in local mode too."""
    srv, recorder = named_server
    before = len(recorder.hosts)
    policy = UrlPolicy(resolver=Resolver(["127.0.0.1"]))
    policy.add_self("127.0.0.1", srv.port)  # pretend the MCP server is Concierge
    result = await probe(Endpoint(f"http://alias.example.test:{srv.port}/mcp", url_policy=policy))
    assert result.error_kind is ErrorKind.BLOCKED and "itself" in (result.error or "")
    assert len(recorder.hosts) == before


async def test_own_outbound_connections_are_recorded_while_open() -> None:
    with serve_in_thread(slow_app(0.0, call_delay_s=1.0)) as srv:
        seen: list[bool] = []
        async with McpSession(Endpoint(srv.url())) as session:

            async def watch() -> None:
                await anyio.sleep(0.3)
                for conn in _connections_to(srv.port):
                    seen.append(is_own_outbound(*conn))

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await session.call_tool("slow_echo", {"text": "x"})
        assert seen and all(seen)
    assert not is_own_outbound("127.0.0.1", 1)


def _connections_to(port: int) -> list[tuple[str, int]]:
    """Local ends of this process's established TCP connections to 127.0.0.1:port (from /proc)."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        r_ip, r_port = remote.split(":")
        if state == "01" and int(r_port, 16) == port and r_ip == "0100007F":
            l_ip, l_port = local.split(":")
            out.append((str(ipaddress.IPv4Address(bytes.fromhex(l_ip)[::-1])), int(l_port, 16)))
    return out


async def test_hosted_mode_words_a_closed_port_and_a_blocked_one_without_leaking_ports() -> None:
    """Loopback is refused before any connection in hosted mode: a closed port and a live
    server read the same ("blocked"), so a health check cannot scan this machine."""
    with serve_in_thread(tools_app(2)) as live:
        errors = []
        for url in (live.url(), closed_port_url()):
            result = await probe(Endpoint(url, url_policy=UrlPolicy("hosted")))
            errors.append((result.error_kind, (result.error or "").replace(url.split("/")[2].split(":")[1], "P")))
        assert errors[0] == errors[1] and errors[0][0] is ErrorKind.BLOCKED


def _redirect_to(location: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await send({"type": "http.response.start", "status": 307,
                    "headers": [(b"location", location.encode()), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    return app


async def test_redirects_to_another_origin_are_not_followed_and_same_origin_ones_stay_pinned(
        named_server: tuple[RunningServer, HostRecorder]) -> None:
    srv, recorder = named_server
    # Another origin (the resolver would send it to the live server): never looked up, never reached.
    with serve_in_thread(_redirect_to(f"http://elsewhere.example.test:{srv.port}/mcp")) as hop:
        resolver = Resolver(["127.0.0.1"])
        before = len(recorder.hosts)
        result = await probe(Endpoint(f"http://start.example.test:{hop.port}/mcp", connect_timeout=5,
                                      url_policy=UrlPolicy(resolver=resolver)))
        assert not result.ok and resolver.calls == ["start.example.test"]
        assert len(recorder.hosts) == before
    # The same origin, another path (the SDK follows that): the pinned address, no new lookup.
    resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])
    inner = HostRecorder(_named_app())

    class OldPath:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/old":
                await _redirect_to("/mcp")(scope, receive, send)
            else:
                await inner(scope, receive, send)

    with serve_in_thread(OldPath()) as both:
        result = await probe(Endpoint(f"http://same.example.test:{both.port}/old", connect_timeout=5,
                                      url_policy=UrlPolicy(resolver=resolver)))
    assert result.ok, result
    assert resolver.calls == ["same.example.test"] and inner.hosts


async def test_tls_connections_stay_recorded_as_own_after_the_upgrade(tmp_path: Path) -> None:
    from tests.trust_netns import _serve, _tls_files

    _, cert, key = _tls_files(tmp_path, "localhost")
    with _serve(slow_app(0.0, call_delay_s=1.0), "127.0.0.1", ssl_certfile=str(cert), ssl_keyfile=str(key)) as port:
        seen: list[bool] = []
        async with McpSession(Endpoint(f"https://127.0.0.1:{port}/mcp", verify_tls=False)) as session:

            async def watch() -> None:
                await anyio.sleep(0.4)
                seen.extend(is_own_outbound(*conn) for conn in _connections_to(port))

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                await session.call_tool("slow_echo", {"text": "x"})
    assert seen and all(seen), seen


def test_the_concierge_refuses_a_private_url_before_asking_for_a_yes(tmp_path: Path) -> None:
    """Found in the trust review: on a hosted server the chat asked "Go ahead?" for a
    registration the registry then refused. The URL policy speaks first, in the tool's words."""
    from concierge.agent.models import OfflinePlanner
    from concierge.agent.session import ConciergeSession
    from concierge.backend import LocalBackend
    from tests.agent_fixtures import collect, events_of, text_of

    async def run() -> tuple[list[object], str, int]:
        backend = LocalBackend(Registry.open(tmp_path / "home", url_policy=UrlPolicy("hosted")))
        try:
            session = ConciergeSession(backend, OfflinePlanner())
            events = await collect(session.send("add https://169.254.169.254/mcp called Meta with no auth"))
            return events_of(events, "confirmation_required"), text_of(events), len(await backend.list_sources())
        finally:
            await backend.aclose()

    asked, text, count = anyio.run(run)
    assert asked == [] and count == 0
    assert "169.254.169.254" in text and "url" in text.lower(), text
