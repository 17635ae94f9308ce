"""Prometheus metrics of the media-service (prefix `media_service_worker_`, label `stream_id`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "media_service_worker_"

# One registry per process; tests may build their own with `WorkerMetrics(CollectorRegistry())`.
REGISTRY = CollectorRegistry(auto_describe=True)


class WorkerMetrics:
    """Every metric the workers, STS client and manager record. Labels: `stream_id` (+ the listed ones)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._register_sts()
        self._register_speech()
        self._register_languages()
        self._register_worker()

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(PREFIX + name, doc, ["stream_id", *labels], registry=self.registry)

    def _gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(PREFIX + name, doc, ["stream_id", *labels], registry=self.registry)

    def _register_sts(self) -> None:
        counter, gauge, registry = self._counter, self._gauge, self.registry
        self.segments_processed = counter("segments_processed", "Audio segments cut by the segmenter")
        self.sts_fragments_sent = counter("sts_fragments_sent", "Fragments sent to STS")
        self.sts_fragments_processed = counter(
            "sts_fragments_processed", "fragment:processed received, by STS status", "status"
        )
        self.sts_round_trip_seconds = Histogram(
            PREFIX + "sts_round_trip_seconds",
            "STS round trip per fragment (send -> fragment:processed)",
            ["stream_id"],
            buckets=(0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 20),
            registry=registry,
        )
        self.sts_inflight = gauge("sts_inflight", "Fragments sent to STS and not yet answered")
        self.circuit_breaker_state = gauge("circuit_breaker_state", "STS breaker: 0 closed, 1 half-open, 2 open")

    def _register_speech(self) -> None:
        counter, gauge, registry = self._counter, self._gauge, self.registry
        self.fallbacks = counter(
            "fallbacks", "Phrases with speech that kept the original voice, by reason (late, dropped, timeout, ...)",
            "reason",
        )  # fmt: skip
        self.speech_seconds = counter(
            "speech_seconds", "Seconds of input speech by outcome (dubbed | original)", "outcome"
        )
        self.speech_dubbed_ratio = gauge("speech_dubbed_ratio", "Share of the speech dubbed over the last minute")
        self.dub_schedule_lag_seconds = gauge(
            "dub_schedule_lag_seconds", "How late the last dub started against its place on the timeline (s)"
        )
        self.av_sync_delta_ms = gauge(
            "av_sync_delta_ms", "Output audio minus video timestamp at the last phrase start (ms)"
        )
        self.av_sync_delta_abs_ms = Histogram(
            PREFIX + "av_sync_delta_abs_ms",
            "|A/V sync delta| per phrase start (ms)",
            ["stream_id"],
            buckets=(1, 5, 10, 20, 40, 80, 120, 250, 500, 1000),
            registry=registry,
        )

    def _register_languages(self) -> None:
        """Per target language (label `language`); the unlabelled ones describe `out`, the first target."""
        counter, gauge = self._counter, self._gauge
        self.language_fallbacks = counter(
            "language_fallbacks", "Phrases with speech that kept the original voice, per target language and reason",
            "language", "reason",
        )  # fmt: skip
        self.language_speech_seconds = counter(
            "language_speech_seconds", "Seconds of input speech per target language by outcome (dubbed | original)",
            "language", "outcome",
        )  # fmt: skip
        self.language_dubbed_speech_seconds = counter(
            "language_dubbed_speech_seconds",
            "Seconds of dubbed speech per target language, by the tiers that made it: translator main | fast, voice"
            " usual | fast",
            "language", "translator", "voice_tier",
        )  # fmt: skip
        self.language_speech_dubbed_ratio = gauge(
            "language_speech_dubbed_ratio", "Share of the speech dubbed over the last minute, per target language",
            "language",
        )  # fmt: skip
        self.language_schedule_lag_seconds = gauge(
            "language_schedule_lag_seconds", "How late the last dub started against its place, per target language",
            "language",
        )  # fmt: skip
        self.language_dub_chunks = counter(
            "language_dub_chunks",
            "Dub chunks (fragment:chunk) per target language by outcome: started (a dub's first, placed), appended"
            " (right after what was placed), late_start (after a gap: the output had played past its join), dropped",
            "language", "outcome",
        )  # fmt: skip

    def _register_worker(self) -> None:
        counter, gauge = self._counter, self._gauge
        self.output_lag_seconds = gauge("output_lag_seconds", "How far the output runs behind the input (s)")
        self.errors = counter("errors", "Errors by type (no_audio, unsupported_codec, corrupt_packet, ...)", "type")
        self.pipeline_state = gauge(
            "pipeline_state", "1 for the worker's current state", "state"
        )  # states: starting, running, draining, stopped, failed
        self.video_packets = counter("video_packets", "Video packets copied to the output")
        self.audio_frames_out = counter("audio_frames_out", "AAC frames written to the output")

    def set_state(self, stream_id: str, state: str) -> None:
        for candidate in ("starting", "running", "draining", "stopped", "failed"):
            self.pipeline_state.labels(stream_id=stream_id, state=candidate).set(1 if candidate == state else 0)


METRICS = WorkerMetrics()
