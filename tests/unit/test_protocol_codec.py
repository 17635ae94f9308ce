"""The protocol's audio payload codec (both services use it): pcm_s16le and m4a both ways, lengths, alignment,
channel mapping, and the float helpers of the STS side."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.protocol import AudioFormat, AudioPayload
from livedub.protocol.codec import (
    PayloadDecodeError,
    decode_bytes,
    decode_payload,
    downmix_to_mono,
    encode_bytes,
    encode_payload,
    float_to_pcm,
    match_channels,
    pcm_to_float,
)

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
    with pytest.raises(PayloadDecodeError):  # the codec's own ValueError
        decode_payload(AUDIO_WITH_BAD_BASE64)


AUDIO_WITH_BAD_BASE64 = AudioPayload(
    format=AudioFormat.PCM_S16LE, sample_rate_hz=RATE, channels=1, duration_ms=1.0, data_base64="%%%"
)


def test_decode_defaults_to_the_declared_rate_and_channels() -> None:
    stereo = smooth_noise(0.25, channels=2)
    payload = encode_payload(stereo, RATE, AudioFormat.PCM_S16LE)
    assert np.array_equal(decode_payload(payload), stereo)


def test_bytes_level_decode_mixes_down_and_resamples_like_the_sts_needs() -> None:
    stereo = smooth_noise(1.0, channels=2)
    data = encode_bytes(stereo, RATE, AudioFormat.PCM_S16LE)
    mono_16k = decode_bytes(data, "pcm_s16le", RATE, 2, rate=16000, to_channels=1)
    assert mono_16k.shape[1] == 1 and abs(mono_16k.shape[0] - 16000) <= 32
    m4a = encode_bytes(stereo, RATE, AudioFormat.M4A)
    decoded = decode_bytes(m4a, AudioFormat.M4A, RATE, 2, to_channels=1, duration_ms=1000.0)
    assert decoded.shape == (RATE, 1)  # the AAC padding is cut at the declared duration
    assert np.corrcoef(decoded[:, 0].astype(float), downmix_to_mono(stereo)[:, 0].astype(float))[0, 1] > 0.9


def test_m4a_bitrate_is_sized_for_speech() -> None:
    size = len(encode_bytes(smooth_noise(2.0), RATE, AudioFormat.M4A))
    assert 10_000 < size < 2 * 96_000 / 8 * 1.25  # ~96 kbit/s per channel, container included


def test_float_helpers_round_trip() -> None:
    audio = np.array([0.0, 0.5, -0.5, 1.5, -1.5], dtype=np.float32)
    pcm = float_to_pcm(audio)
    assert pcm.shape == (5, 1) and pcm.dtype == np.int16
    assert pcm[:, 0].tolist() == [0, 16384, -16384, 32767, -32767]  # clipped to [-1, 1]
    assert np.allclose(pcm_to_float(pcm)[:, 0], [0.0, 0.5, -0.5, 1.0, -1.0], atol=1e-4)
