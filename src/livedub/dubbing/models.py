"""Build a `DubEngine` from the language table (livedub.languages) and the STS settings: the backends they
name, each loaded once and shared (one Kokoro for every language and voice, one Piper per voice model).

Translator of a pair: STS_TRANSLATOR_OVERRIDES for that pair, else STS_TRANSLATOR, else the target language's
preferred translators, the first whose declared capabilities include the pair. The fast stand-in
(STS_FAST_TRANSLATOR) only on the pairs it can translate. Voices of a language: STS_TTS_VOICES pins, else the
table's (best understood first); its fast voice (STS_FAST_VOICE) the table's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from livedub.dubbing.engine import DubEngine
from livedub.dubbing.interfaces import ASRBackend, Translator, TTSBackend, UnsupportedLanguageError
from livedub.dubbing.translate.registry import TranslatorCapabilities
from livedub.dubbing.tts.bank import VoiceBank
from livedub.dubbing.tts.pico import voice_of as voice_of_pico
from livedub.languages import LANGUAGES, VoiceRef, check_pair
from livedub.sts.settings import StsSettings

log = logging.getLogger(__name__)


def translator_capabilities(name: str) -> TranslatorCapabilities:
    """What the translator `name` declares (its class attribute: known before it is built)."""
    from livedub.dubbing import translate

    classes: dict[str, Any] = {
        "llm": translate.LlmTranslator,
        "apertium": translate.ApertiumTranslator,
        "deepl": translate.DeepLTranslator,
        "google": translate.GoogleTranslator,
    }
    if name not in classes:
        raise ValueError(f"unknown translator {name!r} (have {', '.join(classes)})")
    return classes[name].capabilities


def translator_kind(settings: StsSettings, source: str, target: str) -> str:
    """The translator for the pair (see the module doc); UnsupportedLanguageError when none can translate it."""
    check_pair(source, target)
    override = settings.translator_override_map().get((source, target))
    if override is not None:  # named for this very pair: a translator that cannot do it is a mistake
        if not translator_capabilities(override).supports(source, target):
            raise ValueError(f"STS_TRANSLATOR_OVERRIDES: {override} cannot translate {source}->{target}")
        return override
    candidates = [settings.translator, *LANGUAGES[target].translators]
    for name in dict.fromkeys(candidates):
        if translator_capabilities(name).supports(source, target):
            if name != settings.translator:
                log.debug("%s->%s: %s cannot translate it, %s does", source, target, settings.translator, name)
            return name
    raise UnsupportedLanguageError(f"no translator for {source}->{target} among {candidates}")


def fast_translator_kind(settings: StsSettings, source: str, target: str) -> str | None:
    """The stand-in under deadline pressure: STS_FAST_TRANSLATOR where it translates the pair and is not the main."""
    name = settings.fast_translator
    if not name or name == translator_kind(settings, source, target):
        return None
    return name if translator_capabilities(name).supports(source, target) else None


def voices_of(settings: StsSettings, language: str) -> list[VoiceRef]:
    """The language's voices, best first: the STS_TTS_VOICES pins (with `default` resolved), else the table's."""
    row = LANGUAGES[language]
    pins = settings.voice_pins().get(language)
    return [_resolve_pin(ref, language) for ref in pins] if pins else list(row.voices)


def _resolve_pin(ref: VoiceRef, language: str) -> VoiceRef:
    """A pinned voice with its gender from the table; `default`: the table's first voice of that backend for the
    language, else the backend's own default (Kokoro: its first style; espeak-ng, Pico: the language's voice)."""
    row = LANGUAGES[language]
    if ref.voice == "default":
        same_backend = [v for v in row.voices if v.backend == ref.backend]
        if same_backend:
            return same_backend[0]
        if ref.backend == "piper":
            raise ValueError(f"no Piper voice is known for {language!r}: pin one as piper:<model name or .onnx path>")
        if ref.backend == "espeak-ng":
            return VoiceRef("espeak-ng", row.espeak, "male")
        if ref.backend == "pico":  # its one (female) speaker of the language
            return VoiceRef("pico", voice_of_pico(ref.voice, language)[0], "female")
    known = {(v.backend, v.voice): v.gender for r in LANGUAGES.values() for v in (*r.voices, *r.fast_voices)}
    if ref.backend == "pico" and ref.gender == "unknown":  # one female speaker per language, `+low` lower
        ref = VoiceRef("pico", ref.voice, "male" if voice_of_pico(ref.voice, language)[1] < 1.0 else "female")
    return VoiceRef(ref.backend, ref.voice, known.get((ref.backend, ref.voice), ref.gender))


def tts_kind(settings: StsSettings, language: str) -> str:
    """The default voice of `language`, as `backend:voice`."""
    return str(voices_of(settings, language)[0])


class _Builders:
    """Each backend built once: translators by name, synthesisers by backend (Piper: by voice model)."""

    def __init__(self, settings: StsSettings) -> None:
        from livedub.sts.model_files import cpu_threads

        self.settings = settings
        self.threads = cpu_threads(settings.cpu_threads, settings.worker_threads)
        self._built: dict[str, Any] = {}

    def _once(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def translator(self, name: str) -> Translator:
        from livedub.dubbing import translate
        from livedub.sts.model_files import resolve_model

        s = self.settings
        builders: dict[str, Callable[[], Any]] = {
            "llm": lambda: translate.LlmTranslator(resolve_model(s.llm_model), s.llm_context, self.threads),
            "apertium": lambda: translate.ApertiumTranslator(s.apertium_binary),
            "deepl": lambda: translate.DeepLTranslator(s.deepl_api_key, s.deepl_api_url),
            "google": lambda: translate.GoogleTranslator(s.google_api_key, s.google_translate_url),
        }
        return self._once(f"mt:{name}", builders[name])  # type: ignore[no-any-return]

    def synthesiser(self, voice: VoiceRef, language: str) -> TTSBackend:
        from livedub.dubbing import tts
        from livedub.sts.model_files import resolve_model, resolve_model_dir

        s = self.settings
        builders: dict[str, tuple[str, Callable[[], Any]]] = {
            "piper": (f"piper:{voice.voice}", lambda: tts.PiperTTS(resolve_model(voice.voice))),
            "kokoro": ("kokoro", lambda: tts.KokoroTTS(resolve_model_dir(s.kokoro_model), cpu_threads=self.threads)),
            "pico": ("pico", tts.PicoTTS),
            "espeak-ng": ("espeak-ng", lambda: tts.EspeakTTS(s.espeak_binary)),
        }
        if voice.backend not in builders:
            raise ValueError(f"unknown TTS backend {voice.backend!r} (have {', '.join(builders)})")
        key, build = builders[voice.backend]
        backend = self._once(key, build)
        capabilities = getattr(backend, "capabilities", None)
        if capabilities is not None and not capabilities.speaks(language):
            raise ValueError(f"{voice} does not speak {language!r}")
        if voice.backend == "pico":  # one lingware per language: `pico:fr-FR` cannot speak Spanish
            voice_of_pico(voice.voice, language)
        return backend  # type: ignore[no-any-return]


def load_voices(settings: StsSettings, languages: set[str] | list[str], builders: _Builders | None = None) -> VoiceBank:
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
    settings: StsSettings, languages: set[str] | list[str], builders: _Builders
) -> dict[str, list[tuple[VoiceRef, TTSBackend]]]:
    """Each language's fast voices (the table's), unless STS_FAST_VOICE is off."""
    if not settings.fast_voice:
        return {}
    return {
        language: [(ref, builders.synthesiser(ref, language)) for ref in LANGUAGES[language].fast_voices]
        for language in sorted(languages)
    }


def load_engine(
    settings: StsSettings,
    pairs: tuple[tuple[str, str], ...],
    *,
    asr: ASRBackend | None = None,
    translators: dict[tuple[str, str], Translator] | None = None,
    tts: dict[str, TTSBackend] | VoiceBank | None = None,
) -> DubEngine:
    """The engine for `pairs`; backends given here (tests, benchmarks) are used as they are, the rest are built.
    `tts` may be one backend per language (its default voice) or a whole voice bank."""
    from livedub.dubbing import asr as asr_backends
    from livedub.sts.model_files import resolve_model_dir

    s = settings
    for pair in pairs:
        check_pair(*pair)
    builders = _Builders(s)
    if asr is None:
        asr = asr_backends.WhisperASR(
            resolve_model_dir(s.asr_model), s.asr_device, s.asr_beam_size, s.asr_vad, builders.threads,
            s.asr_min_window_s,
        )  # fmt: skip
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
