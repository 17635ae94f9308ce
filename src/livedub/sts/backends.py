"""The STS's settings as the engine's: `engine_settings(StsSettings)` names the translators, the voices and each
backend's own settings (model files, binaries, keys, threads) for `livedub.dubbing.models`.

The engine reads no environment and knows nothing of the STS; the functions here are the engine's builders over
the STS settings (the pipeline, `livedub dub-file`, the benchmarks and tests call them).

`python -m livedub.sts.backends [en,es,fr,it]`: hear each voice's reference once and cache it (a setup step: the STS
then starts without it).
"""

from __future__ import annotations

from typing import Any

from livedub.dubbing import models
from livedub.dubbing.device import DeviceSetting
from livedub.dubbing.engine import DubEngine
from livedub.dubbing.interfaces import ASRBackend, Translator, TTSBackend
from livedub.dubbing.model_files import cpu_threads
from livedub.dubbing.settings import EngineSettings, WhisperSettings
from livedub.dubbing.translate.apertium import ApertiumSettings
from livedub.dubbing.translate.deepl import DeepLSettings
from livedub.dubbing.translate.google import GoogleSettings
from livedub.dubbing.translate.llm import LlmSettings
from livedub.dubbing.tts.bank import VoiceBank
from livedub.dubbing.tts.espeak import EspeakSettings
from livedub.dubbing.tts.kokoro import KokoroSettings
from livedub.dubbing.tts.piper import PiperSettings
from livedub.languages import LANGUAGES, VoiceRef
from livedub.sts.settings import StsSettings


def engine_settings(settings: StsSettings) -> EngineSettings:
    """The engine's settings from the STS's (STS_TRANSLATOR, STS_TTS_VOICES, STS_LLM_MODEL ...)."""
    s = settings
    threads = cpu_threads(s.cpu_threads, s.worker_threads)
    # The device setting stays a setting here: each model resolves it (once per process, livedub.dubbing.device)
    # when it is built, so naming the backends probes no GPU library.
    backends: dict[str, Any] = {
        "llm": LlmSettings(s.llm_model, s.llm_context, threads, s.device),
        "apertium": ApertiumSettings(s.apertium_binary),
        "deepl": DeepLSettings(s.deepl_api_key, s.deepl_api_url),
        "google": GoogleSettings(s.google_api_key, s.google_translate_url),
        "kokoro": KokoroSettings(s.kokoro_model, threads, s.device),
        "piper": PiperSettings(s.device),
        "espeak-ng": EspeakSettings(s.espeak_binary),
    }
    return EngineSettings(
        translator=s.translator,
        translator_overrides=s.translator_override_map(),
        fast_translator=s.fast_translator,
        voice_pins={language: tuple(refs) for language, refs in s.voice_pins().items()},
        fast_voice=s.fast_voice,
        max_speedup=s.max_speedup,
        max_slowdown=s.max_slowdown,
        asr=WhisperSettings(s.asr_model, asr_device(s), s.asr_beam_size, s.asr_vad, threads, s.asr_min_window_s),
        backends=backends,
    )


def asr_device(settings: StsSettings) -> DeviceSetting:
    """Whisper's device setting: STS_ASR_DEVICE where it names one, else STS_DEVICE's."""
    return settings.device if settings.asr_device == "auto" else settings.asr_device


def translator_kind(settings: StsSettings, source: str, target: str) -> str:
    return models.translator_kind(engine_settings(settings), source, target)


def fast_translator_kind(settings: StsSettings, source: str, target: str) -> str | None:
    return models.fast_translator_kind(engine_settings(settings), source, target)


def voices_of(settings: StsSettings, language: str) -> list[VoiceRef]:
    return models.voices_of(engine_settings(settings), language)


def tts_kind(settings: StsSettings, language: str) -> str:
    return models.tts_kind(engine_settings(settings), language)


def load_voices(settings: StsSettings, languages: set[str] | list[str]) -> VoiceBank:
    return models.load_voices(engine_settings(settings), languages)


def load_engine(
    settings: StsSettings,
    pairs: tuple[tuple[str, str], ...],
    *,
    asr: ASRBackend | None = None,
    translators: dict[tuple[str, str], Translator] | None = None,
    tts: dict[str, TTSBackend] | VoiceBank | None = None,
) -> DubEngine:
    """`livedub.dubbing.models.load_engine` over the STS settings (injected backends used as they are)."""
    return models.load_engine(engine_settings(settings), pairs, asr=asr, translators=translators, tts=tts)


def main(argv: list[str] | None = None) -> int:
    """Hear each voice's reference once and cache it. Measured on 2 cores: the four languages' 14 voices in 19 s
    when quiet, en+es alone 33 s with the other core busy; from the cache ~20 ms."""
    import argparse
    import time

    from livedub.dubbing.voices import VoicePicker

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("languages", nargs="?", default=",".join(LANGUAGES), help="comma-separated (default: all)")
    languages = [code.strip() for code in parser.parse_args(argv).languages.split(",") if code.strip()]
    started = time.perf_counter()
    picker = VoicePicker(load_voices(StsSettings(), languages))
    ready = picker.warm_up(languages)
    print(
        f"voice references {ready} in {picker.matcher.cache_dir if picker.matcher else '-'} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return 0


__all__ = [
    "asr_device",
    "engine_settings",
    "fast_translator_kind",
    "load_engine",
    "load_voices",
    "translator_kind",
    "tts_kind",
    "voices_of",
]


if __name__ == "__main__":
    raise SystemExit(main())
