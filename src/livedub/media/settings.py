"""media-service settings: environment variables (the seed's names where they exist) or a .env file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MediaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # HTTP API of the media-service.
    media_host: str = Field("0.0.0.0", validation_alias="MEDIA_HOST")
    media_port: int = Field(8080, validation_alias="MEDIA_PORT")

    # Where streams come in and go out. Input `{rtmp_base_url}/{stream_id}/in`, output `.../{stream_id}/out`.
    rtmp_base_url: str = Field("rtmp://127.0.0.1:1935/live", validation_alias="RTMP_BASE_URL")
    # Key a non-loopback publisher must pass as `?key=...` (checked by the on_publish hook); empty = no check.
    publish_key: str = Field("", validation_alias="PUBLISH_KEY")

    # STS service.
    sts_service_url: str = Field("http://127.0.0.1:3000", validation_alias="STS_SERVICE_URL")
    sts_api_key: str = Field("", validation_alias="STS_API_KEY")
    sts_audio_format: Literal["m4a", "pcm_s16le"] = Field("pcm_s16le", validation_alias="STS_AUDIO_FORMAT")
    sts_max_inflight: int = Field(3, ge=1, le=10, validation_alias="STS_MAX_INFLIGHT")
    sts_timeout_ms: int = Field(8000, ge=100, validation_alias="STS_TIMEOUT_MS")
    source_language: str = Field("en", validation_alias="WORKER_SOURCE_LANGUAGE")
    target_language: str = Field("es", validation_alias="WORKER_TARGET_LANGUAGE")
    voice_profile: str = Field("default", validation_alias="WORKER_VOICE_PROFILE")

    # Segmentation.
    segment_policy: Literal["fixed", "speech"] = Field("fixed", validation_alias="SEGMENT_POLICY")
    segment_duration_ms: int = Field(6000, ge=500, le=29000, validation_alias="SEGMENT_DURATION_MS")
    segment_min_ms: int = Field(1500, ge=300, validation_alias="SEGMENT_MIN_MS")
    segment_max_ms: int = Field(4000, ge=500, le=29000, validation_alias="SEGMENT_MAX_MS")

    # Output pacing: the delay line between input and output (must exceed segment length + STS p95).
    output_delay_ms: int = Field(10000, ge=0, validation_alias="OUTPUT_DELAY_MS")
    audio_sample_rate: int = Field(48000, validation_alias="AUDIO_SAMPLE_RATE")

    # Resilience.
    circuit_breaker_threshold: int = Field(5, ge=1, validation_alias="CIRCUIT_BREAKER_THRESHOLD")
    circuit_breaker_cooldown_ms: int = Field(10000, ge=100, validation_alias="CIRCUIT_BREAKER_COOLDOWN_MS")
    max_concurrent_streams: int = Field(4, ge=1, validation_alias="MAX_CONCURRENT_STREAMS")
    ingest_open_timeout_s: float = Field(10.0, validation_alias="INGEST_OPEN_TIMEOUT_S")
    ingest_read_timeout_s: float = Field(5.0, validation_alias="INGEST_READ_TIMEOUT_S")

    def input_url(self, stream_id: str) -> str:
        return f"{self.rtmp_base_url}/{stream_id}/in"

    def output_url(self, stream_id: str) -> str:
        return f"{self.rtmp_base_url}/{stream_id}/out"
