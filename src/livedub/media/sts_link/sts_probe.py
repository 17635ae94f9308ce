"""Is the STS service up and ready? Asked by /health and by the operator page."""

from __future__ import annotations

import time
from typing import Any

import httpx


class StsProbe:
    """Is the STS service up and ready? `GET {STS_SERVICE_URL}/health`, cached for a few seconds."""

    def __init__(self, base_url: str, cache_s: float = 5.0, timeout_s: float = 1.0) -> None:
        self.url = base_url.rstrip("/") + "/health"
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._checked_at = float("-inf")
        self._last: dict[str, Any] = {}

    async def check(self) -> dict[str, Any]:
        if time.monotonic() - self._checked_at < self.cache_s:
            return self._last
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.get(self.url)
            # STS answers 503 while its models load: reachable, not ready yet.
            result: dict[str, Any] = {
                "reachable": True,
                "ready": response.status_code == 200,
                "http_status": response.status_code,
            }
        except httpx.HTTPError as exc:
            result = {"reachable": False, "ready": False, "error": f"{type(exc).__name__}: {exc}"}
        self._checked_at, self._last = time.monotonic(), {"url": self.url, **result}
        return self._last
