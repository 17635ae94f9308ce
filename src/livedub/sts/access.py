"""Who may do what on the STS: the API key at connect, and who may watch a stream (`monitor:subscribe`).

Pure functions over what a connection presented; the only access checks of the STS service.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs


@dataclass(frozen=True)
class Peer:
    """What a connection showed at connect: the keys it presented and whether it is local."""

    keys: tuple[str, ...]
    loopback: bool


def same_key(expected: str, presented: str) -> bool:
    """Constant-time comparison of two keys (bytes: `hmac.compare_digest` refuses non-ASCII str)."""
    return hmac.compare_digest(expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass"))


def is_loopback_peer(environ: dict[str, Any]) -> bool:
    """Whether the connection comes from this host. From the ASGI scope's client address: Engine.IO's own
    `REMOTE_ADDR` is a placeholder under ASGI. No address (e.g. a Unix socket is not used here): not loopback."""
    client = (environ.get("asgi.scope") or {}).get("client")
    if not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def presented_keys(environ: dict[str, Any], auth: Any) -> tuple[str, ...]:
    """The keys a connection presents: Socket.IO `auth.token`, header `X-API-Key`, query `?api_key=`."""
    keys: list[str] = []
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        keys.append(auth["token"])
    if header := environ.get("HTTP_X_API_KEY"):
        keys.append(str(header))
    keys += parse_qs(environ.get("QUERY_STRING", "")).get("api_key", [])
    return tuple(keys)


def peer_of(environ: dict[str, Any], auth: Any) -> Peer:
    return Peer(keys=presented_keys(environ, auth), loopback=is_loopback_peer(environ))


def may_connect(api_key: str, peer: Peer) -> bool:
    """With an API key configured, a connection must present it."""
    return not api_key or any(same_key(api_key, key) for key in peer.keys)


def may_monitor(peer: Peer | None, *, monitor_key: str, api_key: str, key: str | None) -> bool:
    """Monitoring needs the monitor key or the API key (at connect, or `key` in the request); with neither
    configured, a loopback connection."""
    if peer is None:
        return False
    accepted = [k for k in (monitor_key, api_key) if k]
    if not accepted:
        return peer.loopback
    presented = [*peer.keys, *([key] if key else [])]
    return any(same_key(a, k) for a in accepted for k in presented)
