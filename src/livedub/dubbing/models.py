"""Build a `DubEngine` from the language table (livedub.languages) and the engine settings
(livedub.dubbing.settings): the backends they name, each built once through its registration and shared (one
Kokoro for every language and voice, one Piper per voice model).

Translator of a pair: the override for that pair, else the main translator, else the target language's preferred
translators, the first whose declared capabilities include the pair. The fast stand-in only on the pairs it can
translate, and only a translator that declares the fast role (`TranslatorCapabilities.fast`). Voices of a
language: the pins, else the table's (best understood first); its fast voices those a voice backend declares for it
(livedub.dubbing.tts.registry.FastVoices).
"""

from __future__ import annotations

import logging
from typing import Any

from livedub.dubbing import translate as _translators  # noqa: F401  (registers the built-in translators)
from livedub.dubbing import tts as _voices  # noqa: F401  (registers the built-in voices)
from livedub.dubbing.engine import DubEngine
from livedub.dubbing.interfaces import ASRBackend, Translator, TTSBackend, UnsupportedLanguageError
from livedub.dubbing.settings import EngineSettings
from livedub.dubbing.translate.registry import TranslatorCapabilities, fast_translator_names, translator_spec
from livedub.dubbing.tts.bank import VoiceBank
from livedub.dubbing.tts.registry import backend_spec, fast_voices_of
from livedub.languages import LANGUAGES, VoiceRef, check_pair

log = logging.getLogger(__name__)


class NotAFastTranslatorError(ValueError):
    """The fast translator setting names a translator that does not declare the fast role (a configuration error:
    a slow stand-in would miss the very deadlines it stands in for)."""


def translator_capabilities(name: str) -> TranslatorCapabilities:
    """What the translator `name` declares in its registration (known before it is built)."""
    return translator_spec(name).capabilities


def translator_kind(settings: EngineSettings, source: str, target: str) -> str:
    """The translator for the pair (see the module doc); UnsupportedLanguageError when none can translate it."""
    check_pair(source, target)
    override = settings.translator_overrides.get((source, target))
    if override is not None:  # named for this very pair: a translator that cannot do it is a mistake
        if not translator_capabilities(override).supports(source, target):
            raise ValueError(f"translator override: {override} cannot translate {source}->{target}")
        return override
    candidates = [settings.translator, *LANGUAGES[target].translators]
    for name in dict.fromkeys(candidates):
        if translator_capabilities(name).supports(source, target):
            if name != settings.translator:
                log.debug("%s->%s: %s cannot translate it, %s does", source, target, settings.translator, name)
            return name
    raise UnsupportedLanguageError(f"no translator for {source}->{target} among {candidates}")


def fast_translator(settings: EngineSettings) -> str | None:
    """The operator's fast translator (None: none), one that declares the fast role; NotAFastTranslatorError else."""
    name = settings.fast_translator
    if not name:
        return None
    if not translator_capabilities(name).fast:
        declared = ", ".join(fast_translator_names()) or "none"
        raise NotAFastTranslatorError(
            f"fast translator {name!r} does not declare the fast role (those that do: {declared})"
        )
    return name


def fast_translator_kind(settings: EngineSettings, source: str, target: str) -> str | None:
    """The stand-in under deadline pressure: the fast translator where it translates the pair and is not the main."""
    name = fast_translator(settings)
    if name is None or name == translator_kind(settings, source, target):
        return None
    return name if translator_capabilities(name).supports(source, target) else None


def voices_of(settings: EngineSettings, language: str) -> list[VoiceRef]:
    """The language's voices, best first: the pins (with `default` resolved), else the table's."""
    row = LANGUAGES[language]
    pins = settings.voice_pins.get(language)
    return [_resolve_pin(ref, language) for ref in pins] if pins else list(row.voices)


def _resolve_pin(ref: VoiceRef, language: str) -> VoiceRef:
    """A pinned voice with its gender from the table or a backend's fast voices; `default`: the table's first voice
    of that backend for the language, else the backend's own default for it (its registration's `default_voice`)."""
    row = LANGUAGES[language]
    spec = backend_spec(ref.backend)
    if ref.voice == "default":
        same_backend = [v for v in row.voices if v.backend == ref.backend]
        if same_backend:
            return same_backend[0]
        if spec.default_voice is not None:
            return spec.default_voice(language)
    known = {(v.backend, v.voice): v.gender for code in LANGUAGES for v in _all_voices(code)}
    ref = spec.complete(ref, language)
    return VoiceRef(ref.backend, ref.voice, known.get((ref.backend, ref.voice), ref.gender))


def _all_voices(language: str) -> tuple[VoiceRef, ...]:
    """The table's voices of `language` and its fast voices."""
    return (*LANGUAGES[language].voices, *fast_voices_of(language))


