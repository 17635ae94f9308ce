"""Prometheus text parsing (prometheus_client's parser) with the queries the E2E test needs."""

from __future__ import annotations

from livedub.observe import Metrics, Sample
from livedub.stack import http_get

__all__ = ["Metrics", "Sample", "fetch_metrics", "worker_series"]

MEDIA_PREFIX = "media_service_worker_"


def fetch_metrics(base_url: str) -> Metrics:
    status, body = http_get(base_url.rstrip("/") + "/metrics", timeout=3)
    if status != 200:
        raise RuntimeError(f"{base_url}/metrics answered {status}")
    return Metrics.parse(body)


def worker_series(metrics: Metrics, stream_id: str) -> list[Sample]:
    """The media-service's samples labelled with `stream_id`."""
    return [s for s in metrics.samples if s.name.startswith(MEDIA_PREFIX) and s.labels.get("stream_id") == stream_id]
