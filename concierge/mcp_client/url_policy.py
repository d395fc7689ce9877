"""Which addresses Concierge may connect to on behalf of a source, in two modes.

    local    the embedded default and ``serve`` on loopback: the URL rules of the registry
             (https anywhere, plain http for localhost only); the person at the keyboard
             owns every address this machine can reach
    hosted   ``serve`` on a non-loopback address, or ``--url-policy hosted``: the host is
             resolved once and every address it resolves to must be public — no loopback,
             private (RFC 1918, fc00::/7), link-local, shared (CGNAT 100.64/10), unspecified,
             multicast, reserved, cloud metadata (169.254.169.254, fd00:ec2::254, …) or
             IPv6 forms that embed an IPv4 address (mapped ``::ffff:a.b.c.d``, 6to4, NAT64)

In every mode a source may not point at Concierge itself (`add_self`: its bind addresses
and port, any path).

Numeric hosts are read the way ``inet_aton`` and browsers read them (``2130706433``,
``0x7f000001``, ``0177.0.0.1`` and ``127.1`` are all 127.0.0.1; `host_address`) and then
checked with the standard ``ipaddress`` module, so a spelling cannot slip past a check
that the resolver would later undo.

`check_url` is the syntactic check run at registration (a clear error naming base_url);
`resolve` is the check run for every connection (`concierge.mcp_client._pinned` connects
to exactly the addresses it returned: no second DNS lookup, so no rebinding).

The connections this process opens to MCP servers are recorded (`remember_outbound`), so
that the HTTP service can tell a request it sent itself from a caller's (`is_own_outbound`).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio

__all__ = [
    "IPAddress",
    "METADATA_ADDRESSES",
    "METADATA_NAMES",
    "Mode",
    "Resolver",
    "UrlPolicy",
    "UrlRefused",
    "host_address",
    "is_own_outbound",
    "refusal",
    "remember_outbound",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Mode = Literal["local", "hosted"]
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port) -> [address, …]``: how host names are resolved (injectable for tests)."""

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, …
    "169.254.170.2",  # AWS ECS task metadata
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure wire server (a public-range address: refused by name here)
    "fd00:ec2::254",  # AWS over IPv6
))
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class UrlRefused(ValueError):
    """A URL or an address the policy does not allow; the message says why, in one sentence."""


# -- numeric hosts ------------------------------------------------------------------------------

def _ipv4_part(part: str) -> int | None:
    """One dotted part as ``inet_aton`` reads it: ``0x`` hex, a leading 0 octal, else decimal."""
    text = part.lower()
    if text.startswith("0x"):
        digits, base = text[2:], 16
        if not digits:
            return 0
    elif len(text) > 1 and text.startswith("0"):
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    try:
        return int(digits, base) if digits.isalnum() and digits.isascii() else None
    except ValueError:
        return None


def _ipv4_of(host: str) -> ipaddress.IPv4Address | None:
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]  # one trailing dot is allowed, as browsers do
    if not 1 <= len(parts) <= 4 or any(p == "" for p in parts):
        return None
    numbers = [_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    *head, last = values
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(values)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (5 - len(values)) + last
    return ipaddress.IPv4Address(value)


def _looks_numeric(host: str) -> bool:
    """The last label is a number: a browser reads the host as IPv4 (and fails if it is not one)."""
    last = host.rstrip(".").rsplit(".", 1)[-1].lower()
    return bool(last) and (last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef"
                                                                               for c in last[2:])))


def host_address(host: str) -> IPAddress | None:
    """The IP address a host names literally (any ``inet_aton`` spelling of IPv4, or IPv6 with
    or without brackets), else None for a host name. IPv4-mapped IPv6 stays IPv6 (`refusal`
    names it)."""
    host = host.strip().strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _ipv4_of(host)


# -- what hosted mode refuses -------------------------------------------------------------------

