"""Speech synthesis backends: Piper (neural, English), Kokoro-82M (neural, Spanish via espeak-ng IPA), espeak-ng."""

from livedub.sts.tts.espeak import EspeakTTS
from livedub.sts.tts.kokoro import KokoroTTS
from livedub.sts.tts.piper import PiperTTS

__all__ = ["EspeakTTS", "KokoroTTS", "PiperTTS"]
