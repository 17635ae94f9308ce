"""Speech synthesis backends: Piper (neural, English), Kokoro-82M (neural, any language via espeak-ng IPA), SVOX
Pico (es, fr, it, en, de; small and fast), espeak-ng; `VoiceBank` holds several voices per language over them."""

from livedub.dubbing.tts.bank import UnknownVoiceError, VoiceBank, Voiced
from livedub.dubbing.tts.espeak import EspeakTTS
from livedub.dubbing.tts.kokoro import KokoroTTS
from livedub.dubbing.tts.pico import PicoTTS
from livedub.dubbing.tts.piper import PiperTTS
from livedub.dubbing.tts.registry import TTS_BACKENDS, TTSCapabilities

__all__ = [
    "TTS_BACKENDS",
    "EspeakTTS",
    "KokoroTTS",
    "PicoTTS",
    "PiperTTS",
    "TTSCapabilities",
    "UnknownVoiceError",
    "VoiceBank",
    "Voiced",
]
