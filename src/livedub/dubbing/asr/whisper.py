"""faster-whisper (CTranslate2) speech recognition: int8 on CPU, float16 on CUDA when present (livedub.dubbing.device:
a model the GPU cannot take is loaded on the CPU, with the reason logged)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from livedub.dubbing.device import DeviceSetting, WhisperDevice, as_device, load_placed
from livedub.dubbing.interfaces import FloatAudio, Transcript

# Whisper decodes 30 s windows; longer inputs lose text with no timestamps, so callers keep fragments shorter.
MAX_FRAGMENT_S = 29.0


FRAMES_PER_S = 100  # Whisper's log-mel frames
FULL_WINDOW_FRAMES = 3000  # the 30 s window Whisper was trained on
# Padding kept after the audio: without trailing silence in the window Whisper loops ("hallucinates") on short input.
TRAILING_PAD_FRAMES = 500


def _short_window_model(base: type) -> type:
    """A faster-whisper model whose encoder sees the audio's frames plus some padding (at least `min_frames`), not
    the zero-padded 30 s window: the encoder is most of Whisper's cost, and it grows with the frames it is given."""

    class ShortWindowWhisper(base):  # type: ignore[misc, valid-type]
        min_frames = FULL_WINDOW_FRAMES

        def encode(self, features: np.ndarray) -> Any:
            if features.shape[-1] == FULL_WINDOW_FRAMES and self.min_frames < FULL_WINDOW_FRAMES:
                frames = features if features.ndim == 2 else features[0]
                content = np.flatnonzero(np.abs(frames).sum(axis=0) > 0)  # faster-whisper pads with exact zeros
                end = int(content[-1]) + 1 if len(content) else 1
                window = max(self.min_frames, end + TRAILING_PAD_FRAMES)
                features = features[..., : min(FULL_WINDOW_FRAMES, window)]
            return super().encode(features)

    return ShortWindowWhisper


class WhisperASR:
    """Any CTranslate2 Whisper model directory. Silero VAD (bundled with faster-whisper) skips silence."""

    name = "faster-whisper"
    sample_rate = 16000

    def __init__(
        self,
        model_dir: str | Path,
        device: DeviceSetting | WhisperDevice = "auto",
        beam_size: int = 5,
        vad: bool = True,
        cpu_threads: int = 0,
        min_window_s: float = 30.0,
    ) -> None:
        """`min_window_s` < 30 lets the encoder see a shorter window (the audio plus 5 s of padding, at least that
        many seconds) instead of the zero-padded 30 s one. `device`: a setting (resolved by this machine's device
        plan) or a resolved device."""
        from faster_whisper import WhisperModel

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.bin").exists():
            raise FileNotFoundError(f"{self.model_dir} is not a CTranslate2 Whisper model directory (no model.bin)")

        def load(placed: WhisperDevice) -> Any:
            # local_files_only: never reach a hub, the directory has everything.
            return _short_window_model(WhisperModel)(
                str(self.model_dir),
                device=placed.device,
                compute_type=placed.compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )

        wanted = as_device(device, lambda plan: plan.whisper)
        self._model, self.placement = load_placed(f"asr {self.model_dir.name}", wanted, load)
        self.device = self.placement.device
        self._model.min_frames = round(min(30.0, max(0.0, min_window_s)) * FRAMES_PER_S)
        self.beam_size = beam_size
        self.vad = vad
        self.name = f"faster-whisper:{self.model_dir.name}:{self.device}"
        self._lock = threading.Lock()  # one decode at a time per model: CTranslate2 uses every thread it has

    def transcribe(self, audio: FloatAudio, language: str) -> Transcript:
        audio = np.asarray(audio, dtype=np.float32)
        if len(audio) > MAX_FRAGMENT_S * self.sample_rate:
            raise ValueError(f"fragment of {len(audio) / self.sample_rate:.1f} s is over {MAX_FRAGMENT_S} s")
        with self._lock:
            segments, _info = self._model.transcribe(
                audio,
                language=language,
                beam_size=self.beam_size,
                vad_filter=self.vad,
                vad_parameters={"min_silence_duration_ms": 300},
                condition_on_previous_text=False,
                temperature=0.0,
            )
            spans = [(s.start, s.end, s.text.strip()) for s in segments if s.text.strip()]
        return Transcript(text=" ".join(text for _, _, text in spans), language=language, segments=spans)
