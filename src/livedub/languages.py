"""The languages livedub dubs from and into: one row per language, the only place that knows about a language.

A row gives the names, the ASR code, which translators to prefer, the voices that speak it (measured by round-trip
intelligibility: bench/tts_languages_bench.py, docs/benchmarks-languages.md; the first is the default), the
sentence the LLM sees as its one-shot example (the same sentence in every language, so any pair has an example),
a warm-up sentence of a few seconds, and the espeak-ng voice that gives its IPA (Kokoro, Piper, espeak-ng).

Adding a language is one row here (plus, if none of the shipped voices speaks it well, a voice model).

    check_pair("en", "fr")          # ok
    check_pair("en", "ru")          # UnsupportedLanguageError
    LANGUAGES["fr"].native_name     # "Français"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Gender = Literal["female", "male", "unknown"]


class UnsupportedLanguageError(ValueError):
    """A language (or pair) that the table does not hold, or that no configured backend serves (the STS answers
    it with UNSUPPORTED_LANGUAGE)."""


@dataclass(frozen=True)
class VoiceRef:
    """One stock voice: the TTS backend that speaks it and that backend's name for it."""

    backend: str  # "piper", "kokoro", "pico", "espeak-ng" (livedub.dubbing.tts.registry)
    # piper: the voice model (cache name or .onnx path); kokoro: a style in the voices npz; pico: its lingware
    # (`es-ES`, `+low` lower); espeak-ng: its voice
    voice: str
    gender: Gender = "unknown"

    def __str__(self) -> str:
        return f"{self.backend}:{self.voice}"

    @classmethod
    def parse(cls, text: str, gender: Gender = "unknown") -> VoiceRef:
        """`backend:voice` (e.g. `espeak-ng:fr-fr+f3`, `kokoro:jf_alpha`)."""
        backend, sep, voice = text.strip().partition(":")
        if not sep or not backend or not voice:
            raise ValueError(f"voice {text!r} is not backend:voice (e.g. kokoro:jf_alpha)")
        return cls(backend.strip(), voice.strip(), gender)


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-1, as in the protocol's source_language / target_language
    name: str  # English name (LLM prompts, logs)
    native_name: str  # for people (player menus, operator page)
    whisper: str  # Whisper's language code
    translators: tuple[str, ...]  # preferred translators into this language, best first (livedub.dubbing.translate)
    # Voices understood well enough, best first (the first is the default): round-trip WER (Whisper on 10-20
    # prompts) within max(1.5 x the best, the best + 10 points) and, since speaker matching picks among them all,
    # not more than 5 points worse than the best (French keeps two Kokoro voices below both: see its row); at most
    # four, a female and a male one where one passes; WER within one word of each other: the cheaper voice first.
    # Figures: docs/benchmarks-languages.md.
    voices: tuple[VoiceRef, ...]
    example: str  # "Could you tell me where the train station is?": the LLM's one-shot example for any pair
    warmup: str  # a realistic sentence of a few seconds (engine warm-up)
    espeak: str  # espeak-ng voice / IPA language (phonemizer)
    # A language's fast voice (the stand-in for a phrase the usual voices could not speak in time) is declared by
    # the backend that speaks it: livedub.dubbing.tts.registry.FastVoices (Pico: es, fr, it; Piper: en).


_EN = "Could you tell me where the train station is?"

