"""Aligner: fit each dub to exactly its slot (pitfall 5), or return the slot's original audio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livedub.media.types import AudioSegment, DubOutcome, DubStatus, Pcm


@dataclass(frozen=True)
class SlotAudio:
    sequence_number: int
    start_sample: int
    pcm: Pcm  # exactly the slot's length and channel count
    dubbed: bool


def fit(pcm: Pcm, samples: int, channels: int) -> Pcm:
    """Pad with silence or trim to `samples`; mono -> `channels` by copying, more channels -> mono by averaging."""
    if pcm.ndim == 1:
        pcm = pcm.reshape(-1, 1)
    if pcm.shape[1] != channels:
        if pcm.shape[1] == 1:
            pcm = np.repeat(pcm, channels, axis=1)
        elif channels == 1:
            pcm = pcm.mean(axis=1, keepdims=True).astype(np.int16)
        else:
            pcm = pcm[:, :channels]
    if pcm.shape[0] >= samples:
        return np.ascontiguousarray(pcm[:samples], dtype=np.int16)
    out = np.zeros((samples, channels), dtype=np.int16)
    out[: pcm.shape[0]] = pcm
    return out


def original(segment: AudioSegment) -> SlotAudio:
    return SlotAudio(segment.sequence_number, segment.start_sample, segment.pcm, dubbed=False)


def align(segment: AudioSegment, outcome: DubOutcome) -> SlotAudio:
    """The audio to play in `segment`'s slot given the STS outcome."""
    if outcome.status is not DubStatus.DUBBED or outcome.pcm is None or outcome.pcm.size == 0:
        return original(segment)
    pcm = fit(outcome.pcm, segment.num_samples, segment.channels)
    return SlotAudio(segment.sequence_number, segment.start_sample, pcm, dubbed=True)
