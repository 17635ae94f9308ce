"""What plays under a dub: the original ducked (`duck`), or the original minus its speech (`separate`).

Where no dub plays the original is heard at full level; the muxer crossfades between the two with the dub track's
envelope: out = original * (1 - w) + under_dub * w + dub.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from livedub.media.pipeline.pcm_buffer import PcmBuffer
from livedub.media.settings import MediaSettings
from livedub.media.types import Pcm

if TYPE_CHECKING:
    from livedub.media.pipeline.separation import BedSeparator

KEEP_BED_S = 30.0  # separated bed kept behind the newest input (the delay line is far shorter)

FloatPcm = npt.NDArray[np.float32]
"""(samples, channels) float32 in [-1, 1]."""


class Background(Protocol):
    def feed(self, start_sample: int, pcm: Pcm) -> None:
        """The input's audio as it arrives (contiguous)."""

    def under_dub(self, start: int, original: FloatPcm) -> FloatPcm:
        """The background for output samples [start, start + len(original)) while a dub plays."""
        ...

    def flush(self) -> None:
        """End of input: make everything fed available."""


def db_to_gain(db: float) -> float:
    return float(10 ** (db / 20))


class DuckedBackground:
    """The original at `gain_db` (about -15 dB): the voice stays faintly audible, the music keeps going."""

    def __init__(self, gain_db: float = -15.0) -> None:
        self.gain = db_to_gain(gain_db)

    def feed(self, start_sample: int, pcm: Pcm) -> None:
        return None

    def under_dub(self, start: int, original: FloatPcm) -> FloatPcm:
        return original * self.gain

    def flush(self) -> None:
        return None


class SeparatedBackground:
    """The original minus its speech (DeepFilterNet3, `separation.BedSeparator`) at `gain_db`: music and ambience go
    on under the dub with less of the original voice. The separator's latency (40 ms) is far inside the delay line.
    Measured (docs/benchmarks-background.md): the bed keeps the voice 8.9 dB down, so -6 dB puts it 15 dB down."""

    def __init__(self, separator: BedSeparator, gain_db: float = 0.0) -> None:
        self.separator = separator
        self.gain = db_to_gain(gain_db)
        self.sample_rate = separator.sample_rate
        self.bed = PcmBuffer(separator.channels)
        self.out_pos: int | None = None  # input position of the next separated sample

    def feed(self, start_sample: int, pcm: Pcm) -> None:
        if self.out_pos is None:
            self.out_pos = start_sample - self.separator.latency_samples
        self._keep(self.separator.process(pcm).bed)

    def _keep(self, bed: Pcm) -> None:
        assert self.out_pos is not None
        self.bed.append(self.out_pos, bed)
        self.out_pos += len(bed)
        self.bed.discard_before(self.out_pos - round(KEEP_BED_S * self.sample_rate))

    def under_dub(self, start: int, original: FloatPcm) -> FloatPcm:
        return self.bed.read(start, len(original)).astype(np.float32) * (self.gain / 32768.0)

    def flush(self) -> None:
        if self.out_pos is not None:
            self._keep(self.separator.flush().bed)


def make_background(settings: MediaSettings, sample_rate: int, channels: int) -> Background:
    """The background BACKGROUND_MODE names, for one stream."""
    if settings.background_mode == "separate":
        from livedub.media.pipeline.separation import BedSeparator  # its C runtime loads only in this mode

        return SeparatedBackground(BedSeparator(sample_rate, max(1, channels)), settings.separate_bed_gain_db)
    return DuckedBackground(settings.duck_gain_db)
