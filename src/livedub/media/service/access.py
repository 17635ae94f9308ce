"""Who may call which endpoint of the media-service HTTP API.

- Hooks (`/v1/nginx/*`, `/v1/mediamtx/*`) start and stop workers: only the media server may call them. The embedded
  nginx-rtmp calls from loopback; a media server on another host (MediaMTX in its own container) proves itself with
  MEDIA_HOOK_SECRET, as header `X-Livedub-Hook-Secret` or query parameter `hook_secret`.
- Control and observation (`/v1/streams`, `/metrics`, `/hls/`, anything else): loopback, or `Authorization: Bearer
  MEDIA_API_TOKEN` (or MONITOR_TOKEN, the operator's token).
- `/health` is open (container health checks, load balancers); it names no stream. The operator page's files
  (`/ui/`) decide for themselves (operator.py: loopback, or a remote operator once MONITOR_TOKEN is set); the
  data they show goes through the rule above.
- The operator page (`page_access`): loopback always; other machines only once MONITOR_TOKEN is set. Its controls
  (`control_access`: stop, start, next languages) need `Authorization: Bearer MONITOR_TOKEN`, from loopback too; none
  configured: controls off.
- Publishing (`PublishPolicy`, asked by the media server's publish hook): loopback always; others need the stream key
  (`key` = PUBLISH_KEY), or publish the output of a worker this service runs.

Every check of a secret is here, in constant time (`_matches`).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from enum import StrEnum

from livedub.media.service.hooks import StreamName, StreamRole

HOOK_SECRET_HEADER = "x-livedub-hook-secret"
HOOK_SECRET_PARAM = "hook_secret"
HOOK_PREFIXES = ("/v1/nginx/", "/v1/mediamtx/")
OPEN_PATHS = frozenset({"/health", "/ui"})
OPEN_PREFIXES = ("/ui/",)


class EndpointKind(StrEnum):
    OPEN = "open"
    HOOK = "hook"
    CONTROL = "control"


@dataclass(frozen=True)
class AccessDecision:
    allowed: bool
    reason: str
    status_code: int = 200  # of the refusal: 403 for a hook, 401 for control (a token may be presented)


def endpoint_kind(path: str) -> EndpointKind:
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return EndpointKind.OPEN
    if path.startswith(HOOK_PREFIXES):
        return EndpointKind.HOOK
    return EndpointKind.CONTROL


def is_loopback(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _matches(given: str | None, secret: str) -> bool:
    return bool(secret) and given is not None and hmac.compare_digest(given.encode(), secret.encode())


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ApiAccess:
    """The access rules above, for a request's path, peer address and credentials."""

    def __init__(self, hook_secret: str, api_token: str, monitor_token: str = "") -> None:
        self._hook_secret = hook_secret
        self._api_token = api_token
        self._monitor_token = monitor_token

    def check(
        self, path: str, client_host: str, *, hook_secret: str | None = None, authorization: str | None = None
    ) -> AccessDecision:
        kind = endpoint_kind(path)
        if kind is EndpointKind.OPEN:
            return AccessDecision(True, "open endpoint")
        if is_loopback(client_host):
            return AccessDecision(True, "loopback client")
        if kind is EndpointKind.HOOK:
            if _matches(hook_secret, self._hook_secret):
                return AccessDecision(True, "valid hook secret")
            return AccessDecision(
                False, "hooks are accepted only from the media server (loopback or MEDIA_HOOK_SECRET)", 403
            )
        token = bearer_token(authorization)
        if _matches(token, self._api_token) or _matches(token, self._monitor_token):
            return AccessDecision(True, "valid API token")
        return AccessDecision(
            False, "this endpoint needs loopback or Authorization: Bearer MEDIA_API_TOKEN (or MONITOR_TOKEN)", 401
        )


# ---- the operator page ---------------------------------------------------------------------------------------------
def page_access(client_host: str, monitor_token: str) -> AccessDecision:
    """The page itself (no data in it): loopback always; other machines only once an operator token exists."""
    if is_loopback(client_host):
        return AccessDecision(True, "loopback")
    if monitor_token:
        return AccessDecision(True, "operator token set: data and controls need it")
    return AccessDecision(False, "the operator page is served to loopback only (set MONITOR_TOKEN to open it)", 403)


def control_access(authorization: str | None, monitor_token: str) -> AccessDecision:
    """Controls need the operator token, from loopback too; without one configured they are off."""
    if not monitor_token:
        return AccessDecision(False, "controls are off: the media-service has no MONITOR_TOKEN (read-only page)", 403)
    if _matches(bearer_token(authorization), monitor_token):
        return AccessDecision(True, "operator token")
    return AccessDecision(False, "this control needs Authorization: Bearer MONITOR_TOKEN", 401)


# ---- publishing ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublishDecision:
    allowed: bool
    reason: str


class PublishPolicy:
    """Who may publish: loopback always; others need `key` = PUBLISH_KEY, and no PUBLISH_KEY means loopback only.

    The media-service's own output publisher may run on another host (containers): publishing `/out` is also
    allowed while this service runs a worker for that stream.
    """

    def __init__(self, publish_key: str) -> None:
        self._publish_key = publish_key

    def authorize(self, name: StreamName, addr: str, key: str | None, *, own_worker_active: bool) -> PublishDecision:
        if is_loopback(addr):
            return PublishDecision(True, "loopback publisher")
        if name.role is StreamRole.OUTPUT and own_worker_active:
            return PublishDecision(True, "output of a running worker")
        if not self._publish_key:
            return PublishDecision(False, "only loopback may publish (no PUBLISH_KEY configured)")
        if _matches(key, self._publish_key):
            return PublishDecision(True, "valid stream key")
        return PublishDecision(False, "missing or wrong stream key")
