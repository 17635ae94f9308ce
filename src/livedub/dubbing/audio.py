"""Audio helpers of the STS pipeline: decode/encode fragment payloads and fit a dub to its fragment's duration.

Resampling and time-stretching run in FFmpeg (through PyAV): `aresample` via `av.AudioResampler`, `atempo` via a
filter graph. Audio inside the pipeline is mono float32 in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.error
import numpy as np

from livedub.dubbing.interfaces import FloatAudio, InvalidAudioError
from livedub.protocol import AudioFormat, AudioPayload, FragmentStatus, codec

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


def decode_audio(
    data: bytes, fmt: AudioFormat | str, sample_rate_hz: int, channels: int, target_rate: int
) -> FloatAudio:
    """Decode a fragment payload (raw pcm_s16le or an m4a/AAC file) to mono float32 at `target_rate` (the payload
    codec of `livedub.protocol.codec`).

    Raises InvalidAudioError when the bytes do not decode or do not match the declared format.
    """
    if not data:
        raise InvalidAudioError("empty audio payload")
    try:
        pcm = codec.decode_bytes(data, fmt, sample_rate_hz, channels, rate=target_rate, to_channels=1)
    except ValueError as exc:  # PayloadDecodeError, or an unknown format
        raise InvalidAudioError(str(exc)) from exc
    if len(pcm) == 0:
        raise InvalidAudioError(f"{AudioFormat(fmt)} payload decodes to no audio")
    return codec.pcm_to_float(pcm)[:, 0]


def encode_audio(audio: FloatAudio, sample_rate: int, fmt: AudioFormat | str, channels: int = 1) -> bytes:
    """Encode mono float audio as raw pcm_s16le or as an m4a (AAC in MP4) file, copied to `channels` channels."""
    return codec.encode_bytes(codec.match_channels(codec.float_to_pcm(audio), channels), sample_rate, fmt)


def mono_payload(audio: FloatAudio, sample_rate: int, fmt: AudioFormat) -> AudioPayload:
    """Mono float audio encoded as an `AudioPayload` of `fmt` (duration from its sample count)."""
    return codec.encode_payload(codec.float_to_pcm(audio), sample_rate, fmt)


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
    def status(self) -> FragmentStatus:
        return duration_status(self.variance_percent)


def duration_status(variance_percent: float) -> FragmentStatus:
    """success within ±10 % of the target duration, partial within ±20 %, failed beyond."""
    deviation = abs(variance_percent)
    if deviation <= SUCCESS_VARIANCE_PERCENT:
        return FragmentStatus.SUCCESS
    if deviation <= PARTIAL_VARIANCE_PERCENT:
        return FragmentStatus.PARTIAL
    return FragmentStatus.FAILED


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
