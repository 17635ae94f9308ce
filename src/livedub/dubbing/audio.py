"""Audio helpers of the engine: resample, and fit a dub to the duration of the speech it replaces.

Resampling and time-stretching run in FFmpeg (through PyAV): `aresample` via `av.AudioResampler`, `atempo` via a
filter graph. Audio inside the pipeline is mono float32 in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np

from livedub.dubbing.interfaces import FloatAudio
from livedub.dubbing.values import FitStatus

# Status rule of a dub's duration against the speech it replaces (in percent of that duration).
SUCCESS_VARIANCE_PERCENT = 10.0
PARTIAL_VARIANCE_PERCENT = 20.0

_FRAME_SAMPLES = 4096  # samples per frame fed to FFmpeg; any size works, this keeps frames small


def _to_frames(audio: FloatAudio, sample_rate: int) -> list[av.AudioFrame]:
    frames = []
    for start in range(0, len(audio), _FRAME_SAMPLES):
        chunk = np.ascontiguousarray(audio[start : start + _FRAME_SAMPLES], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk[np.newaxis, :], format="flt", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        frames.append(frame)
    return frames


def _frames_to_mono(frames: list[av.AudioFrame]) -> FloatAudio:
    """Concatenate frames already converted to packed float mono."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


def resample(audio: FloatAudio, rate_in: int, rate_out: int) -> FloatAudio:
    """Resample mono float audio with FFmpeg's swresample."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate_in == rate_out or len(audio) == 0:
        return audio.copy()
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate_out)
    out: list[av.AudioFrame] = []
    for frame in _to_frames(audio, rate_in):
        out.extend(resampler.resample(frame))
    out.extend(resampler.resample(None))  # flush the filter's delay
    return _frames_to_mono(out)


def time_stretch(audio: FloatAudio, sample_rate: int, speed: float) -> FloatAudio:
    """Change tempo without changing pitch (FFmpeg `atempo`); speed > 1 makes the audio shorter."""
    audio = np.asarray(audio, dtype=np.float32)
    if abs(speed - 1.0) < 1e-3 or len(audio) == 0:
        return audio.copy()
    graph = av.filter.Graph()
    source = graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono", time_base=Fraction(1, sample_rate))
    tempo = graph.add("atempo", f"{speed:.6f}")
    sink = graph.add("abuffersink")
    source.link_to(tempo)
    tempo.link_to(sink)
    graph.configure()
    out: list[av.AudioFrame] = []
    for frame in [*_to_frames(audio, sample_rate), None]:
        graph.push(frame)
        while True:
            try:
                out.append(graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                break
    return _frames_to_mono(out)


@dataclass(frozen=True)
class FitResult:
    audio: FloatAudio  # the stretched dub (not padded)
    speed_ratio: float  # > 1: sped up
    variance_percent: float  # (stretched length - target) / target * 100

    @property
    def status(self) -> FitStatus:
        return duration_status(self.variance_percent)


def duration_status(variance_percent: float) -> FitStatus:
    """success within ±10 % of the target duration, partial within ±20 %, failed beyond."""
    deviation = abs(variance_percent)
    if deviation <= SUCCESS_VARIANCE_PERCENT:
        return FitStatus.SUCCESS
    if deviation <= PARTIAL_VARIANCE_PERCENT:
        return FitStatus.PARTIAL
    return FitStatus.FAILED


def fit_duration(
    audio: FloatAudio, sample_rate: int, target_samples: int, max_speedup: float, max_slowdown: float = 1.0
) -> FitResult:
    """Time-stretch `audio` towards `target_samples`: speed up at most `max_speedup`, slow down at most `max_slowdown`.

    Returns the stretched audio (use `place` to pad/trim it into its slot), the speed applied and the remaining
    variance against the target.
    """
    if target_samples <= 0:
        raise ValueError("target_samples must be positive")
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) == 0:
        return FitResult(audio.copy(), 1.0, -100.0)
    wanted = len(audio) / target_samples
    speed = min(max(wanted, 1.0 / max_slowdown), max_speedup)
    stretched = time_stretch(audio, sample_rate, speed) if abs(speed - 1.0) >= 0.01 else audio.copy()
    if abs(speed - 1.0) < 0.01:
        speed = 1.0
    variance = (len(stretched) - target_samples) / target_samples * 100.0
    return FitResult(stretched, speed, variance)


def place(audio: FloatAudio, total_samples: int, offset: int = 0) -> FloatAudio:
    """Put `audio` into silence of exactly `total_samples`, starting at `offset` (moved earlier if it would not fit,
    trimmed only if it is longer than the whole slot)."""
    out = np.zeros(total_samples, dtype=np.float32)
    clip = np.asarray(audio, dtype=np.float32)[:total_samples]
    start = max(0, min(offset, total_samples - len(clip)))
    out[start : start + len(clip)] = clip
    return out