def tts_kind(settings: EngineSettings, language: str) -> str:
    """The default voice of `language`, as `backend:voice`."""
    return str(voices_of(settings, language)[0])


class _Builders:
    """Each backend built once through its registration: translators by name, voices by backend and instance key
    (Piper: by voice model)."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._built: dict[str, Any] = {}

    def translator(self, name: str) -> Translator:
        spec = translator_spec(name)
        key = f"mt:{name}"
        if key not in self._built:
            self._built[key] = spec.build(self.settings.backend_settings(name, spec.settings))
        return self._built[key]  # type: ignore[no-any-return]

    def synthesiser(self, voice: VoiceRef, language: str) -> TTSBackend:
        spec = backend_spec(voice.backend)
        key = f"tts:{voice.backend}:{spec.instance_of(voice)}"
        if key not in self._built:
            self._built[key] = spec.build(self.settings.backend_settings(voice.backend, spec.settings), voice)
        backend: TTSBackend = self._built[key]
        if not spec.capabilities.speaks(language) or not backend.capabilities.speaks(language):
            raise ValueError(f"{voice} does not speak {language!r}")
        spec.check(voice, language)
        return backend


def load_voices(
    settings: EngineSettings, languages: set[str] | list[str], builders: _Builders | None = None
) -> VoiceBank:
    """The voice bank of `languages` (every voice the table or the pins name for them, and their fast voices)."""
    builders = builders or _Builders(settings)
    return VoiceBank(
        {
            language: [(ref, builders.synthesiser(ref, language)) for ref in voices_of(settings, language)]
            for language in sorted(languages)
        },
        fast_voices(settings, languages, builders),
    )


def fast_voices(
    settings: EngineSettings, languages: set[str] | list[str], builders: _Builders
) -> dict[str, list[tuple[VoiceRef, TTSBackend]]]:
    """Each language's fast voices (those a voice backend declares for it), unless the fast voice is off."""
    if not settings.fast_voice:
        return {}
    return {
        language: [(ref, builders.synthesiser(ref, language)) for ref in fast_voices_of(language)]
        for language in sorted(languages)
    }


def load_engine(
    settings: EngineSettings,
    pairs: tuple[tuple[str, str], ...],
    *,
    asr: ASRBackend | None = None,
    translators: dict[tuple[str, str], Translator] | None = None,
    tts: dict[str, TTSBackend] | VoiceBank | None = None,
) -> DubEngine:
    """The engine for `pairs`; backends given here (tests, benchmarks) are used as they are, the rest are built.
    `tts` may be one backend per language (its default voice) or a whole voice bank."""
    s = settings
    for pair in pairs:
        check_pair(*pair)
    fast_translator(s)  # a misnamed fast translator is refused even when no pair would use it
    builders = _Builders(s)
    if asr is None:
        asr = _whisper(s)
    injected = dict(translators or {})
    chosen = {pair: injected.get(pair) or builders.translator(translator_kind(s, *pair)) for pair in pairs}
    fast: dict[tuple[str, str], Translator] = {}
    for pair in pairs:
        kind = fast_translator_kind(s, *pair)
        # An injected translator (tests, benchmarks) is used alone: no stand-in is built beside it.
        if kind and pair not in injected:
            fast[pair] = builders.translator(kind)
    targets = {target for _, target in pairs}
    if isinstance(tts, VoiceBank):
        bank = tts
    else:
        given = dict(tts or {})
        entries = {lang: [(VoiceRef(given[lang].name, "default"), given[lang])] for lang in targets if lang in given}
        built = sorted(targets - set(given))
        for lang in built:
            entries[lang] = [(ref, builders.synthesiser(ref, lang)) for ref in voices_of(s, lang)]
        # Injected voices (tests, benchmarks) are used alone: no stand-in is built beside them.
        bank = VoiceBank(entries, fast_voices(s, built, builders))
    return DubEngine(
        asr,
        chosen,
        bank,
        max_speedup=s.max_speedup,
        max_slowdown=s.max_slowdown,
        fast_translators=fast,
    )


def _whisper(settings: EngineSettings) -> ASRBackend:
    from livedub.dubbing.asr import WhisperASR
    from livedub.dubbing.model_files import resolve_model_dir

    w = settings.asr
    return WhisperASR(resolve_model_dir(w.model), w.device, w.beam_size, w.vad, w.threads, w.min_window_s)


__all__ = [
    "NotAFastTranslatorError",
    "fast_translator",
    "fast_translator_kind",
    "load_engine",
    "load_voices",
    "translator_capabilities",
    "translator_kind",
    "tts_kind",
    "voices_of",
]
