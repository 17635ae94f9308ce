"""espeak-ng through its command line: formant synthesis, any language it knows, very fast, robotic."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np

from livedub.dubbing.interfaces import FloatAudio
from livedub.dubbing.tts.registry import TTSCapabilities, VoiceBackendSpec, register
from livedub.languages import LANGUAGES, VoiceRef


class EspeakTTS:
    name = "espeak-ng"
    sample_rate = 22050
    capabilities = TTSCapabilities(languages=None, speaking_rate=True)

    def __init__(self, binary: str = "espeak-ng", words_per_minute: int = 160, timeout_s: float = 10.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary!r} not found: install the Debian package espeak-ng")
        self.binary = path
        self.words_per_minute = words_per_minute
        self.timeout_s = timeout_s

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        """`voice` is an espeak-ng voice (`fr-fr`, `fr-fr+f3` for a female variant); default: the language's."""
        if not text.strip():
            return np.zeros(0, dtype=np.float32)
        row = LANGUAGES.get(language)
        espeak_voice = (row.espeak if row else language) if voice in {"default", ""} else voice
        result = subprocess.run(
            [self.binary, "-v", espeak_voice, "-s", str(round(self.words_per_minute * speed)), "--stdout", text],
            capture_output=True,
            timeout=self.timeout_s,
            check=False,
        )
        if result.returncode != 0 or not result.stdout:
            raise RuntimeError(f"espeak-ng failed: {result.stderr.decode(errors='replace').strip()[:300]}")
        # Writing to a pipe, espeak-ng cannot fill in the wav sizes: read whatever frames follow the header.
        with wave.open(io.BytesIO(result.stdout), "rb") as wav:
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
        if rate != self.sample_rate:
            raise RuntimeError(f"espeak-ng produced {rate} Hz, expected {self.sample_rate}")
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0


@dataclass(frozen=True)
class EspeakSettings:
    binary: str = "espeak-ng"


register(
    VoiceBackendSpec(
        "espeak-ng",
        EspeakTTS.capabilities,
        EspeakSettings,
        build=lambda settings, _voice: EspeakTTS(settings.binary),
        default_voice=lambda language: VoiceRef("espeak-ng", LANGUAGES[language].espeak, "male"),
    )
)
