"""A growing window of one stream's int16 PCM, addressed by absolute sample position."""

from __future__ import annotations

import numpy as np

from livedub.media.types import Pcm


class PcmBuffer:
    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.start = 0  # absolute position of self.pcm[0]
        self.pcm: Pcm = np.zeros((0, channels), dtype=np.int16)
        self._started = False

    @property
    def end(self) -> int:
        """One past the last sample held (or ever held, once discarded)."""
        return self.start + int(self.pcm.shape[0])

    def append(self, start_sample: int, pcm: Pcm) -> None:
        """Add audio at `start_sample`: a gap is filled with silence, an overlap overwrites nothing (dropped)."""
        if not self._started:
            self.start, self._started = start_sample, True
        if start_sample > self.end:
            pcm = np.concatenate([np.zeros((start_sample - self.end, self.channels), np.int16), pcm])
        elif start_sample < self.end:
            pcm = pcm[self.end - start_sample :]
        if len(pcm):
            self.pcm = np.concatenate([self.pcm, pcm.astype(np.int16, copy=False)])

    def read(self, start: int, n: int) -> Pcm:
        """Samples [start, start + n); silence where nothing is held."""
        out = np.zeros((n, self.channels), dtype=np.int16)
        lo, hi = max(start, self.start), min(start + n, self.end)
        if hi > lo:
            out[lo - start : hi - start] = self.pcm[lo - self.start : hi - self.start]
        return out

    def discard_before(self, sample: int) -> None:
        if sample > self.start:
            cut = min(sample, self.end) - self.start
            self.pcm = self.pcm[cut:]
            self.start += cut
