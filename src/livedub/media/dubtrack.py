"""The dub track: where each dub plays on the output timeline, and where the background steps aside for it.

Pure sample arithmetic on one stream's output timeline (unit-tested):
- A dub is wanted where its phrase's speech starts; it may run on into the following pause and beyond.
- A dub that comes while the previous one still plays queues behind it (plus a short breath); a dub that comes late
  starts as soon as the output allows. Either way it is sped up (at most `max_speedup`, FFmpeg atempo) so that it
  ends where it would have ended on schedule: the track catches up instead of drifting.
- A dub that cannot start within `max_late_s` of its place is dropped: its phrase keeps the original voice.
- `weights()` is the 0..1 envelope of where dubs play, with linear fades, for the background mix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatAudio = npt.NDArray[np.float32]
"""Mono float32 PCM in [-1, 1]."""

Stretch = Callable[[FloatAudio, float], FloatAudio]
"""Time-stretch `audio` to play `speed` times faster, pitch kept."""

MIN_CATCH_UP_S = 0.04  # lateness under one video frame is not worth a time-stretch


@dataclass(frozen=True)
class DubClip:
    """A dub as it came back: its speech only (edge silence trimmed) and the output sample it belongs at."""

    sequence_number: int
    wanted_start: int
    audio: FloatAudio


@dataclass(frozen=True)
class PlacedDub:
    sequence_number: int
    start: int
    audio: FloatAudio  # after the catch-up speed-up
    speed: float
    late_samples: int  # start - wanted start

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


def catch_up_speed(length: int, late: int, max_speedup: float) -> float:
    """Speed that makes a dub of `length` samples starting `late` samples late end on schedule, capped."""
    if late <= 0:
        return 1.0
    if late >= length:
        return max_speedup
    return min(max_speedup, length / (length - late))


class DubTrack:
    def __init__(
        self,
        sample_rate: int,
        stretch: Stretch,
        *,
        max_late_s: float = 1.5,
        max_speedup: float = 1.3,
        breath_s: float = 0.1,
        fade_s: float = 0.08,
    ) -> None:
        self.sample_rate = sample_rate
        self.stretch = stretch
        self.max_late = round(max_late_s * sample_rate)
        self.max_speedup = max_speedup
        self.breath = round(breath_s * sample_rate)
        self.fade = max(1, round(fade_s * sample_rate))
        self.placed: list[PlacedDub] = []
        self.queue_end = 0  # end sample of the last placed dub

    def lead_samples(self) -> int:
        """How far ahead of the output a dub must be placed so that the background can fade before it."""
        return self.fade

    def place(self, clip: DubClip, earliest: int) -> PlacedDub | None:
        """Schedule `clip` no earlier than `earliest` (the first output sample still free to change). None: it
        would start more than `max_late_s` after its place, so it is dropped."""
        queued = self.queue_end + self.breath if self.queue_end else 0
        start = max(clip.wanted_start, queued, earliest)
        late = start - clip.wanted_start
        if late > self.max_late:
            return None
        speed = 1.0
        audio = clip.audio
        if late >= MIN_CATCH_UP_S * self.sample_rate and len(audio):
            speed = catch_up_speed(len(audio), late, self.max_speedup)
            audio = self.stretch(audio, speed)
        placed = PlacedDub(clip.sequence_number, start, audio.astype(np.float32, copy=False), speed, late)
        self.placed.append(placed)
        self.queue_end = placed.end
        return placed

    def render(self, start: int, n: int) -> tuple[FloatAudio, FloatAudio]:
        """(dub audio, background weight) for output samples [start, start + n): the weight is 1 where a dub plays,
        0 where none does, with linear fades of `fade_s` before and after each dub."""
        dub = np.zeros(n, dtype=np.float32)
        weight = np.zeros(n, dtype=np.float32)
        positions = np.arange(start, start + n, dtype=np.float64)
        for placed in self.placed:
            if placed.end + self.fade <= start or placed.start - self.fade >= start + n:
                continue
            lo, hi = max(start, placed.start), min(start + n, placed.end)
            if hi > lo:
                dub[lo - start : hi - start] += placed.audio[lo - placed.start : hi - placed.start]
            rise = (positions - (placed.start - self.fade)) / self.fade
            fall = ((placed.end + self.fade) - positions) / self.fade
            weight = np.maximum(weight, np.clip(np.minimum(rise, fall), 0.0, 1.0).astype(np.float32))
        return dub, weight

    def forget_before(self, sample: int) -> None:
        """Drop dubs that end (with their fade) before `sample`: they can no longer be rendered."""
        self.placed = [p for p in self.placed if p.end + self.fade > sample]
