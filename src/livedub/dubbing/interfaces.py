"""Small interfaces between the engine and its model backends: the three backend protocols and what they exchange.

Nothing here knows the wire: the STS maps its fragments to the engine's values (livedub.sts.pipeline).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from livedub.languages import UnsupportedLanguageError

if TYPE_CHECKING:
    from livedub.dubbing.translate.registry import TranslatorCapabilities
    from livedub.dubbing.tts.registry import TTSCapabilities

FloatAudio = npt.NDArray[np.float32]
"""Mono float32 PCM in [-1, 1]."""


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
    """A translator. It declares what it can do (`capabilities`, as in its registration): with `streaming`, it is
    also a `ClauseTranslator` and the engine speaks its clauses as they come."""

    name: str
    capabilities: TranslatorCapabilities

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str: ...


@runtime_checkable
class ClauseTranslator(Translator, Protocol):
    """A translator that gives its translation clause by clause as it makes it (the LLM, token by token), so that
    the first clause can be spoken while the rest is still being translated. It declares `streaming`."""

    def translate_clauses(
        self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT
    ) -> Iterator[str]: ...


@runtime_checkable
class TTSBackend(Protocol):
    """A voice backend. It declares what it can do (`capabilities`): with `speaking_rate`, `synthesize` takes a
    `speed` (> 1 faster) and the engine asks it for the rate; without, the engine time-stretches only."""

    name: str
    sample_rate: int
    capabilities: TTSCapabilities

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio: ...


class BackendError(RuntimeError):
    """A backend's failure that says whether trying again may help (`retryable`); any other exception of a
    backend is taken as possibly transient."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


__all__ = [
    "NO_CONTEXT",
    "ASRBackend",
    "BackendError",
    "ClauseTranslator",
    "FloatAudio",
    "TTSBackend",
    "Transcript",
    "TranslationContext",
    "Translator",
    "UnsupportedLanguageError",
]
