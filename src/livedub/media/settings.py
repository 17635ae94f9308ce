"""media-service settings: environment variables (the seed's names where they exist) or a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from livedub.paths import runtime_dir


class MediaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # HTTP API of the media-service.
    media_host: str = Field(
        "127.0.0.1",
        validation_alias="MEDIA_HOST",
        description="Address the media-service binds to (`livedub media --public`: 0.0.0.0).",
    )
    media_port: int = Field(8080, validation_alias="MEDIA_PORT", description="Port of /health, /metrics and the hooks.")
    media_hook_secret: str = Field(
        "",
        validation_alias="MEDIA_HOOK_SECRET",
        description="Secret a media server on another host (MediaMTX container) sends with its hooks, as header"
        " `X-Livedub-Hook-Secret` or `?hook_secret=` in the hook URL; empty = hooks only from loopback.",
    )
    media_api_token: str = Field(
        "",
        validation_alias="MEDIA_API_TOKEN",
        description="Token (`Authorization: Bearer ...`) that /v1/streams and /metrics ask of clients not on"
        " loopback; empty = loopback only. /health is open.",
    )

    # Where streams come in and go out.
    rtmp_base_url: str = Field(
        "rtmp://127.0.0.1:1935/live",
        validation_alias="RTMP_BASE_URL",
        description="Media server application URL: input `<base>/<stream_id>/in`, output `<base>/<stream_id>/out`.",
    )
    media_server_stat_url: str = Field(
        "http://127.0.0.1:8089/stat",
        validation_alias="MEDIA_SERVER_STAT_URL",
        description="nginx-rtmp `/stat`: on_publish answers once the new worker is listed there as a player.",
    )
    publish_join_wait_ms: int = Field(
        5000,
        ge=0,
        validation_alias="PUBLISH_JOIN_WAIT_MS",
        description="Longest on_publish waits for the worker to join, so it gets the stream from its first packet.",
    )
    publish_key: str = Field(
        "",
        validation_alias="PUBLISH_KEY",
        description="Key a non-loopback publisher must pass as `?key=...`; empty = only loopback may publish.",
    )

    # STS service.
    sts_service_url: str = Field(
        "http://127.0.0.1:3000", validation_alias="STS_SERVICE_URL", description="Socket.IO URL of the STS service."
    )
    sts_api_key: str = Field("", validation_alias="STS_API_KEY", description="Key sent to STS at connect, if it asks.")
    sts_audio_format: Literal["m4a", "pcm_s16le"] = Field(
        "pcm_s16le", validation_alias="STS_AUDIO_FORMAT", description="Audio format of fragments sent to STS."
    )
    sts_max_inflight: int = Field(
        3, ge=1, le=10, validation_alias="STS_MAX_INFLIGHT", description="Fragments in flight to STS per stream."
    )
    sts_timeout_ms: int = Field(
        8000, ge=100, validation_alias="STS_TIMEOUT_MS", description="Deadline per fragment; late dubs are replaced."
    )
    source_language: str = Field("en", validation_alias="WORKER_SOURCE_LANGUAGE", description="Language spoken in.")
    target_language: str = Field(
        "es",
        validation_alias="WORKER_TARGET_LANGUAGE",
        description="Language dubbed into (one target; WORKER_TARGET_LANGUAGES names several).",
    )
    target_languages: str = Field(
        "",
        validation_alias="WORKER_TARGET_LANGUAGES",
        description="Languages dubbed into at once, comma-separated (`es,fr`): RTMP `out/<lang>` each, `out` the"
        " first, one HLS audio rendition each; empty = WORKER_TARGET_LANGUAGE alone.",
    )
    voice_profile: str = Field("default", validation_alias="WORKER_VOICE_PROFILE", description="Voice asked of STS.")

    # Outputs beside RTMP: the HLS presentation and the caption/phrase logs.
    hls_enabled: bool = Field(
        True,
        validation_alias="MEDIA_HLS",
        description="Write each stream's HLS presentation (video once, the original + every target as audio"
        " renditions, WebVTT captions), served at `/hls/<stream_id>/master.m3u8`.",
    )
    hls_dir: str = Field(
        "",
        validation_alias="MEDIA_HLS_DIR",
        description="Directory of the HLS presentations and caption logs (`<dir>/<stream_id>/`); empty ="
        " `<LIVEDUB_HOME>/run/hls`.",
    )
    monitor_token: str = Field(
        "",
        validation_alias="MONITOR_TOKEN",
        description="Bearer token for the operator page's controls (stop/start a worker, target languages); "
        "empty: the page at /ui/ is read-only and only served to loopback.",
    )

    # Segmentation.
    segment_policy: Literal["fixed", "speech"] = Field(
        "speech",
        validation_alias="SEGMENT_POLICY",
        description="`speech` (phrase streaming): cut at pauses (Silero VAD) within min/max and send each phrase as"
        " it ends; `fixed`: cut every SEGMENT_DURATION_MS (the seed's behaviour).",
    )
    segment_duration_ms: int = Field(
        6000, ge=500, le=29000, validation_alias="SEGMENT_DURATION_MS", description="Fragment length, `fixed` policy."
    )
    segment_min_ms: int = Field(
        1000, ge=300, validation_alias="SEGMENT_MIN_MS", description="Shortest phrase, `speech` policy."
    )
    segment_max_ms: int = Field(
        4000,
        ge=500,
        le=29000,
        validation_alias="SEGMENT_MAX_MS",
        description="Longest phrase, `speech` policy (cut at the quietest point when no pause comes).",
    )
    segment_pause_ms: int = Field(
        500,
        ge=100,
        le=3000,
        validation_alias="SEGMENT_PAUSE_MS",
        description="Pause that ends a phrase, `speech` policy: long enough to fall between sentences, not words.",
    )
    segment_vad_threshold: float = Field(
        0.35,
        gt=0.0,
        lt=1.0,
        validation_alias="SEGMENT_VAD_THRESHOLD",
        description="Speech probability (Silero VAD) under which audio counts as pause; lower keeps speech over"
        " music whole.",
    )
    segment_min_speech_ms: int = Field(
        200,
        ge=0,
        validation_alias="SEGMENT_MIN_SPEECH_MS",
        description="A phrase with less speech than this (VAD) keeps its original audio without asking STS.",
    )

    # Output pacing.
    output_delay_ms: int = Field(
        6000,
        ge=0,
        validation_alias="OUTPUT_DELAY_MS",
        description="Delay line between input and output: how far the output trails the input. A dub may start up"
        " to DUB_MAX_LATE_MS after its place, so phrase + STS time must fit in the sum. 6 s dubs all the speech"
        " on 2 CPU cores with the default models (4 s: about 60 %; docs/benchmarks-live.md).",
    )
    dub_max_late_ms: int = Field(
        2000,
        ge=0,
        validation_alias="DUB_MAX_LATE_MS",
        description="Longest a dub may start after its phrase's place on the output; later dubs are dropped.",
    )
    dub_catch_up_max_speedup: float = Field(
        1.3,
        ge=1.0,
        le=2.0,
        validation_alias="DUB_CATCH_UP_MAX_SPEEDUP",
        description="Largest speed-up of a late or queued dub to get back on schedule (FFmpeg atempo).",
    )
    dub_overrun_ms: int = Field(
        3000,
        ge=0,
        le=60000,
        validation_alias="DUB_OVERRUN_MS",
        description="How far past its phrase a dub may run (STS then needs less speed-up); 0: confined to it.",
    )
    background_mode: Literal["duck", "separate"] = Field(
        "duck",
        validation_alias="BACKGROUND_MODE",
        description="Under a dub: `duck` plays the original at DUCK_GAIN_DB; `separate` plays the original minus its"
        " speech (DeepFilterNet3). Where no dub plays the original is at full level.",
    )
    duck_gain_db: float = Field(
        -15.0, le=0.0, validation_alias="DUCK_GAIN_DB", description="Level of the original under a dub, `duck` mode."
    )
    separate_bed_gain_db: float = Field(
        -6.0,
        le=0.0,
        validation_alias="SEPARATE_BED_GAIN_DB",
        description="Level of the separated bed under a dub, `separate` mode (at 0 dB DeepFilterNet3 leaves the"
        " original voice about 9 dB under the dub; at -6 dB, 15 dB, as ducking does, with 8 dB more music).",
    )
    duck_fade_ms: int = Field(
        50, ge=1, le=1000, validation_alias="DUCK_FADE_MS", description="Fade into and out of a dub's background."
    )
    audio_sample_rate: int = Field(
        48000, validation_alias="AUDIO_SAMPLE_RATE", description="Sample rate of the output audio."
    )

    # Resilience.
    circuit_breaker_threshold: int = Field(
        5, ge=1, validation_alias="CIRCUIT_BREAKER_THRESHOLD", description="Consecutive STS failures that open it."
    )
    circuit_breaker_cooldown_ms: int = Field(
        10000, ge=100, validation_alias="CIRCUIT_BREAKER_COOLDOWN_MS", description="Open time before a trial fragment."
    )
    max_concurrent_streams: int = Field(
        4, ge=1, validation_alias="MAX_CONCURRENT_STREAMS", description="Workers at once; more publishers are refused."
    )
    ingest_open_timeout_s: float = Field(
        10.0, validation_alias="INGEST_OPEN_TIMEOUT_S", description="Time allowed to open the input stream."
    )
    ingest_read_timeout_s: float = Field(
        5.0, validation_alias="INGEST_READ_TIMEOUT_S", description="Silence on the input that ends the stream."
    )

    def input_url(self, stream_id: str) -> str:
        return f"{self.rtmp_base_url}/{stream_id}/in"

    def output_url(self, stream_id: str, language: str | None = None) -> str:
        """`out` (the first target), or `out/<language>`."""
        suffix = f"/{language}" if language else ""
        return f"{self.rtmp_base_url}/{stream_id}/out{suffix}"

    @property
    def targets(self) -> list[str]:
        """The target languages, first = the one on `out` (WORKER_TARGET_LANGUAGES, else WORKER_TARGET_LANGUAGE)."""
        listed = [code.strip().lower() for code in self.target_languages.split(",") if code.strip()]
        return list(dict.fromkeys(listed)) or [self.target_language]

    def hls_root(self) -> Path:
        return Path(self.hls_dir) if self.hls_dir else runtime_dir() / "hls"

    def stream_dir(self, stream_id: str) -> Path:
        """Where a stream's HLS presentation and its captions.jsonl / phrases.jsonl are written."""
        return self.hls_root() / stream_id
