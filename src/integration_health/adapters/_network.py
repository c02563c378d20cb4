"""Name resolution and TCP connects with the SSRF guard, for adapters that open their own sockets.

The HTTP client (``_http.py``) applies the guard inside aiohttp's resolver; adapters that speak
other protocols (``tcp_tls``, ``sftp``) resolve with :func:`resolve_target`, which refuses
targets that resolve only to loopback, private, link-local, carrier-grade NAT or metadata
addresses (unless ``allow_private_networks``), and then connect with :func:`connect_first` to
the *vetted* addresses themselves — never to the name again, so a second DNS answer (DNS
rebinding) cannot slip a private address past the guard.

Everything here runs on the event loop without blocking: ``loop.getaddrinfo`` (the loop's
thread pool) and ``loop.sock_connect`` on non-blocking sockets. Neither has a timeout of its
own: the runner owns the deadline and cancels the check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from dataclasses import dataclass

from ..errors import UnsafeTargetError

__all__ = [
    "ResolvedTarget",
    "connect_first",
    "is_ip_literal",
    "is_public_address",
    "normalize_host",
    "resolve_target",
]

_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?\.?")

GUARD_HINT = "such targets are refused unless INTEGRATION_HEALTH_ALLOW_PRIVATE_NETWORKS=true"


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def is_public_address(address: str) -> bool:
    """True for globally routable unicast addresses (what a tenant may point a check at)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address reach it through a translator or relay:
        # judge the embedded address (NAT64 64:ff9b::a9fe:a9fe is 169.254.169.254).
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
        elif ip in _NAT64_LOCAL or int(ip) >> 32 == 0:
            return False  # local-use NAT64 and IPv4-compatible (::a.b.c.d): never a vendor
    return ip.is_global and not ip.is_multicast


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def normalize_host(value: str) -> str:
    """A host name or IP address as a config field holds it, or ``ValueError`` saying why.

    Surrounding blanks and the brackets of ``[::1]`` are removed. URLs, ``host:port`` and
    anything else that is not a name or an address are refused with a hint. Values holding a
    ``${…}`` reference are kept as they are (they are checked again once resolved).
    """
    value = value.strip()
    if "${" in value:
        return value
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if "://" in value or "/" in value:
        raise ValueError("must be a host name or IP address, not a URL (write the port in 'port')")
    if is_ip_literal(value):
        return value
    if ":" in value:
        raise ValueError("must be a host name or IP address without a port (use 'port')")
    if not _HOST_NAME.fullmatch(value) or ".." in value:
        raise ValueError("must be a host name (letters, digits, '-', '.') or an IP address")
    return value


@dataclass(frozen=True)
class ResolvedTarget:
    """Where a host name led: the vetted socket addresses, in the resolver's order."""

    host: str
    """The host as configured (brackets removed)."""
    port: int
    """The TCP port."""
    addresses: tuple[tuple[socket.AddressFamily, tuple[object, ...]], ...]
    """``(family, sockaddr)`` pairs that passed the guard, duplicates removed."""
    dns_ms: float
    """How long resolution took (0 for an IP literal, which needs no lookup)."""


async def resolve_target(host: str, port: int, *, allow_private: bool) -> ResolvedTarget:
    """Resolve ``host`` for a TCP connection and apply the SSRF guard.

    Raises ``socket.gaierror`` when the name does not resolve (the ``dns`` error code) and
    :class:`~integration_health.errors.UnsafeTargetError` (``config_invalid``) when every
    address is loopback, private, link-local or metadata and ``allow_private`` is false.
    With some public and some private addresses, only the public ones are kept.
    """
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    literal = is_ip_literal(host)
    if literal and not allow_private and not is_public_address(host):
        raise UnsafeTargetError(
            f"{host} is a loopback, private, link-local or metadata address; {GUARD_HINT}"
        )
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    dns_ms = 0.0 if literal else (time.monotonic() - started) * 1000
    seen: set[tuple[object, ...]] = set()
    addresses: list[tuple[socket.AddressFamily, tuple[object, ...]]] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        key = tuple(sockaddr)
        if key in seen:
            continue
        seen.add(key)
        if allow_private or is_public_address(str(sockaddr[0])):
            addresses.append((family, key))
    if not addresses:
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
        raise UnsafeTargetError(
            f"{host} resolves only to loopback, private, link-local or metadata addresses; "
            f"{GUARD_HINT}"
        )
    return ResolvedTarget(host=host, port=port, addresses=tuple(addresses), dns_ms=dns_ms)


async def connect_first(target: ResolvedTarget) -> tuple[socket.socket, str]:
    """A connected, non-blocking TCP socket to the first address that accepts, and its IP.

    Addresses are tried one after the other, in the resolver's order. When none accepts, the
    first address's error is raised (``ConnectionRefusedError``, ``OSError`` …). The caller
    owns the returned socket; on cancellation no socket is left open.
    """
    loop = asyncio.get_running_loop()
    first_error: OSError | None = None
    for family, sockaddr in target.addresses:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            first_error = first_error or exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock, str(sockaddr[0])
    assert first_error is not None  # addresses is never empty
    raise first_error
