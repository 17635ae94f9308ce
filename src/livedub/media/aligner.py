"""Aligner: turn an STS outcome into a clip for the dub track, or say why the phrase keeps its original voice.

The STS returns the dub on the fragment's own timeline (its speech placed where the original speech started, silence
around it). The clip is that speech alone, as mono float, with the output sample it belongs at.
"""

from __future__ import annotations

import numpy as np

from livedub.media.dubtrack import DubClip
from livedub.media.types import AudioSegment, DubOutcome, DubStatus

SILENCE = 1e-3  # amplitude (of full scale) under which the dub's edges count as silence


def dub_clip(segment: AudioSegment, outcome: DubOutcome) -> DubClip | None:
    """The dub's speech and where it starts; None when there is no dub to play (the reason is in the outcome)."""
    if outcome.status is not DubStatus.DUBBED or outcome.pcm is None or outcome.pcm.size == 0:
        return None
    pcm = outcome.pcm.reshape(len(outcome.pcm), -1)
    mono = pcm.astype(np.float32).mean(axis=1) / 32768.0
    loud = np.flatnonzero(np.abs(mono) > SILENCE)
    if not len(loud):
        return None  # STS heard no speech: nothing to dub over
    first, last = int(loud[0]), int(loud[-1]) + 1
    return DubClip(segment.sequence_number, segment.start_sample + first, mono[first:last])


def fallback_reason(outcome: DubOutcome) -> str:
    if outcome.status is DubStatus.DUBBED:
        return "no_speech"
    return outcome.reason or "failed"
