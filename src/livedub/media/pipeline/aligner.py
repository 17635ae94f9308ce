"""Aligner: turn an STS outcome into a clip for the dub track, or say why the phrase keeps its original voice.

The STS returns the dub on the fragment's own timeline (its speech placed where the original speech started, silence
around it). The clip is that speech alone, as mono float, with the output sample it belongs at. A dub that comes in
chunks gives one clip per chunk (`chunk_clip`), each at its own place.
"""

from __future__ import annotations

import numpy as np

from livedub.media.pipeline.dubtrack import DubClip, FloatAudio
from livedub.media.types import AudioSegment, DubChunkAudio, DubOutcome, DubStatus, Pcm

SILENCE = 1e-3  # amplitude (of full scale) under which the dub's edges count as silence


def _sound(pcm: Pcm) -> tuple[int, FloatAudio] | None:
    """(first loud sample, mono float audio from it to the last loud sample); None when all silent."""
    if pcm.size == 0:
        return None
    mono = pcm.reshape(len(pcm), -1).astype(np.float32).mean(axis=1) / 32768.0
    loud = np.flatnonzero(np.abs(mono) > SILENCE)
    if not len(loud):
        return None
    first, last = int(loud[0]), int(loud[-1]) + 1
    return first, mono[first:last]


def dub_clip(segment: AudioSegment, outcome: DubOutcome) -> DubClip | None:
    """The dub's speech and where it starts; None when there is no dub to play (the reason is in the outcome)."""
    if outcome.status is not DubStatus.DUBBED or outcome.pcm is None:
        return None
    sound = _sound(outcome.pcm)
    if sound is None:
        return None  # STS heard no speech: nothing to dub over
    first, audio = sound
    return DubClip(segment.sequence_number, segment.start_sample + first, audio)


def chunk_clip(segment: AudioSegment, chunk: DubChunkAudio) -> DubClip | None:
    """A dub chunk's sound (edge silence trimmed) and the output sample it belongs at; None when it is silent (a
    later chunk keeps its own place: the silence is not lost)."""
    sound = _sound(chunk.pcm)
    if sound is None:
        return None
    first, audio = sound
    return DubClip(segment.sequence_number, segment.start_sample + chunk.offset_samples + first, audio)


def fallback_reason(outcome: DubOutcome) -> str:
    if outcome.status is DubStatus.DUBBED:
        return "no_speech"
    return outcome.reason or "failed"
