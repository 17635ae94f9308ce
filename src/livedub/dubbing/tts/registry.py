"""The voices livedub can build: each TTS backend registers itself here with its name, its declared capabilities
(in the spirit of livekit-agents' `TTSCapabilities`), its own settings and how to build it.

    register(VoiceBackendSpec("pico", PicoTTS.capabilities, PicoSettings, build=..., default_voice=...))

A new voice backend is one module that ends with its `register(...)`, imported by `livedub.dubbing.tts`; the
engine (livedub.dubbing.models, the voice bank) knows backends only through these specs.

A backend may also declare the fast voices of a language (`FastVoices`): the stand-in for a phrase the usual voices
could not speak in time. Each language takes the declaration that loses least (`fast_voices_of`, `fast_voice_loss`),
so a better stand-in is one module and its registration too.
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


@dataclass(frozen=True)
class FastVoices:
    """A backend's voices of `language` cheap enough to keep up on a loaded core, understood worse than the usual
    ones: a dub in a plainer voice beats the original speech in a language the listener may not know (the engine
    setting `fast_voice=False` drops such phrases instead). `voices`: the one of the usual voice's gender speaks,
    else the first. `loss`: their round-trip WER, what a phrase loses in them (targets that lose most speak first)."""

    language: str
    voices: tuple[VoiceRef, ...]
    loss: float

    def __post_init__(self) -> None:
        if not self.voices:
            raise ValueError(f"fast voices of {self.language!r}: none named")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"fast voices of {self.language!r}: loss {self.loss} is not a WER in [0, 1]")


def _as_is(ref: VoiceRef, language: str) -> VoiceRef:
    return ref


@dataclass(frozen=True)
class VoiceBackendSpec:
    """A registered voice backend. `settings`: its settings class (every field defaulted; the STS fills them from
    its own settings). `build(settings, voice)`: a backend able to speak `voice`; one is built per `instance_of(voice)`
    key and shared (Piper: one per voice model; the others: one for every voice). `default_voice(language)`: its
    voice of a language when a pin says `backend:default` and the language table names none (None: the backend's
    own default). `complete(voice, language)`: a pinned voice with what the backend knows of it (Pico: its gender).
    `check(voice, language)`: ValueError when the voice cannot speak the language (Pico: one lingware each).
    `fast_voices`: the languages it stands in for under deadline pressure (Pico: es, fr, it)."""

    name: str
    capabilities: TTSCapabilities
    settings: type[Any]
    build: Callable[[Any, VoiceRef], TTSBackend]
    instance_of: Callable[[VoiceRef], str] = lambda ref: ""
    default_voice: Callable[[str], VoiceRef] | None = None
    complete: Callable[[VoiceRef, str], VoiceRef] = _as_is
    check: Callable[[VoiceRef, str], object] = _as_is
    fast_voices: tuple[FastVoices, ...] = ()

    def __post_init__(self) -> None:
        for role in self.fast_voices:
            others = [ref for ref in role.voices if ref.backend != self.name]
            if others:
                raise ValueError(f"{self.name} declares fast voices of another backend: {', '.join(map(str, others))}")


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


def fast_voices_declared(language: str) -> FastVoices | None:
    """The fast voices of `language` that lose least among the registered backends' (the first registered of
    equals); None when no backend declares any."""
    declared = [role for spec in _BACKENDS.values() for role in spec.fast_voices if role.language == language]
    return min(declared, key=lambda role: role.loss, default=None)


def fast_voices_of(language: str) -> tuple[VoiceRef, ...]:
    """The voices that stand in for `language`'s usual ones when time runs short (none: no backend declares any)."""
    role = fast_voices_declared(language)
    return role.voices if role is not None else ()


def fast_voice_loss(language: str) -> float:
    """What a phrase loses in `language`'s fast voice (its round-trip WER); everything (1.0) without one."""
    role = fast_voices_declared(language)
    return role.loss if role is not None else 1.0


def __getattr__(name: str) -> Any:
    """`TTS_BACKENDS`: the names registered so far (every built-in one once `livedub.dubbing.tts` is imported)."""
    if name == "TTS_BACKENDS":
        return backend_names()
    raise AttributeError(name)


__all__ = [
    "FastVoices",
    "TTSCapabilities",
    "VoiceBackendSpec",
    "backend_names",
    "backend_spec",
    "fast_voice_loss",
    "fast_voices_declared",
    "fast_voices_of",
    "register",
    "unregister",
]
