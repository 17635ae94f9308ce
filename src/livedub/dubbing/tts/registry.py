"""The voices livedub can build: each TTS backend registers itself here with its name, its declared capabilities
(in the spirit of livekit-agents' `TTSCapabilities`), its own settings and how to build it.

    register(VoiceBackendSpec("pico", PicoTTS.capabilities, PicoSettings, build=..., default_voice=...))

A new voice backend is one module that ends with its `register(...)`, imported by `livedub.dubbing.tts`; the
engine (livedub.dubbing.models, the voice bank) knows backends only through these specs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livedub.dubbing.interfaces import TTSBackend
    from livedub.languages import VoiceRef


@dataclass(frozen=True)
class TTSCapabilities:
    languages: frozenset[str] | None  # None: any language in livedub.languages (spoken from its IPA)
    speaking_rate: bool  # `synthesize(..., speed=)` changes the rate natively (no time-stretch needed)
    streaming: bool = False  # audio chunks before the whole text is synthesised (none of ours do)

    def speaks(self, language: str) -> bool:
        return self.languages is None or language in self.languages


def _as_is(ref: VoiceRef, language: str) -> VoiceRef:
    return ref


@dataclass(frozen=True)
class VoiceBackendSpec:
    """A registered voice backend. `settings`: its settings class (every field defaulted; the STS fills them from
    its own settings). `build(settings, voice)`: a backend able to speak `voice`; one is built per `instance_of(voice)`
    key and shared (Piper: one per voice model; the others: one for every voice). `default_voice(language)`: its
    voice of a language when a pin says `backend:default` and the language table names none (None: the backend's
    own default). `complete(voice, language)`: a pinned voice with what the backend knows of it (Pico: its gender).
    `check(voice, language)`: ValueError when the voice cannot speak the language (Pico: one lingware each)."""

    name: str
    capabilities: TTSCapabilities
    settings: type[Any]
    build: Callable[[Any, VoiceRef], TTSBackend]
    instance_of: Callable[[VoiceRef], str] = lambda ref: ""
    default_voice: Callable[[str], VoiceRef] | None = None
    complete: Callable[[VoiceRef, str], VoiceRef] = _as_is
    check: Callable[[VoiceRef, str], object] = _as_is


_BACKENDS: dict[str, VoiceBackendSpec] = {}


def register(spec: VoiceBackendSpec) -> VoiceBackendSpec:
    """Make a voice backend buildable by name (a later registration of the same name replaces it: tests)."""
    _BACKENDS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _BACKENDS.pop(name, None)


def backend_spec(name: str) -> VoiceBackendSpec:
    """The registered backend `name`; ValueError naming those there are."""
    spec = _BACKENDS.get(name)
    if spec is None:
        raise ValueError(f"unknown TTS backend {name!r} (have {', '.join(_BACKENDS)})")
    return spec


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def __getattr__(name: str) -> Any:
    """`TTS_BACKENDS`: the names registered so far (every built-in one once `livedub.dubbing.tts` is imported)."""
    if name == "TTS_BACKENDS":
        return backend_names()
    raise AttributeError(name)


__all__ = [
    "TTSCapabilities",
    "VoiceBackendSpec",
    "backend_names",
    "backend_spec",
    "register",
    "unregister",
]
