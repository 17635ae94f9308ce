"""The media-service's STS payload codec: pcm_s16le and m4a both ways, lengths, alignment and channel mapping."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.media.sts_audio import decode_payload, downmix_to_mono, encode_payload, match_channels
from livedub.protocol import AudioFormat, AudioPayload

pytestmark = pytest.mark.unit

RATE = 48000


def smooth_noise(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Low-passed noise: not periodic, so a shifted copy does not correlate, and AAC codes it faithfully."""
    noise = np.random.default_rng(seed).standard_normal((round(seconds * RATE) + 47, channels))
    kernel = np.ones(48) / 48
    smooth = np.stack([np.convolve(noise[:, c], kernel, mode="valid") for c in range(channels)], axis=1)
    return (smooth / np.abs(smooth).max() * 12000).astype(np.int16)


def test_pcm_round_trip_is_exact() -> None:
    pcm = smooth_noise(1.0, channels=2)
    payload = encode_payload(pcm, RATE, AudioFormat.PCM_S16LE)
    assert payload.duration_ms == pytest.approx(1000.0)
    assert np.array_equal(decode_payload(payload, RATE, 2), pcm)


def test_m4a_round_trip_keeps_length_and_alignment() -> None:
    pcm = smooth_noise(2.0)
    out = decode_payload(encode_payload(pcm, RATE, AudioFormat.M4A), RATE, 1)
    assert out.shape == pcm.shape
    reference = pcm[:, 0].astype(float)
    lags = range(-64, 1100, 8)
    best = max(lags, key=lambda lag: np.dot(np.roll(out[:, 0].astype(float), -lag), reference))
    assert abs(best) <= 8  # no 1024-sample encoder priming left in the decoded dub


def test_mono_dub_is_copied_to_every_channel_at_full_level() -> None:
    mono = smooth_noise(0.5)
    stereo = decode_payload(encode_payload(mono, RATE, AudioFormat.PCM_S16LE), RATE, 2)
    assert stereo.shape == (mono.shape[0], 2)
    assert np.array_equal(stereo[:, 0], mono[:, 0]) and np.array_equal(stereo[:, 1], mono[:, 0])


def test_resampled_payload_has_the_segment_rate() -> None:
    mono = smooth_noise(1.0)
    payload = encode_payload(mono, RATE, AudioFormat.PCM_S16LE)
    assert abs(decode_payload(payload, 16000, 1).shape[0] - 16000) <= 32


def test_downmix_and_match_channels() -> None:
    stereo = np.array([[100, 300], [-50, 50]], dtype=np.int16)
    assert downmix_to_mono(stereo).tolist() == [[200], [0]]
    assert match_channels(stereo, 1).tolist() == [[200], [0]]
    assert match_channels(stereo, 2) is stereo


def test_broken_payloads_raise_value_error() -> None:
    odd = AudioPayload.from_bytes(b"\x00\x01\x02", format=AudioFormat.PCM_S16LE, sample_rate_hz=RATE, channels=1,
                                  duration_ms=0.0)  # fmt: skip
    with pytest.raises(ValueError):
        decode_payload(odd, RATE, 1)
    garbage = AudioPayload.from_bytes(b"not an mp4 at all" * 10, format=AudioFormat.M4A, sample_rate_hz=RATE,
                                      channels=1, duration_ms=100.0)  # fmt: skip
    with pytest.raises(ValueError):
        decode_payload(garbage, RATE, 1)
