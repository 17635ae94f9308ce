"""What plays under a dub: the original ducked (`duck`), or the original minus its speech (`separate`).

Where no dub plays the original is heard at full level; the muxer crossfades between the two with the dub track's
envelope: out = original * (1 - w) + under_dub * w + dub.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from livedub.media.settings import MediaSettings
from livedub.media.types import Pcm

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


def make_background(settings: MediaSettings, sample_rate: int, channels: int) -> Background:
    """The background BACKGROUND_MODE names, for one stream."""
    if settings.background_mode == "separate":
        raise NotImplementedError("BACKGROUND_MODE=separate is not available yet")
    return DuckedBackground(settings.duck_gain_db)
