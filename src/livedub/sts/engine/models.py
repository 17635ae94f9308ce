"""Build a `DubEngine` from the STS settings: the backends they name, loaded once, shared where two directions
use the same one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from livedub.sts.engine.engine import DubEngine
from livedub.sts.interfaces import ASRBackend, Translator, TTSBackend
from livedub.sts.settings import StsSettings


def translator_kind(settings: StsSettings, source: str, target: str) -> str:
    return {("en", "es"): settings.translator_en_es, ("es", "en"): settings.translator_es_en}[(source, target)]


def tts_kind(settings: StsSettings, language: str) -> str:
    return {"en": settings.tts_en, "es": settings.tts_es}[language]


def load_engine(
    settings: StsSettings,
    pairs: tuple[tuple[str, str], ...],
    *,
    asr: ASRBackend | None = None,
    translators: dict[tuple[str, str], Translator] | None = None,
    tts: dict[str, TTSBackend] | None = None,
) -> DubEngine:
    """The engine for `pairs`; backends given here (tests, benchmarks) are used as they are, the rest are built."""
    from livedub.sts import asr as asr_backends
    from livedub.sts import translate
    from livedub.sts import tts as tts_backends
    from livedub.sts.model_files import cpu_threads, resolve_model, resolve_model_dir

    s = settings
    threads = cpu_threads(s.cpu_threads)
    builders: dict[str, Callable[[], Any]] = {
        "llm": lambda: translate.LlmTranslator(resolve_model(s.llm_model), s.llm_context, threads),
        "apertium": lambda: translate.ApertiumTranslator(s.apertium_binary),
        "deepl": lambda: translate.DeepLTranslator(s.deepl_api_key, s.deepl_api_url),
        "piper": lambda: tts_backends.PiperTTS(resolve_model(s.piper_voice)),
        "kokoro": lambda: tts_backends.KokoroTTS(
            resolve_model_dir(s.kokoro_model), s.kokoro_voice, cpu_threads=threads
        ),
        "espeak-ng": lambda: tts_backends.EspeakTTS(s.espeak_binary),
    }
    if asr is None:
        asr = asr_backends.WhisperASR(
            resolve_model_dir(s.asr_model), s.asr_device, s.asr_beam_size, s.asr_vad, threads, s.asr_min_window_s
        )
    built: dict[str, Any] = {}
    injected = dict(translators or {})
    translators = dict(injected)
    tts = dict(tts or {})
    for pair in pairs:
        if pair not in translators:
            kind = translator_kind(s, *pair)
            translators[pair] = built[kind] if kind in built else built.setdefault(kind, builders[kind]())
    for language in {target for _, target in pairs}:
        if language not in tts:
            kind = tts_kind(s, language)
            tts[language] = built[kind] if kind in built else built.setdefault(kind, builders[kind]())
    fast: dict[tuple[str, str], Translator] = {}
    for pair in pairs:
        kind = s.fast_translator
        # An injected translator (tests, benchmarks) is used alone: no stand-in is built beside it.
        if kind and kind != translator_kind(s, *pair) and pair not in injected:
            fast[pair] = built[kind] if kind in built else built.setdefault(kind, builders[kind]())
    return DubEngine(
        asr,
        {pair: translators[pair] for pair in pairs},
        {language: tts[language] for language in {t for _, t in pairs}},
        max_speedup=s.max_speedup,
        max_slowdown=s.max_slowdown,
        fast_translators=fast,
    )