LANGUAGES: dict[str, Language] = {
    row.code: row
    for row in (
        Language(
            code="en",
            name="English",
            native_name="English",
            whisper="en",
            translators=("llm", "apertium"),
            voices=(  # WER mean 0.9 % (0.4 % kumo: one word in 10 prompts; Piper costs 1/4.5 of the CPU)
                VoiceRef("piper", "piper-en_US-joe-medium", "male"),
                VoiceRef("kokoro", "jm_kumo", "male"),  # 0.4 %
                VoiceRef("kokoro", "jf_alpha", "female"),  # 3.8 %
                VoiceRef("kokoro", "jf_gongitsune", "female"),  # 3.8 %
            ),
            example=_EN,
            warmup="Thank you for calling. Please leave your message after the tone, and we will call you back.",
            espeak="en-us",
        ),
        Language(
            code="es",
            name="Spanish",
            native_name="Español",
            whisper="es",
            translators=("llm", "apertium"),
            voices=(  # WER mean 1.9 % (20 prompts; jf_alpha, 7.2 %, dropped: more than the best + 5 points)
                VoiceRef("kokoro", "jm_kumo", "male"),
                VoiceRef("kokoro", "jf_gongitsune", "female"),  # 2.5 %
                VoiceRef("kokoro", "jf_nezumi", "female"),  # 3.2 %
                VoiceRef("kokoro", "jf_tebukuro", "female"),  # 6.8 %
            ),
            example="¿Podría decirme dónde está la estación de tren?",
            warmup="Gracias por llamar. Por favor, deje su mensaje después del tono y le devolveremos la llamada.",
            espeak="es",
        ),
        Language(
            code="fr",
            name="French",
            native_name="Français",
            whisper="fr",
            translators=("llm", "apertium"),
            voices=(  # WER mean 15.7 % (20 prompts; the human recordings 16.2 %, espeak-ng 95 %)
                VoiceRef("pico", "fr-FR", "female"),
                VoiceRef("pico", "fr-FR+low", "male"),  # 16.2 %
                # Kokoro's Japanese styles speak French far worse (jf_gongitsune 38.8 %, jm_kumo 41.7 %, jf_nezumi
                # 49.7 %): speaker matching chooses only among voices understood about as well as the best.
            ),
            example="Pourriez-vous me dire où se trouve la gare ?",
            warmup="Merci de votre appel. Veuillez laisser votre message après le bip et nous vous rappellerons.",
            espeak="fr-fr",
        ),
        Language(
            code="it",
            name="Italian",
            native_name="Italiano",
            whisper="it",
            translators=("llm", "apertium"),
            voices=(  # WER mean 4.3 % on 10 prompts, 12.0 % on 20 (Pico's it-IT: 8.9 %, its fast voice)
                VoiceRef("kokoro", "jm_kumo", "male"),
                VoiceRef("kokoro", "jf_nezumi", "female"),  # 12.6 % / 14.7 %
                VoiceRef("kokoro", "jf_gongitsune", "female"),  # 14.2 % / 15.0 %
            ),
            example="Potrebbe dirmi dove si trova la stazione ferroviaria?",
            warmup="Grazie per aver chiamato. Lasci il suo messaggio dopo il segnale acustico e la richiameremo.",
            espeak="it",
        ),
    )
}


def language(code: str) -> Language:
    """The row of `code`; UnsupportedLanguageError when there is none."""
    row = LANGUAGES.get(code)
    if row is None:
        raise UnsupportedLanguageError(f"unsupported language {code!r}; supported: {', '.join(LANGUAGES)}")
    return row


def supported_pairs() -> tuple[tuple[str, str], ...]:
    """Every (source, target) of two different languages in the table."""
    return tuple((s, t) for s in LANGUAGES for t in LANGUAGES if s != t)


def check_pair(source: str, target: str) -> None:
    """Raise UnsupportedLanguageError unless both languages have a row and differ."""
    language(source)
    language(target)
    if source == target:
        raise UnsupportedLanguageError(f"source and target are both {source!r}")


def parse_pair(text: str) -> tuple[str, str]:
    """`en-es` -> ("en", "es")."""
    source, sep, target = text.strip().partition("-")
    if not sep or not source or not target:
        raise ValueError(f"language pair {text!r} is not source-target (e.g. en-es)")
    return source.strip(), target.strip()


__all__ = [
    "LANGUAGES",
    "Gender",
    "Language",
    "UnsupportedLanguageError",
    "VoiceRef",
    "check_pair",
    "language",
    "parse_pair",
    "supported_pairs",
]
