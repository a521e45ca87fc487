"""Downloading an artifact from an allow-listed URL: to a checked address, with deadlines.

The URL itself was checked against ``GATEWAY_ARTIFACT_URL_PREFIXES`` (``sources.check_url``);
this module checks where its host name leads and connects nowhere else:

- The name is resolved once. Every address it resolves to must be public, or lie in a network of
  ``GATEWAY_ARTIFACT_URL_ALLOWED_NETWORKS``: a name that leads to loopback, link-local (cloud
  metadata at 169.254.169.254), private, shared or reserved addresses is refused with 403. A host
  written as an IP address is exactly what the operator wrote in the allow-listed prefix (the
  origins must match), so it needs no entry: ``http://127.0.0.1:9000/releases/`` allows 127.0.0.1.
- The connection goes to the addresses that were checked (a resolver that answers only those),
  while the Host header and TLS server name stay the URL's: a DNS answer that changes between
  the check and the connection (DNS rebinding) is never asked for.
- A connection that cannot be opened, or goes quiet, for ``GATEWAY_ARTIFACT_FETCH_IDLE_SECONDS``
  fails, and so does a download not finished within ``GATEWAY_ARTIFACT_FETCH_TIMEOUT_SECONDS``.
  The deploy holds no lock while it downloads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.core.errors import DeployFailed, Forbidden, PayloadTooLarge
from gateway.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_CHUNK = 1 << 20


def allowed_networks(settings: Settings) -> list[IPNetwork]:
    """``GATEWAY_ARTIFACT_URL_ALLOWED_NETWORKS`` as networks (validated when settings load)."""
    return [ipaddress.ip_network(item, strict=False) for item in settings.artifact_url_allowed_networks]


def is_public(address: IPAddress) -> bool:
    """Whether an address is globally routable unicast (an IPv4-mapped IPv6 address as its IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def resolve_checked(host: str, port: int, networks: list[IPNetwork]) -> list[IPAddress]:
    """The addresses of ``host``, each public or in ``networks``; else 403 (or 502 if unknown)."""
    try:
        return [ipaddress.ip_address(host)]  # a literal: named by the allow-listed prefix itself
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise DeployFailed("fetch", f"cannot resolve the host name {host}", 502) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])  # no IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    for address in addresses:
        if not is_public(address) and not any(address in net for net in networks):
            raise Forbidden(
                f"source host {host} resolves to {address}, a loopback, link-local or private address; "
                "an operator may allow its network with GATEWAY_ARTIFACT_URL_ALLOWED_NETWORKS"
            )
    if not addresses:
        raise DeployFailed("fetch", f"cannot resolve the host name {host}", 502)
    return addresses


class PinnedResolver(AbstractResolver):
    """Answers for one host name with the addresses already checked, and for no other name."""

    def __init__(self, host: str, addresses: list[IPAddress]) -> None:
        self.host = host
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(f"no checked address for {host}")
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


async def fetch_url(url: str, shown: str, into: Path, settings: Settings) -> None:
    """Stream ``url`` into the file ``into``: at most ``GATEWAY_MAX_ARTIFACT_BYTES``, redirects not
    followed, to a checked address, within the idle and total deadlines."""
    limit = settings.max_artifact_bytes
    idle, total = settings.artifact_fetch_idle_seconds, settings.artifact_fetch_timeout_seconds
    target = URL(url, encoded=True)
    host = target.raw_host or ""
    addresses = await resolve_checked(host, target.port or 0, allowed_networks(settings))
    timeout = aiohttp.ClientTimeout(total=total, sock_connect=idle, sock_read=idle)
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(host, addresses), use_dns_cache=False)
    try:
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(target, allow_redirects=False) as response,
        ):
            if 300 <= response.status < 400:
                raise DeployFailed("fetch", f"{shown} answered a redirect ({response.status}); give the final URL", 400)
            if response.status != 200:
                raise DeployFailed("fetch", f"{shown} answered HTTP {response.status}", 502)
            if (response.content_length or 0) > limit:
                raise PayloadTooLarge(f"artifact at {shown} is over the limit of {limit} bytes")
            size = 0
            with into.open("wb") as out:
                async for chunk in response.content.iter_chunked(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"artifact at {shown} is over the limit of {limit} bytes")
                    out.write(chunk)
    except aiohttp.ConnectionTimeoutError:
        reason = f"could not connect within {idle:g}s (GATEWAY_ARTIFACT_FETCH_IDLE_SECONDS)"
        raise DeployFailed("fetch", f"cannot download {shown}: {reason}", 504) from None
    except aiohttp.ServerTimeoutError:
        reason = f"no data for {idle:g}s (GATEWAY_ARTIFACT_FETCH_IDLE_SECONDS)"
        raise DeployFailed("fetch", f"cannot download {shown}: {reason}", 504) from None
    except TimeoutError:
        reason = f"not finished within {total:g}s (GATEWAY_ARTIFACT_FETCH_TIMEOUT_SECONDS)"
        raise DeployFailed("fetch", f"cannot download {shown}: {reason}", 504) from None
    except aiohttp.ClientError as exc:
        raise DeployFailed("fetch", f"cannot download {shown}: {type(exc).__name__}", 502) from None
