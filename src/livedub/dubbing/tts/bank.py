"""Several voices per language, each spoken by its backend: the engine's one way to synthesise.

    bank = VoiceBank({"en": [(joe, piper), (alpha, kokoro)], "fr": [(kumo, kokoro)]})
    bank.voices("en")                        # [VoiceRef(piper, piper-en_US-joe-medium, male), ...]
    voiced = bank.synthesize("Hello.", "en", bank.default("en"), speed=1.1)
    voiced.audio, voiced.sample_rate

The voices of a language are the table's (livedub.languages), or those the settings pin (STS_TTS_VOICES).
A speaker-following picker (livedub.dubbing.voices) chooses among `voices(language)`. A language may also have a
fast voice (`fast_voice(language, like)`): not one to pick, the stand-in when the usual ones cannot be on time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from livedub.dubbing.interfaces import FloatAudio, TTSBackend
from livedub.dubbing.tts.registry import TTSCapabilities
from livedub.languages import VoiceRef


@dataclass(frozen=True)
class Voiced:
    """Synthesised speech: mono float audio at the backend's rate, and the voice that spoke it."""

    audio: FloatAudio
    sample_rate: int
    voice: VoiceRef
    speed: float  # the rate asked of the backend (1.0 when it has no rate control)


class UnknownVoiceError(LookupError):
    """A voice that the bank does not hold for the language (a pin or a picker's mistake)."""


ANY_LANGUAGE = "*"  # a bank entry for every language (a single injected backend: tests, benchmarks)


class VoiceBank:
    """`{language: [(voice, backend), ...]}`, best voice first; `ANY_LANGUAGE` serves languages not named."""

    def __init__(
        self,
        voices: Mapping[str, Sequence[tuple[VoiceRef, TTSBackend]]],
        fast: Mapping[str, Sequence[tuple[VoiceRef, TTSBackend]]] | None = None,
    ) -> None:
        empty = [language for language, entries in voices.items() if not entries]
        if empty:
            raise ValueError(f"no voice for languages {empty}")
        self._voices = {language: tuple(ref for ref, _ in entries) for language, entries in voices.items()}
        self._backends = {(language, ref): backend for language, entries in voices.items() for ref, backend in entries}
        fast = {language: entries for language, entries in (fast or {}).items() if entries and language in self._voices}
        self._fast = {language: tuple(ref for ref, _ in entries) for language, entries in fast.items()}
        for language, entries in fast.items():
            for ref, backend in entries:
                self._backends.setdefault((language, ref), backend)

    @classmethod
    def of(cls, backends: Mapping[str, TTSBackend]) -> VoiceBank:
        """One voice per language: each backend's default (injected backends of tests and benchmarks)."""
        return cls({language: [(VoiceRef(backend.name, "default"), backend)] for language, backend in backends.items()})

    def _key(self, language: str) -> str:
        if language in self._voices:
            return language
        if ANY_LANGUAGE in self._voices:
            return ANY_LANGUAGE
        raise UnknownVoiceError(f"no voice speaks {language!r}")

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._voices)

    def voices(self, language: str) -> list[VoiceRef]:
        """The voices that speak `language`, best understood first."""
        return list(self._voices[self._key(language)])

    def default(self, language: str) -> VoiceRef:
        return self.voices(language)[0]

    def fast_voice(self, language: str, like: VoiceRef | None = None) -> VoiceRef | None:
        """The cheap stand-in voice of `language`, if it has one: the one of `like`'s gender where there is one."""
        voices = self._fast.get(self._key(language), ())
        same = [ref for ref in voices if like is not None and ref.gender == like.gender]
        return (same or [*voices, None])[0]

    def fast_voices(self, language: str) -> list[VoiceRef]:
        return list(self._fast.get(self._key(language), ()))

    def backend(self, language: str, voice: VoiceRef | str | None = None) -> TTSBackend:
        return self._backends[(self._key(language), self.resolve(language, voice))]

    def capabilities(self, language: str, voice: VoiceRef | str | None = None) -> TTSCapabilities:
        """What the voice's backend declares (its rate control decides between a rate and a time-stretch)."""
        return self.backend(language, voice).capabilities

    def resolve(self, language: str, voice: VoiceRef | str | None = None) -> VoiceRef:
        """The voice to use: the default for None/"default", else one of the language's voices (a VoiceRef or its
        `backend:voice` text)."""
        if voice is None or voice in {"default", ""}:
            return self.default(language)
        for ref in [*self.voices(language), *self.fast_voices(language)]:
            if ref == voice or str(ref) == str(voice):
                return ref
        raise UnknownVoiceError(
            f"voice {voice} does not speak {language!r}; have {[str(v) for v in self.voices(language)]}"
        )

    def synthesize(self, text: str, language: str, voice: VoiceRef | str | None = None, speed: float = 1.0) -> Voiced:
        """`speed` > 1 speaks faster; a backend without rate control ignores it (the caller time-stretches)."""
        ref = self.resolve(language, voice)
        backend = self.backend(language, ref)
        if self.capabilities(language, ref).speaking_rate and speed != 1.0:
            raw = backend.synthesize(text, language, ref.voice, speed=speed)
        else:
            raw, speed = backend.synthesize(text, language, ref.voice), 1.0
        return Voiced(np.asarray(raw, dtype=np.float32), int(backend.sample_rate), ref, speed)

    def names(self) -> dict[str, list[str]]:
        """`backend:voice` per language (describe(), /health); a fast voice is marked `(fast)`."""
        names = {language: [str(ref) for ref in refs] for language, refs in self._voices.items()}
        for language, refs in self._fast.items():
            names[language] += [f"{ref} (fast)" for ref in refs]
        return names


__all__ = ["ANY_LANGUAGE", "UnknownVoiceError", "VoiceBank", "Voiced"]
