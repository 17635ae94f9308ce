"""The media-service's segment <-> STS payload mapping: mono to STS, the dub back at the segment's rate/channels."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.media.sts_link.sts_audio import dub_pcm, segment_payload
from livedub.media.types import AudioSegment
from livedub.protocol import AudioFormat
from livedub.protocol.codec import encode_payload

pytestmark = pytest.mark.unit

RATE = 48000


def segment(pcm: np.ndarray) -> AudioSegment:
    return AudioSegment(stream_id="s", sequence_number=0, start_sample=0, pcm=pcm, sample_rate=RATE)


def test_a_stereo_segment_goes_to_sts_as_mono() -> None:
    stereo = np.array([[100, 300], [-50, 50], [7, 9]], dtype=np.int16)
    payload = segment_payload(segment(stereo), AudioFormat.PCM_S16LE)
    assert (payload.channels, payload.sample_rate_hz) == (1, RATE)
    assert payload.duration_ms == pytest.approx(3 / RATE * 1000)
    assert np.frombuffer(payload.decode_bytes(), "<i2").tolist() == [200, 0, 8]


def test_the_dub_comes_back_mono_at_the_segment_rate() -> None:
    """Mono until the muxer mixes it onto every output channel (test_media_mux: the dub on both channels)."""
    stereo = np.zeros((RATE // 10, 2), dtype=np.int16)
    mono_16k = (np.arange(1600, dtype=np.int16) % 200 - 100).reshape(-1, 1).astype(np.int16)
    pcm = dub_pcm(encode_payload(mono_16k, 16000, AudioFormat.PCM_S16LE), segment(stereo))
    assert pcm.shape[1] == 1 and abs(pcm.shape[0] - RATE // 10) <= 32
    assert np.abs(pcm).max() > 50  # the tone, resampled, not silence
