"""Segmenter: cut the continuous audio into slots (`AudioSegment`s) whose positions are exact sample counts.

Two policies:
- `fixed`: every `segment_duration_ms` (the seed's behaviour, 6 s by default).
- `speech` (phrase streaming, the default): at a pause found by Silero VAD (the model faster-whisper ships), no
  shorter than `segment_min_ms`; when no pause comes, at the quietest point before `segment_max_ms`. Each phrase
  carries how much speech the VAD found in it (`speech_ms`), so phrases without speech need no STS work.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from livedub.media.settings import MediaSettings
from livedub.media.types import AudioSegment, Pcm


class Segmenter(Protocol):
    def push(self, start_sample: int, pcm: Pcm) -> list[AudioSegment]:
        """Add audio (normally right after the previous push; a hole is silence, an overlap is dropped) and return
        the segments it completes."""
        ...

    def flush(self) -> list[AudioSegment]:
        """The buffered remainder as a last segment (end of stream)."""
        ...


class _Buffer:
    """Contiguous PCM since `start` (the first sample not yet in a segment) that cuts into numbered segments."""

    def __init__(self, stream_id: str, sample_rate: int) -> None:
        self.stream_id = stream_id
        self.sample_rate = sample_rate
        self.start: int | None = None
        self.pcm: Pcm | None = None
        self.sequence = 0

    @property
    def size(self) -> int:
        return 0 if self.pcm is None else int(self.pcm.shape[0])

    @property
    def end(self) -> int:
        return (self.start or 0) + self.size

    def append(self, start_sample: int, pcm: Pcm) -> Pcm:
        """Add audio; returns what was added (the same audio unless it had to be padded or trimmed)."""
        if self.pcm is None or self.start is None:
            self.start, self.pcm = start_sample, pcm.copy()
            return pcm
        # Ingest hands over contiguous audio; should a hole or an overlap ever come, the stream goes on: silence
        # for the hole, the overlap dropped (positions stay exact sample counts either way).
        if start_sample > self.end:
            pcm = np.concatenate([np.zeros((start_sample - self.end, pcm.shape[1]), pcm.dtype), pcm])
        elif start_sample < self.end:
            pcm = pcm[self.end - start_sample :]
        self.pcm = np.concatenate([self.pcm, pcm])
        return pcm

    def cut(self, samples: int) -> AudioSegment:
        assert self.pcm is not None and self.start is not None and 0 < samples <= self.size
        segment = AudioSegment(
            stream_id=self.stream_id,
            sequence_number=self.sequence,
            start_sample=self.start,
            pcm=self.pcm[:samples].copy(),
            sample_rate=self.sample_rate,
        )
        self.sequence += 1
        self.start += samples
        self.pcm = self.pcm[samples:]
        return segment


class FixedSegmenter:
    """Segments of exactly `segment_samples` (the last one may be shorter)."""

    def __init__(self, stream_id: str, sample_rate: int, segment_samples: int) -> None:
        if segment_samples <= 0:
            raise ValueError("segment_samples must be positive")
        self.segment_samples = segment_samples
        self.buffer = _Buffer(stream_id, sample_rate)

    def push(self, start_sample: int, pcm: Pcm) -> list[AudioSegment]:
        self.buffer.append(start_sample, pcm)
        out: list[AudioSegment] = []
        while self.buffer.size >= self.segment_samples:
            out.append(self.buffer.cut(self.segment_samples))
        return out

    def flush(self) -> list[AudioSegment]:
        return [self.buffer.cut(self.buffer.size)] if self.buffer.size else []


class SpeechDetector(Protocol):
    """Speech probabilities for consecutive, fixed-size windows of the audio fed so far."""

    window_samples: float  # window length in input samples

    def feed(self, pcm: Pcm) -> npt.NDArray[np.float32]:
        """Feed contiguous audio; returns the probabilities of the windows completed by it (possibly none)."""
        ...


class SileroSpeechDetector:
    """Silero VAD (faster-whisper's ONNX model) on 32 ms windows of 16 kHz mono, resampled by FFmpeg."""

    VAD_RATE = 16000
    VAD_WINDOW = 512

    def __init__(self, sample_rate: int, channels: int, batch_windows: int = 5) -> None:
        from faster_whisper.vad import get_vad_model

        self.model = get_vad_model()
        self.channels = channels
        self.sample_rate = sample_rate
        self.window_samples = self.VAD_WINDOW * sample_rate / self.VAD_RATE
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.VAD_RATE)
        self.pending = np.zeros(0, dtype=np.float32)
        self.pts = 0
        self.batch = batch_windows * self.VAD_WINDOW  # one model call per 160 ms: CPU, not accuracy

    def feed(self, pcm: Pcm) -> npt.NDArray[np.float32]:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono" if self.channels == 1 else "stereo"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self.pts
        self.pts += pcm.shape[0]
        parts = [self.pending] + [f.to_ndarray().reshape(-1) for f in self.resampler.resample(frame)]
        audio = np.concatenate(parts)
        usable = (audio.shape[0] // self.VAD_WINDOW) * self.VAD_WINDOW
        if usable < self.batch:
            self.pending = audio
            return np.zeros(0, dtype=np.float32)
        self.pending = audio[usable:]
        probs = self.model(audio[:usable], num_samples=self.VAD_WINDOW)
        return np.asarray(probs, dtype=np.float32).reshape(-1)[: usable // self.VAD_WINDOW]


class SpeechSegmenter:
    """Cuts in the middle of the first pause (>= `pause_ms` below `threshold`) that leaves >= min_samples;
    at max_samples without a pause, cuts at the quietest window between min and max."""

    def __init__(
        self,
        stream_id: str,
        sample_rate: int,
        min_samples: int,
        max_samples: int,
        detector: SpeechDetector,
        pause_ms: int = 250,
        threshold: float = 0.5,
    ) -> None:
        if not 0 < min_samples <= max_samples:
            raise ValueError("need 0 < min_samples <= max_samples")
        self.buffer = _Buffer(stream_id, sample_rate)
        self.min_samples = min_samples
        self.max_samples = max_samples
        self.detector = detector
        self.threshold = threshold
        self.pause_windows = max(1, round(pause_ms * sample_rate / 1000 / detector.window_samples))
        self.probs = np.zeros(0, dtype=np.float32)  # all windows since the first sample
        self.first_sample: int | None = None

    def push(self, start_sample: int, pcm: Pcm) -> list[AudioSegment]:
        if self.first_sample is None:
            self.first_sample = start_sample
        added = self.buffer.append(start_sample, pcm)
        self.probs = np.concatenate([self.probs, self.detector.feed(added)])
        out: list[AudioSegment] = []
        while (cut := self._cut_point()) is not None:
            out.append(self._with_speech(self.buffer.cut(cut)))
        return out

    def flush(self) -> list[AudioSegment]:
        return [self._with_speech(self.buffer.cut(self.buffer.size))] if self.buffer.size else []

    def _with_speech(self, segment: AudioSegment) -> AudioSegment:
        """The segment with the VAD's measure of its speech (windows at or above the threshold) and its onset."""
        first, last = self._window_range(segment.start_sample, segment.end_sample)
        voiced = np.flatnonzero(self.probs[first:last] >= self.threshold)
        window_ms = 1000.0 * self.detector.window_samples / segment.sample_rate
        onset_ms = None
        if len(voiced):  # the first voiced window's first sample, from the segment start
            onset = (self.first_sample or 0) + (first + int(voiced[0])) * self.detector.window_samples
            onset_ms = max(0.0, 1000.0 * (onset - segment.start_sample) / segment.sample_rate)
        return replace(segment, speech_ms=len(voiced) * window_ms, speech_start_ms=onset_ms)

    def _window_range(self, begin: int, end: int) -> tuple[int, int]:
        """Indexes of the windows fully inside [begin, end) (absolute samples)."""
        w = self.detector.window_samples
        base = self.first_sample or 0
        first = int(np.ceil((begin - base) / w))
        last = min(int((end - base) // w), self.probs.shape[0])
        return first, last

    def _cut_point(self) -> int | None:
        """Samples to cut from the buffer now, or None to wait for more audio."""
        if self.buffer.size < self.min_samples:
            return None
        w = self.detector.window_samples
        base = self.first_sample or 0
        start = self.buffer.start or 0
        limit = start + min(self.buffer.size, self.max_samples)
        first, last = self._window_range(start, limit)
        quiet = self.probs[first:last] < self.threshold
        run = 0
        for i, is_quiet in enumerate(quiet):
            run = run + 1 if is_quiet else 0
            if run >= self.pause_windows:
                run_start = base + (first + i - run + 1) * w
                run_end = base + (first + i + 1) * w
                cut = round((run_start + run_end) / 2) - start
                if cut >= self.min_samples:
                    return cut
                if run_end - start >= self.min_samples:
                    return self.min_samples  # the pause spans the minimum length
        if self.buffer.size < self.max_samples:
            return None
        lo, hi = self._window_range(start + self.min_samples, start + self.max_samples)
        if hi <= lo:
            return self.max_samples
        quietest = lo + int(np.argmin(self.probs[lo:hi]))
        return min(self.max_samples, round(base + (quietest + 0.5) * w) - start)


def make_segmenter(stream_id: str, settings: MediaSettings, channels: int) -> Segmenter:
    rate = settings.audio_sample_rate
    if settings.segment_policy == "speech":
        return SpeechSegmenter(
            stream_id,
            rate,
            min_samples=settings.segment_min_ms * rate // 1000,
            max_samples=max(settings.segment_min_ms, settings.segment_max_ms) * rate // 1000,
            detector=SileroSpeechDetector(rate, channels),
            pause_ms=settings.segment_pause_ms,
            threshold=settings.segment_vad_threshold,
        )
    return FixedSegmenter(stream_id, rate, settings.segment_duration_ms * rate // 1000)
