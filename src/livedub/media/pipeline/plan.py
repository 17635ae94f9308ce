"""A stream's plan: what its worker builds, decided once at its start and never changed while it runs.

The target languages (at least one; the first is also on `out`), the RTMP outputs of each, whether there is an HLS
presentation, and the delay line. The worker builds one lane per target from it (its dub track, its one AAC
encoder, its outputs); nothing downstream asks "which language is the first" again.

`StreamInputs` is what the plan is built from beyond the service-wide settings: the manager decides it at the
stream's start (the operator's target languages, else the settings') and hands it to the worker process as JSON,
which the child validates back into the same typed value (a list of codes end to end, never a comma string).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from livedub.media.settings import MediaSettings

LANGUAGE_CODE_PATTERN = r"^[a-z]{2,3}$"  # a target language as the operator page and a stream's inputs name it
LanguageCode = Annotated[str, StringConstraints(pattern=LANGUAGE_CODE_PATTERN)]  # `es`, `fra`


class StreamInputsError(ValueError):
    """A stream's inputs that do not parse: that stream's worker fails, naming the stream and the fault."""


def _faults(exc: ValidationError) -> str:
    """Pydantic's errors on one line: `targets.0: String should match pattern ...; ...`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


class StreamInputs(BaseModel):
    """A stream's own part of its plan, decided once at its start (the rest comes from the service's settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    targets: tuple[LanguageCode, ...] = Field(min_length=1)  # the first is also on `out`

    @field_validator("targets")
    @classmethod
    def _once_each(cls, targets: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({code for code in targets if targets.count(code) > 1})
        if repeated:
            raise ValueError(f"target languages named twice: {', '.join(repeated)}")
        return targets

    @classmethod
    def of_settings(cls, settings: MediaSettings) -> StreamInputs:
        """The service's defaults: WORKER_TARGET_LANGUAGES, else WORKER_TARGET_LANGUAGE."""
        try:
            return cls(targets=tuple(settings.targets))
        except ValidationError as exc:
            raise StreamInputsError(f"WORKER_TARGET_LANGUAGES {settings.targets}: {_faults(exc)}") from None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, stream_id: str, text: str) -> StreamInputs:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise StreamInputsError(f"stream {stream_id}: malformed stream inputs {text!r}: {_faults(exc)}") from None


@dataclass(frozen=True)
class RtmpOutput:
    language: str  # the target language it carries
    name: str  # `out` or the language: the key of /v1/streams → outputs.rtmp
    url: str


@dataclass(frozen=True)
class StreamPlan:
    stream_id: str
    source_language: str
    targets: tuple[str, ...]
    rtmp: tuple[RtmpOutput, ...]
    hls: bool
    delay_s: float

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError(f"stream {self.stream_id}: a plan needs at least one target language")
        unknown = {out.language for out in self.rtmp} - set(self.targets)
        if unknown:
            raise ValueError(f"stream {self.stream_id}: outputs of languages not dubbed: {sorted(unknown)}")

    @classmethod
    def for_stream(cls, stream_id: str, settings: MediaSettings) -> StreamPlan:
        """The plan of the settings' own target languages."""
        return cls.build(stream_id, settings, StreamInputs.of_settings(settings))

    @classmethod
    def build(cls, stream_id: str, settings: MediaSettings, inputs: StreamInputs) -> StreamPlan:
        """`out` carries the first target; every target has `out/<lang>`."""
        targets = inputs.targets
        rtmp = [RtmpOutput(targets[0], "out", settings.output_url(stream_id))]
        rtmp += [RtmpOutput(lang, lang, settings.output_url(stream_id, lang)) for lang in targets]
        return cls(
            stream_id=stream_id,
            source_language=settings.source_language,
            targets=targets,
            rtmp=tuple(rtmp),
            hls=settings.hls_enabled,
            delay_s=settings.output_delay_ms / 1000,
        )

    def outputs_of(self, language: str) -> list[RtmpOutput]:
        return [out for out in self.rtmp if out.language == language]

    def rtmp_urls(self) -> dict[str, str]:
        """Output name (`out`, each language) → URL."""
        return {out.name: out.url for out in self.rtmp}
