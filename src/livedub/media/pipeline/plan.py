"""A stream's plan: what its worker builds, decided once at its start and never changed while it runs.

The target languages (at least one; the first is also on `out`), the RTMP outputs of each, whether there is an HLS
presentation, and the delay line. The worker builds one lane per target from it (its dub track, its one AAC
encoder, its outputs); nothing downstream asks "which language is the first" again.
"""

from __future__ import annotations

from dataclasses import dataclass

from livedub.media.settings import MediaSettings


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
        """`out` carries the first target; every target has `out/<lang>`."""
        targets = tuple(settings.targets)
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
