"""Connecting only to addresses the URL policy checked, at the httpcore2 level.

``guarded_transport(verify, policy)`` is an ``httpx2.AsyncHTTPTransport`` whose connection
pool dials through `GuardedBackend`:

- a host name is resolved once per client by `UrlPolicy.resolve` (which checks every
  address) and pinned: every later connection of that client, a reconnect or a followed
  redirect included, goes to the pinned addresses, never to a second DNS answer;
- the socket is opened to the checked IP literal, while httpcore keeps the URL's host name
  for TLS (SNI and certificate check) and httpx2 for the ``Host`` header;
- after connecting, a connection whose two ends share an address and whose far port is one
  Concierge listens on is closed: it reached Concierge itself (e.g. ``0.0.0.0`` binds);
- every socket opened is recorded (`url_policy.is_own_outbound`), so the HTTP service can tell its own
  outbound requests from a caller's and never serve them as an anonymous loopback owner.

A refusal is a `Blocked` (an ``httpcore2.ConnectError``: the request was never sent).
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore2
import httpx2

from concierge.mcp_client.url_policy import IPAddress, UrlPolicy, UrlRefused, remember_outbound

__all__ = ["Blocked", "GuardedBackend", "guarded_transport"]


class Blocked(httpcore2.ConnectError):
    """The URL policy refused the connection (before anything was sent)."""


class _Tracked(httpcore2.AsyncNetworkStream):
    """A connection as the pool holds it, recorded as Concierge's own for as long as it lives
    (also after a TLS upgrade, which hands the pool a new stream).

    It costs nothing per request: reads and writes are the inner stream's own methods, and
    the raw socket is looked up once (httpcore2 asks whether it is readable before every
    request on a kept-alive connection, and anyio builds its attribute table per lookup)."""

    def __init__(self, inner: httpcore2.AsyncNetworkStream, local: tuple[Any, ...]) -> None:
        self._inner, self._local = inner, local
        self._socket = inner.get_extra_info("socket")
        self.read = inner.read  # type: ignore[method-assign]
        self.write = inner.write  # type: ignore[method-assign]
        self.aclose = inner.aclose  # type: ignore[method-assign]
        remember_outbound(self, local)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # (replaced per instance)
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # (replaced per instance)
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:  # (replaced per instance)
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore2.AsyncNetworkStream:
        upgraded = await self._inner.start_tls(ssl_context, server_hostname=server_hostname, timeout=timeout)
        return _Tracked(upgraded, self._local)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._socket is not None:
            return _readable(self._socket)
        if info == "socket":
            return self._socket
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket) -> bool:
    """Whether a read would return at once (data, or the b"" of a peer that closed), as
    httpcore2 checks it; a socket without a descriptor any more counts as readable."""
    fd = sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _to_self(host: str, port: int) -> Blocked:
    return Blocked(f"base_url points at this Concierge server itself ({host}:{port}); "
                   "a source must be another MCP server")


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """A network backend that resolves through ``policy`` and pins what it checked."""

    def __init__(self, policy: UrlPolicy | None) -> None:
        self.policy = policy or UrlPolicy()
        self._inner = httpcore2.AnyIOBackend()
        self._pinned: dict[tuple[str, int], list[IPAddress]] = {}

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        pinned = self._pinned.get((host, port))
        if pinned is not None:
            return pinned
        try:
            addresses = await self.policy.resolve(host, port)
        except UrlRefused as exc:
            raise Blocked(str(exc)) from exc
        except OSError as exc:  # a DNS failure: the request was never sent
            raise httpcore2.ConnectError(str(exc)) from exc
        self._pinned[(host, port)] = addresses
        return addresses

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self._addresses(host, port):
            try:
                stream = await self._inner.connect_tcp(str(address), port, timeout=timeout,
                                                       local_address=local_address,
                                                       socket_options=socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc  # the next checked address, if any
                continue
            sock = stream.get_extra_info("socket")
            if sock is not None:
                local, peer = sock.getsockname(), sock.getpeername()
                if self.policy.connected_to_self((str(local[0]), int(local[1])), (str(peer[0]), int(peer[1]))):
                    await stream.aclose()
                    raise _to_self(host, port)
                return _Tracked(stream, local)
            return stream
        assert failure is not None
        raise failure

    async def open_protocol(self, host: str, port: int, factory: Callable[[], asyncio.Protocol], *,
                            loop: asyncio.AbstractEventLoop, ssl: Any = None,
                            server_hostname: str | None = None) -> asyncio.Transport:
        """For a client that speaks HTTP itself (the gateway lane's `LaneWire`): an asyncio
        connection to a checked, pinned address of ``host``, under the same self-connection
        check, recorded as Concierge's own (the protocol is recorded: it answers
        ``get_extra_info`` as a stream does)."""
        failure: OSError | None = None
        for address in await self._addresses(host, port):
            try:
                transport, protocol = await loop.create_connection(factory, str(address), port, ssl=ssl,
                                                                   server_hostname=server_hostname)
            except OSError as exc:
                failure = exc  # the next checked address, if any
                continue
            local, peer = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
            if self.policy.connected_to_self((str(local[0]), int(local[1])), (str(peer[0]), int(peer[1]))):
                transport.close()
                raise _to_self(host, port)
            remember_outbound(protocol, local)
            return transport
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        raise Blocked("unix sockets are not used for MCP sources")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(verify: Any, policy: UrlPolicy | None,
                      backend: GuardedBackend | None = None) -> httpx2.AsyncHTTPTransport:
    """httpx2's transport with its connection pool dialling through `GuardedBackend`.

    httpx2 has no public hook for the network backend, so the pool it built is replaced by an
    identical one (httpx2's default limits) that has ours; the pinning tests fail if a new
    httpx2 stops using it. ``backend``: one to share (the gateway lane's `LaneWire` dials the
    addresses this client pinned)."""
    transport = httpx2.AsyncHTTPTransport(verify=verify)
    transport._pool = httpcore2.AsyncConnectionPool(  # noqa: SLF001 - see the docstring
        ssl_context=verify if not isinstance(verify, bool) else None,
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0,
        network_backend=backend or GuardedBackend(policy))
    return transport
