"""Small interfaces between the STS server, its pipeline and the model backends.

The server only knows `FragmentProcessor`; the pipeline only knows the three backend protocols.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from livedub.dubbing.deadline import NO_DEADLINE, Deadline
from livedub.protocol import DubChunk, ErrorCode, FragmentData, FragmentProcessed, StreamConfig

FloatAudio = npt.NDArray[np.float32]
"""Mono float32 PCM in [-1, 1]."""


class UnsupportedLanguageError(ValueError):
    """The language pair has no configured backends (maps to UNSUPPORTED_LANGUAGE)."""

    code = ErrorCode.UNSUPPORTED_LANGUAGE


class InvalidAudioError(ValueError):
    """Audio that does not decode or does not match its declared format (INVALID_AUDIO_FORMAT)."""

    code = ErrorCode.INVALID_AUDIO_FORMAT


@dataclass
class Transcript:
    text: str
    language: str
    # (start_s, end_s, text) per recognised segment.
    segments: list[tuple[float, float, str]] = field(default_factory=list)


@runtime_checkable
class ASRBackend(Protocol):
    name: str
    sample_rate: int  # what `transcribe` expects (16 kHz for Whisper)

    def transcribe(self, audio: FloatAudio, language: str) -> Transcript: ...


@dataclass(frozen=True)
class TranslationContext:
    """What a translator knows beyond the text: the stream's last phrases in this direction and its glossary.

    `previous`: (source text, its translation) of the phrases just before, oldest first (pronouns, gender and terms
    stay consistent across phrases). `glossary`: (term, its required translation) pairs for this direction; a term
    whose translation is itself is kept as it is (a brand, a name)."""

    previous: tuple[tuple[str, str], ...] = ()
    glossary: tuple[tuple[str, str], ...] = ()


NO_CONTEXT = TranslationContext()


@runtime_checkable
class Translator(Protocol):
    name: str

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str: ...


@runtime_checkable
class ClauseTranslator(Translator, Protocol):
    """A translator that gives its translation clause by clause as it makes it (the LLM, token by token), so that
    the first clause can be spoken while the rest is still being translated."""

    def translate_clauses(
        self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT
    ) -> Iterator[str]: ...


@runtime_checkable
class TTSBackend(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str, language: str, voice: str = "default") -> FloatAudio: ...


@runtime_checkable
class FragmentProcessor(Protocol):
    """What the STS server runs per fragment. Blocking and CPU-bound: the server calls it off the event loop.

    `process` never raises for bad audio or a failing stage: it returns a `FragmentProcessed` with
    status `failed` and an `error` instead.
    """

    def check_languages(self, source: str, target: str) -> None:
        """Raise UnsupportedLanguageError if the pair cannot be served."""

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        """Dub one fragment. Work that cannot be back before `deadline` stops before its next stage and is answered
        at once with status failed, error TIMEOUT (stage `timeout`, retryable)."""
        ...

    def process_each(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: Deadline = NO_DEADLINE,
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> Iterator[FragmentProcessed]:
        """One answer per target of `config.targets`, each yielded as soon as it is ready (same rules as
        `process`); `on_chunk` takes each dub's chunks as they are made, before its answer. Optional: a processor
        without it answers the main target only (`answers_of`)."""
        ...

    def warmup(self) -> None:
        """Load every model and run one tiny inference, so the first fragment is not slow."""

    def describe(self) -> dict[str, Any]:
        """Model names and status, for /health and `stream:ready` capabilities."""


def answers_of(
    processor: FragmentProcessor,
    fragment: FragmentData,
    config: StreamConfig,
    deadline: Deadline = NO_DEADLINE,
    on_chunk: Callable[[DubChunk], object] | None = None,
) -> Iterator[FragmentProcessed]:
    """The processor's answers for every target, each stamped with its `target_language`; with `on_chunk`, the
    dubs' chunks as they are made (`config.dub_chunks`; a processor without chunks sends none)."""
    each = getattr(processor, "process_each", None)
    if each is None:
        answers: Iterator[FragmentProcessed] = iter([processor.process(fragment, config, deadline)])
    elif on_chunk is not None:  # only for sessions that asked for chunks: a processor of ours
        answers = each(fragment, config, deadline, on_chunk=on_chunk)
    else:
        answers = each(fragment, config, deadline)
    for answer in answers:
        yield (
            answer if answer.target_language else answer.model_copy(update={"target_language": config.target_language})
        )