def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address", address.ipv4_mapped
    if address.sixtofour is not None:
        return "a 6to4 address", address.sixtofour
    if address.teredo is not None:
        return "a Teredo address", address.teredo[1]
    if any(address in net for net in _NAT64):
        return "a NAT64 address", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return "an IPv4-compatible IPv6 address", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why hosted mode refuses ``address`` (``"a private address"``), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            what, inner = embedded
            # Mapped and compatible forms reach the IPv4 address itself: refused whatever it is.
            if what in ("an IPv4-mapped IPv6 address", "an IPv4-compatible IPv6 address"):
                return f"{what} (for {inner})"
            inner_reason = refusal(inner)
            if inner_reason is not None:
                return f"{what} for {inner}, {inner_reason}"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared (CGNAT) address"
    if address.is_reserved:
        return "a reserved address, not a public one"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_local_name(host: str) -> bool:
    host = host.rstrip(".").lower()
    return host == "localhost" or host.endswith(".localhost")


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass
class UrlPolicy:
    """The URL policy of one registry (see the module docstring).

    ``resolver`` resolves host names (default: the system's ``getaddrinfo``, through anyio).
    Concierge's own listening addresses are added with `add_self` (``serve`` and ``gateway``
    do it for their bind address; the HTTP app also learns each address a request arrived on).
    """

    mode: Mode = "local"
    resolver: Resolver | None = None
    _self: set[tuple[IPAddress, int]] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in ("local", "hosted"):
            raise ValueError(f"url policy must be 'local' or 'hosted' (got {self.mode!r})")

    @property
    def hosted(self) -> bool:
        return self.mode == "hosted"

    # -- Concierge itself ---------------------------------------------------------------------

    def add_self(self, host: str, port: int) -> None:
        """Record an address and port Concierge listens on (``0.0.0.0`` / ``::``: every address)."""
        address = host_address(host)
        if address is None:
            address = ipaddress.ip_address("127.0.0.1") if _is_local_name(host) else None
        if address is None:
            return
        with self._lock:
            self._self.add((_unmapped(address), int(port)))

    def forget_self(self) -> None:
        with self._lock:
            self._self.clear()

    @property
    def own_ports(self) -> frozenset[int]:
        with self._lock:
            return frozenset(port for _, port in self._self)

    def is_self(self, address: IPAddress, port: int) -> bool:
        """Would a connection to ``address:port`` reach Concierge itself (as far as is known
        before connecting; `connected_to_self` checks the connection afterwards)?"""
        address = _unmapped(address)
        with self._lock:
            own = [a for a, p in self._self if p == port]
        for mine in own:
            if address.is_unspecified or address == mine:
                return True
            if (mine.is_unspecified or mine.is_loopback) and address.is_loopback:
                return True
        return False

    def connected_to_self(self, local: tuple[str, int], peer: tuple[str, int]) -> bool:
        """A connection whose two ends share an address goes to this machine: it is Concierge
        itself when the far end's port is one it listens on (on that address or on all)."""
        try:
            mine, theirs = _unmapped(ipaddress.ip_address(local[0])), _unmapped(ipaddress.ip_address(peer[0]))
        except ValueError:
            return False
        if mine != theirs:
            return False
        with self._lock:
            own = [a for a, p in self._self if p == peer[1]]
        return any(a.is_unspecified or a == theirs for a in own)

    def _self_error(self, address: IPAddress, port: int) -> UrlRefused:
        return UrlRefused(f"base_url points at this Concierge server itself ({_show(address)}:{port}); "
                          "a source must be another MCP server")

    # -- the checks ---------------------------------------------------------------------------

    def check_url(self, url: str) -> None:
        """The syntactic check at registration: raises `UrlRefused` naming base_url."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        address = host_address(host)
        if address is None and _is_local_name(host):
            address = ipaddress.ip_address("127.0.0.1")
        if address is not None and self.is_self(address, port):
            raise self._self_error(address, port)
        if not self.hosted:
            return
        if address is None and _looks_numeric(host):
            raise UrlRefused(f"base_url host {host!r} is not a valid IPv4 address")
        if _is_local_name(host) or host.rstrip(".") in METADATA_NAMES:
            what = "a loopback name" if _is_local_name(host) else "a cloud metadata name"
            raise UrlRefused(f"base_url host {host!r} is {what}: this Concierge is hosted and connects "
                             "only to public addresses")
        if address is not None:
            reason = refusal(address)
            if reason is not None:
                raise UrlRefused(f"base_url points at {_show(address)}, {reason}: this Concierge is hosted "
                                 "and connects only to public addresses")

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host:port``, each checked; raises `UrlRefused`.

        A host name is resolved once, here; hosted mode refuses it if *any* address it
        resolves to is refused (a name with one private answer is not trusted with the rest)."""
        address = host_address(host)
        if address is not None:
            addresses: list[IPAddress] = [address]
        else:
            name = host.rstrip(".").lower()
            if self.hosted and (_is_local_name(name) or name in METADATA_NAMES):
                raise UrlRefused(f"refused by the URL policy: {host} is a loopback or metadata name "
                                 "(hosted Concierge connects only to public addresses)")
            resolver = self.resolver or _system_resolver
            addresses = _unique(ipaddress.ip_address(a.split("%", 1)[0]) for a in await resolver(host, port))
            if not addresses:
                raise socket.gaierror(socket.EAI_NONAME, f"{host} resolved to no address")
        for candidate in addresses:
            if self.is_self(candidate, port):
                raise self._self_error(candidate, port)
            if self.hosted:
                reason = refusal(candidate)
                if reason is not None:
                    via = "" if address is not None else f"{host} resolves to "
                    raise UrlRefused(f"refused by the URL policy: {via}{_show(candidate)}, {reason} "
                                     "(hosted Concierge connects only to public addresses)")
        return addresses


