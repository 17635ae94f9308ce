"""Who may call which endpoint of the media-service HTTP API.

- Hooks (`/v1/nginx/*`, `/v1/mediamtx/*`) start and stop workers: only the media server may call them. The embedded
  nginx-rtmp calls from loopback; a media server on another host (MediaMTX in its own container) proves itself with
  MEDIA_HOOK_SECRET, as header `X-Livedub-Hook-Secret` or query parameter `hook_secret`.
- Control and observation (`/v1/streams`, `/metrics`, `/hls/`, anything else): loopback, or `Authorization: Bearer
  MEDIA_API_TOKEN` (or MONITOR_TOKEN, the operator's token).
- `/health` is open (container health checks, load balancers); it names no stream. The operator page's files
  (`/ui/`) decide for themselves (media/operator.py: loopback, or a remote operator once MONITOR_TOKEN is set); the
  data they show goes through the rule above.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from livedub.media.hooks import is_loopback

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
