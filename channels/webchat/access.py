"""Who may open the chat and from where: the page's origin, and the client's address for abuse limits."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from yarl import URL

Network = IPv4Network | IPv6Network
_Endpoint = tuple[str, str, int | None]


def _endpoint(url: str) -> _Endpoint | None:
    """(scheme, host, port) of an http(s) origin, default ports filled in; None for anything else."""
    try:
        parsed = URL(url)
    except ValueError:
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return parsed.scheme, parsed.host.lower(), parsed.port


def origin_of(url: str) -> str | None:
    """The origin (``scheme://host[:port]``) of an absolute URL such as PUBLIC_URL."""
    endpoint = _endpoint(url)
    return None if endpoint is None else str(URL(url).origin())


def is_own_origin(origin: str, host: str | None, public_origin: str | None) -> bool:
    """The page comes from this gateway: its origin is the Host the request was sent to (any of http and
    https, since TLS often ends at a proxy in front), or PUBLIC_URL's origin.

    A browser always sends the Host of the URL it connects to, and a page cannot make it send another
    Origin, so a foreign page never matches. (A DNS-rebound name matches, but gains nothing a script outside
    a browser could not do: the chat has no cookies or ambient authority.)
    """
    seen = _endpoint(origin)
    if seen is None:
        return False
    if public_origin is not None and _endpoint(public_origin) == seen:
        return True
    if not host:
        return False
    served = _endpoint(f"{seen[0]}://{host}")
    return served is not None and served == seen


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the nearest address in
    ``X-Forwarded-For`` that is not one (read from the right: the left is whatever the client wrote).

    An IPv6 client counts as its /64, the block one subscriber usually gets.
    """
    address = peer or "unknown"
    if trusted:
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _is_trusted(address, trusted):
                break
            address = hop
    try:
        parsed = ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)
