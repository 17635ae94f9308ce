"""Kokoro-82M (int8 ONNX) through onnxruntime, speaking any language of the table from its espeak-ng IPA phonemes.

The model directory holds `kokoro-v1.0.int8.onnx`, `vocab.json` (IPA symbol -> token id) and a voices `.npz`
(one style table of shape (510, 1, 256) per voice; the row is chosen by the token count). The only voices shipped
offline are Japanese ones; fed Spanish (French, Italian, English) IPA they speak it with an accent; how well each is
understood is measured by bench/tts_languages_bench.py.
Model inputs: `tokens` (1, n+2) int64 framed by the pad id 0, `style` (1, 256) float32, `speed` (1,) float32.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedub.dubbing.device import DeviceSetting, OnnxDevice, as_device, onnx_session
from livedub.dubbing.interfaces import FloatAudio
from livedub.dubbing.model_files import resolve_model_dir
from livedub.dubbing.translate.base import split_sentences
from livedub.dubbing.tts.registry import TTSCapabilities, VoiceBackendSpec, register
from livedub.languages import LANGUAGES

MODEL_FILE = "kokoro-v1.0.int8.onnx"
MAX_TOKENS = 510  # the style tables have 510 rows; longer inputs are split


class KokoroTTS:
    name = "kokoro"
    sample_rate = 24000
    capabilities = TTSCapabilities(languages=None, speaking_rate=True)

    def __init__(
        self,
        model_dir: str | Path,
        voice: str = "",
        speed: float = 1.0,
        cpu_threads: int = 0,
        device: DeviceSetting | OnnxDevice = "auto",
    ) -> None:
        """`device`: a setting (resolved by this machine's device plan) or resolved onnxruntime providers."""
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        model_file = self.model_dir / MODEL_FILE
        voices_files = sorted(self.model_dir.glob("voices*.npz"))
        if not model_file.is_file() or not (self.model_dir / "vocab.json").is_file() or not voices_files:
            raise FileNotFoundError(f"{self.model_dir} needs {MODEL_FILE}, vocab.json and a voices .npz")
        vocab = json.loads((self.model_dir / "vocab.json").read_text(encoding="utf-8"))
        self._vocab: dict[str, int] = vocab.get("vocab", vocab)
        with np.load(voices_files[0]) as voices:
            self._voices = {name: voices[name].astype(np.float32) for name in voices.files}
        self.voice = voice or next(iter(self._voices))
        if self.voice not in self._voices:
            raise ValueError(f"voice {self.voice!r} not in {voices_files[0].name}: {', '.join(self._voices)}")
        options = ort.SessionOptions()
        if cpu_threads:
            options.intra_op_num_threads = cpu_threads
        # Denormal floats are very slow on x86: flushing them to zero saved about 10 % of Kokoro's time on 2 cores
        # (docs/benchmarks-sts.md).
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        # Threads that spin while they wait steal the core another process (or stage) needs on a busy 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = as_device(device, lambda plan: plan.onnx)
        self._session, self.placement = onnx_session(f"tts {self.model_dir.name}", str(model_file), options, wanted)
        self.speed = speed
        self.voices = list(self._voices)
        self.name = f"kokoro:{self.voice}"
        self._phonemizers: dict[str, object] = {}
        self._lock = threading.Lock()  # espeak-ng (inside phonemizer) is process-global

    def phonemize(self, text: str, language: str) -> str:
        """IPA with stress marks and punctuation kept (espeak-ng through phonemizer)."""
        from phonemizer.backend import EspeakBackend

        row = LANGUAGES.get(language)
        espeak_language = row.espeak if row else language
        with self._lock:
            backend = self._phonemizers.get(espeak_language)
            if backend is None:
                backend = EspeakBackend(espeak_language, preserve_punctuation=True, with_stress=True)
                self._phonemizers[espeak_language] = backend
            phonemes = backend.phonemize([text])[0]  # type: ignore[attr-defined]
        return re.sub(r"\s+", " ", phonemes).strip()

    def tokens(self, phonemes: str) -> list[int]:
        # Symbols outside the vocabulary (e.g. Spanish ¿ ¡) carry no sound: drop them.
        return [self._vocab[ch] for ch in phonemes if ch in self._vocab]

    def _synthesize_tokens(self, ids: list[int], voice: str, speed: float) -> FloatAudio:
        style = self._voices[voice][len(ids)]  # (1, 256)
        audio = self._session.run(
            None,
            {
                "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                "style": style.reshape(1, -1),
                "speed": np.array([self.speed * speed], dtype=np.float32),
            },
        )[0]
        return np.asarray(audio, dtype=np.float32).reshape(-1)

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        """`speed` < 1 speaks slower (the model's own speed input)."""
        voice_name = self.voice if voice in {"default", ""} or voice not in self._voices else voice
        pieces: list[FloatAudio] = []
        for sentence in split_sentences(text):
            ids = self.tokens(self.phonemize(sentence, language))
            # Very long sentences are cut into token windows; the style table has MAX_TOKENS - 1 usable rows.
            for start in range(0, len(ids), MAX_TOKENS - 2):
                window = ids[start : start + MAX_TOKENS - 2]
                if window:
                    pieces.append(self._synthesize_tokens(window, voice_name, speed))
        if not pieces:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(pieces)


@dataclass(frozen=True)
class KokoroSettings:
    model: str = "kokoro-82m-int8"  # a model directory, or the name of one in the livedub cache
    cpu_threads: int = 0  # onnxruntime's intra-op threads (0: its default)
    device: DeviceSetting | OnnxDevice = "auto"


register(
    VoiceBackendSpec(
        "kokoro",
        KokoroTTS.capabilities,
        KokoroSettings,
        build=lambda settings, _voice: KokoroTTS(
            resolve_model_dir(settings.model), cpu_threads=settings.cpu_threads, device=settings.device
        ),
    )
)
