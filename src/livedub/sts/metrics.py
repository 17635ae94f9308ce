"""Prometheus metrics of the STS service (prefix `sts_`).

Each server app owns a `StsMetrics` with its own registry, so several apps (tests) can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from livedub.protocol import FragmentProcessed

PREFIX = "sts_"
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

# A 6 s fragment should take ~1.5 s; the tail covers slow CPUs and queueing behind other fragments.
_FRAGMENT_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.0, 30.0)
_STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_STAGES = ("asr", "translation", "tts")


class StsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.fragment_processing_seconds = Histogram(
            PREFIX + "fragment_processing_seconds",
            "Time from receiving a fragment to emitting its fragment:processed",
            buckets=_FRAGMENT_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            PREFIX + "stage_seconds",
            "Time spent per pipeline stage and fragment",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=self.registry,
        )
        self.fragments_inflight = Gauge(
            PREFIX + "fragments_inflight",
            "Fragments accepted and not yet answered with fragment:processed",
            registry=self.registry,
        )
        self.fragments_processed = Counter(
            PREFIX + "fragments_processed",
            "fragment:processed events emitted, by status",
            ["status"],
            registry=self.registry,
        )
        self.dubs = Counter(
            PREFIX + "dubs",
            "Dubs made, by translator (main, or fast under deadline pressure) and voice (usual, or the language's "
            "fast voice under deadline pressure)",
            ["translator", "voice"],
            registry=self.registry,
        )
        self.errors = Counter(
            PREFIX + "errors",
            "Errors by stage (protocol for rejected events) and error code",
            ["stage", "code"],
            registry=self.registry,
        )
        self.active_sessions = Gauge(PREFIX + "active_sessions", "Open stream sessions", registry=self.registry)
        self.connected_clients = Gauge(
            PREFIX + "connected_clients", "Connected Socket.IO clients", registry=self.registry
        )
        self.models_ready = Gauge(
            PREFIX + "models_ready", "1 once the models are loaded and warmed up", registry=self.registry
        )
        # Pre-create the label sets that a dashboard expects to see even before the first fragment.
        for stage in _STAGES:
            self.stage_seconds.labels(stage=stage)
        for status in ("success", "partial", "failed"):
            self.fragments_processed.labels(status=status)
        for translator in ("main", "fast"):
            for voice in ("usual", "fast"):
                self.dubs.labels(translator=translator, voice=voice)

    def observe_processed(self, result: FragmentProcessed, elapsed_s: float) -> None:
        self.fragment_processing_seconds.observe(elapsed_s)
        self.fragments_processed.labels(status=result.status.value).inc()
        timings = result.stage_timings
        for stage, ms in (("asr", timings.asr_ms), ("translation", timings.translation_ms), ("tts", timings.tts_ms)):
            if ms > 0:
                self.stage_seconds.labels(stage=stage).observe(ms / 1000.0)
        if result.error is not None:
            self.errors.labels(stage=result.error.stage, code=result.error.code.value).inc()
        meta = result.metadata
        if meta.translator is not None and meta.voice_tier is not None:
            self.dubs.labels(translator=meta.translator, voice=meta.voice_tier).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
