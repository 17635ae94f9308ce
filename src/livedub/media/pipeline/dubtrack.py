"""The dub track: where each dub plays on the output timeline, and where the background steps aside for it.

Pure sample arithmetic on one stream's output timeline (unit-tested):
- A dub is wanted where its phrase's speech starts; it may run on into the following pause and beyond.
- A dub that comes while the previous one still plays queues behind it (plus a short breath); a dub that comes late
  starts as soon as the output allows. Either way it is sped up (at most `max_speedup`, FFmpeg atempo) so that it
  ends where it would have ended on schedule: the track catches up instead of drifting.
- A dub that cannot start within `max_late_s` of its place is dropped: its phrase keeps the original voice.
- `weights()` is the 0..1 envelope of where dubs play, with linear fades, for the background mix.

A dub that comes in chunks (`fragment:chunk`, a clause at a time) starts on its first chunk (`place(..., grows=True)`,
the rules above) and grows: `extend()` puts each later chunk where it belongs relative to the first, at the first
chunk's speed, right after what is placed when the chunks are contiguous (no gap, no overlap, the envelope stays 1
across the join). The next phrase's dub queues behind the grown dub (`queue_end` follows the growth).
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
JOIN_TOLERANCE_S = 0.02  # a chunk due this close to the end of what is placed joins it (time-stretch rounding)


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

    @property
    def wanted_start(self) -> int:
        return self.start - self.late_samples


@dataclass(frozen=True)
class PlacedChunk:
    """Where a later chunk of a growing dub plays: output samples [start, end), and how it got there (`appended`
    right after what was placed, or `late_start` after a gap)."""

    sequence_number: int
    start: int
    end: int
    outcome: str


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
        self.join_tolerance = round(JOIN_TOLERANCE_S * sample_rate)
        self.placed: list[PlacedDub] = []
        self.queue_end = 0  # end sample of the last placed dub
        self.growing: dict[int, PlacedDub] = {}  # per phrase whose dub may still grow: its last placed part

    def lead_samples(self) -> int:
        """How far ahead of the output a dub must be placed so that the background can fade before it."""
        return self.fade

    def latest_start(self, wanted_start: int) -> int:
        """The last output sample a dub wanted at `wanted_start` may start at; a dub that cannot is dropped (its
        phrase keeps the original voice). The one lateness rule: the muxer's deadline and its fallback follow it."""
        return wanted_start + self.max_late

    def place(self, clip: DubClip, earliest: int, *, grows: bool = False) -> PlacedDub | None:
        """Schedule `clip` no earlier than `earliest` (the first output sample still free to change). None: it
        would start more than `max_late_s` after its place, so it is dropped. `grows`: the clip is a dub's first
        chunk, later chunks `extend()` it (until `end_growth()`)."""
        queued = self.queue_end + self.breath if self.queue_end else 0
        start = max(clip.wanted_start, queued, earliest)
        if start > self.latest_start(clip.wanted_start):
            return None
        late = start - clip.wanted_start
        speed = self._catch_up(len(clip.audio), late, 1.0)
        placed = PlacedDub(clip.sequence_number, start, self._stretched(clip.audio, speed), speed, late)
        self.placed.append(placed)
        self.queue_end = placed.end
        if grows:
            self.growing[clip.sequence_number] = placed
        return placed

    def extend(self, sequence_number: int, audio: FloatAudio, wanted_start: int, earliest: int) -> PlacedChunk | None:
        """A later chunk of the growing dub of phrase `sequence_number`: `audio` wanted at output sample
        `wanted_start` on schedule (the phrase's start + the chunk's offset), `earliest` the first output sample not
        yet rendered. None: dropped (the dub does not grow, or the chunk cannot be played).

        It keeps its offset from the dub's first chunk, scaled by that chunk's catch-up speed (and is sped up as
        much): it is due at `first start + (wanted_start - first wanted start) / speed`. Due within
        `JOIN_TOLERANCE_S` of the end of what is placed (or before it: an overlap), it joins that end exactly;
        due later, the gap between is the dub's own silence.

        - Appended (`appended`) while the end of what is placed is not yet rendered: the placed audio grows (silence
          in the gap, then the chunk), one dub, the background's envelope stays 1 across the join.
        - Late (`late_start`): the output already played past the end of what is placed. The chunk starts at the
          first sample where the background can fade down again (`earliest` + the fade), or where it is due if that
          is later: the background fades back up in the gap and down again. Like any dub, it must start within
          `max_late_s` of its place on schedule (`wanted_start`), sped up (at most `max_speedup`) to end there, and
          later chunks follow it.
        - Dropped: later than that, or it would run into the next phrase's dub already placed behind this one
          (the words would play out of order).
        """
        part = self.growing.get(sequence_number)
        if part is None or not len(audio):
            return None
        due = part.start + round((wanted_start - part.wanted_start) / part.speed)
        join = part.end if due - part.end <= self.join_tolerance else due
        if part.end >= earliest:
            chunk = self._stretched(audio, part.speed)
            end = join + len(chunk)
            if self._blocked(sequence_number, part.end, end):
                return None
            gap = np.zeros(join - part.end, dtype=np.float32)
            grown = PlacedDub(sequence_number, part.start, np.concatenate([part.audio, gap, chunk]), part.speed,
                              part.late_samples)  # fmt: skip
            self._replace(part, grown)
            return PlacedChunk(sequence_number, join, end, "appended")
        start = max(join, earliest + self.fade)
        if start > self.latest_start(wanted_start):
            return None
        late = start - wanted_start
        speed = self._catch_up(len(audio), late, part.speed)
        chunk = self._stretched(audio, speed)
        if self._blocked(sequence_number, start, start + len(chunk)):
            return None
        placed = PlacedDub(sequence_number, start, chunk, speed, late)
        self.placed.append(placed)
        self.growing[sequence_number] = placed
        self.queue_end = max(self.queue_end, placed.end)
        return PlacedChunk(sequence_number, start, placed.end, "late_start")

    def end_growth(self, sequence_number: int) -> None:
        """The dub of `sequence_number` is complete (its last chunk, or its final answer came)."""
        self.growing.pop(sequence_number, None)

    def _catch_up(self, length: int, late: int, speed: float) -> float:
        """The speed of a dub (part) of `length` samples starting `late` samples late, at least `speed`."""
        if late >= MIN_CATCH_UP_S * self.sample_rate and length:
            return max(speed, catch_up_speed(length, late, self.max_speedup))
        return speed

    def _stretched(self, audio: FloatAudio, speed: float) -> FloatAudio:
        if speed != 1.0 and len(audio):
            audio = self.stretch(audio, speed)
        return audio.astype(np.float32, copy=False)

    def _blocked(self, sequence_number: int, start: int, end: int) -> bool:
        """Whether another phrase's dub plays within a breath of [start, end)."""
        return any(
            p.sequence_number != sequence_number and p.start < end + self.breath and p.end + self.breath > start
            for p in self.placed
        )

    def _replace(self, part: PlacedDub, grown: PlacedDub) -> None:
        index = next((i for i, p in enumerate(self.placed) if p is part), None)
        if index is None:
            self.placed.append(grown)
        else:
            self.placed[index] = grown
        self.growing[grown.sequence_number] = grown
        self.queue_end = max(self.queue_end, grown.end)

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
