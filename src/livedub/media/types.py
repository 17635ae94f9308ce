"""Typed values passed between the media-service stages (ingest -> segment -> STS -> align -> mux -> publish)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from livedub.deadline import NO_DEADLINE, Deadline

Pcm = npt.NDArray[np.int16]
"""Signed 16-bit PCM, shape (samples, channels): row-major, i.e. interleaved."""


@dataclass(frozen=True)
class AudioSegment:
    """A slot of the input's audio. `start_sample` counts samples at `sample_rate` since the stream's first audio."""

    stream_id: str
    sequence_number: int
    start_sample: int
    pcm: Pcm
    sample_rate: int
    speech_ms: float | None = None  # speech the VAD found in it; None: not measured (the fixed policy)
    speech_start_ms: float | None = None  # where the VAD found its first speech (from the segment start)
    deadline: Deadline = NO_DEADLINE  # by when its dub is still useful (the muxer's, set by the worker)

    @property
    def channels(self) -> int:
        return int(self.pcm.shape[1])

    @property
    def num_samples(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def duration_ms(self) -> float:
        return 1000.0 * self.num_samples / self.sample_rate

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.num_samples

    @property
    def speech_s(self) -> float:
        """Seconds of speech to dub in it (the whole segment when the VAD did not measure it)."""
        return (self.duration_ms if self.speech_ms is None else self.speech_ms) / 1000.0


class DubStatus(StrEnum):
    DUBBED = "dubbed"  # STS success or partial
    FALLBACK = "fallback"  # original audio used for the slot


@dataclass
class DubOutcome:
    """What the STS client returns for a segment. `pcm` is None when the original audio must fill the slot."""

    sequence_number: int
    status: DubStatus
    pcm: Pcm | None = None  # mono, at the segment's sample rate; length may differ a little (the aligner fits it)
    reason: str | None = None  # for fallbacks: timeout | failed | circuit_open | sts_unavailable | ...
    sts_status: str | None = None  # success | partial | failed, as STS reported
    transcript: str | None = None
    translated_text: str | None = None
    round_trip_s: float | None = None
    extra: dict[str, object] = field(default_factory=dict)
    language: str | None = None  # the target language of this dub: every DubClient names it (the worker refuses
    # an outcome without one); None only while a client builds it
    voice: str | None = None  # the voice that spoke the dub (STS metadata)
    speech_start_ms: float | None = None  # where STS's ASR found speech, from the fragment's start
    speech_end_ms: float | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)  # asr, translation, tts (STS metadata)
    translator: str | None = None  # which translator tier made the words: main | fast (STS metadata)
    voice_tier: str | None = None  # which voice tier spoke them: usual | fast (STS metadata)
    chunks: int = 0  # chunks of this dub handed on before it (`on_chunk`): its audio already went out in pieces


@dataclass(frozen=True)
class DubChunkAudio:
    """A piece of a dub handed on as soon as the STS made it (`fragment:chunk`), before the dub's `DubOutcome`.

    The pieces of one segment and language come in `index` order, each decoded like a whole dub (mono, at the
    segment's sample rate); `offset_samples` is where the piece starts from the segment's start. The outcome
    that follows carries the whole dub again (same audio) and its metadata: a worker that played the pieces does
    not play it again."""

    sequence_number: int
    language: str
    index: int
    offset_samples: int
    pcm: Pcm
    text: str = ""  # the words it says (a clause of the translation)
    final: bool = False  # the dub's last piece


OnOutcome = Callable[[DubOutcome], None]
OnChunk = Callable[[DubChunkAudio], None]


class DubClient(Protocol):
    """The STS client as the worker sees it (`StsClient`), built for one stream and its plan's target languages.

    `dub_targets` calls `on_outcome` once per target language (`outcome.language` set), each as soon as that target's
    dub or fallback is known, in whatever order they come: a slow target never holds back another. It returns when
    every target is decided and never raises: failures come back as fallbacks (a target the STS does not dub, e.g.
    a seed STS's second language, as `target_unsupported`).

    `on_chunk` (optional): where the STS streams dubs (`dub_chunks`), each target's dub also comes in pieces as it is
    made, all of them before that target's outcome."""

    async def start(self) -> None: ...

    async def dub_targets(
        self, segment: AudioSegment, on_outcome: OnOutcome, on_chunk: OnChunk | None = None
    ) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, object]: ...  # the STS link as /v1/streams shows it (`ready`, ...)