def _unique(addresses: Iterable[IPAddress]) -> list[IPAddress]:
    out: list[IPAddress] = []
    for a in addresses:
        if a not in out:
            out.append(a)
    return out


def _show(address: IPAddress) -> str:
    return f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)


# -- Concierge's own outbound connections --------------------------------------------------------

_OUTBOUND: dict[tuple[str, int], weakref.ref[Any]] = {}
_OUTBOUND_LOCK = threading.Lock()


def _endpoint_key(address: tuple[Any, ...]) -> tuple[str, int]:
    host = _unmapped(ipaddress.ip_address(str(address[0]).split("%", 1)[0]))
    return str(host), int(address[1])


def _open_socket(ref: weakref.ref[Any]) -> Any:
    """The open socket of a recorded stream, or None once it is closed or gone."""
    stream = ref()
    sock = stream.get_extra_info("socket") if stream is not None else None
    try:
        return sock if sock is not None and sock.fileno() != -1 else None
    except (OSError, ValueError):
        return None


def remember_outbound(stream: Any, local: tuple[Any, ...]) -> None:
    """Record a connection this process opened (an httpcore network stream and its local
    address); it is forgotten once closed (a weak reference: nothing is kept alive)."""
    key = _endpoint_key(local)
    with _OUTBOUND_LOCK:
        for stale in [k for k, ref in _OUTBOUND.items() if _open_socket(ref) is None]:
            del _OUTBOUND[stale]
        _OUTBOUND[key] = weakref.ref(stream)


def is_own_outbound(host: str | None, port: int | None) -> bool:
    """True when ``host:port`` is the local end of a connection this process opened to an MCP
    server and still holds open: a request arriving from there is Concierge's own."""
    if not host or port is None:
        return False
    try:
        key = _endpoint_key((host, port))
    except ValueError:
        return False
    with _OUTBOUND_LOCK:
        ref = _OUTBOUND.get(key)
        sock = _open_socket(ref) if ref is not None else None
    try:
        return sock is not None and _endpoint_key(sock.getsockname()) == key
    except (OSError, ValueError):
        return False
