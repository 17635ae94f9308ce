"""Fragment audio codecs, resampling, time-stretch and the duration-fit rule (FFmpeg through PyAV)."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.dubbing.audio import duration_status, fit_duration, place, resample, time_stretch
from livedub.dubbing.values import FitStatus
from livedub.sts.payload_audio import InvalidAudioError, decode_audio, encode_audio

pytestmark = pytest.mark.unit


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def test_pcm_round_trip_is_exact_to_one_step() -> None:
    audio = tone(1.0, 16000)
    decoded = decode_audio(encode_audio(audio, 16000, "pcm_s16le"), "pcm_s16le", 16000, 1, 16000)
    assert len(decoded) == len(audio)
    assert np.abs(decoded - audio).max() <= 1 / 32768 + 1e-6


def test_pcm_stereo_is_downmixed_and_encoded_interleaved() -> None:
    audio = tone(0.5, 48000)
    data = encode_audio(audio, 48000, "pcm_s16le", channels=2)
    assert len(data) == len(audio) * 2 * 2
    decoded = decode_audio(data, "pcm_s16le", 48000, 2, 48000)
    assert np.abs(decoded - audio).max() < 1e-4


@pytest.mark.parametrize("channels", [1, 2])
def test_m4a_round_trip_keeps_timing_and_content(channels: int) -> None:
    rate = 48000
    # Low-passed noise: no periodicity, so any time shift shows, and within the band AAC keeps well.
    noise = np.random.default_rng(0).uniform(-1, 1, 2 * rate)
    audio = (np.convolve(noise, np.ones(24) / 24, mode="same") * 2).astype(np.float32)
    data = encode_audio(audio, rate, "m4a", channels)
    assert data[4:8] == b"ftyp"  # an MP4/M4A file
    decoded = decode_audio(data, "m4a", rate, channels, rate)
    # AAC pads the last frame; the encoder priming is removed on decode, so nothing is shifted in time.
    assert len(audio) <= len(decoded) <= len(audio) + 1024
    window = slice(rate // 2, rate // 2 + 4000)
    lags = np.correlate(decoded[rate // 2 - 100 : rate // 2 + 4100], audio[window], mode="valid")
    assert int(np.argmax(lags)) - 100 == 0
    assert np.corrcoef(decoded[window], audio[window])[0, 1] > 0.9


def test_decode_resamples_to_the_requested_rate() -> None:
    audio = tone(1.0, 48000, freq=1000)
    decoded = decode_audio(encode_audio(audio, 48000, "pcm_s16le"), "pcm_s16le", 48000, 1, 16000)
    assert abs(len(decoded) - 16000) <= 2
    assert abs(dominant_frequency(decoded, 16000) - 1000) < 5


@pytest.mark.parametrize(
    ("payload", "fmt", "channels"),
    [
        (b"", "pcm_s16le", 1),
        (b"\x00\x01\x02", "pcm_s16le", 1),
        (b"\x00" * 6, "pcm_s16le", 2),
        (b"not audio" * 50, "m4a", 1),
    ],
)
def test_undecodable_payloads_raise_invalid_audio(payload: bytes, fmt: str, channels: int) -> None:
    with pytest.raises(InvalidAudioError):
        decode_audio(payload, fmt, 48000, channels, 16000)


def test_resample_changes_length_not_pitch() -> None:
    out = resample(tone(1.0, 22050, freq=500), 22050, 48000)
    assert abs(len(out) - 48000) <= 48
    assert abs(dominant_frequency(out, 48000) - 500) < 3


def test_time_stretch_changes_duration_not_pitch() -> None:
    rate = 16000
    faster = time_stretch(tone(3.0, rate, freq=300), rate, 1.3)
    assert abs(len(faster) - 3.0 * rate / 1.3) < 0.02 * rate
    assert abs(dominant_frequency(faster, rate) - 300) < 3


def test_fit_speeds_up_a_long_dub_to_its_target() -> None:
    rate = 16000
    fit = fit_duration(tone(7.5, rate), rate, 6 * rate, max_speedup=1.35)
    assert fit.speed_ratio == pytest.approx(1.25, abs=1e-3)
    assert abs(fit.variance_percent) < 2
    assert fit.status is FitStatus.SUCCESS


def test_fit_caps_the_speedup_and_reports_the_remaining_variance() -> None:
    rate = 16000
    partial = fit_duration(tone(9.0, rate), rate, 6 * rate, max_speedup=1.35)  # 9/1.35 = 6.67 s: +11 %
    assert partial.speed_ratio == pytest.approx(1.35)
    assert 10 < partial.variance_percent < 13
    assert partial.status is FitStatus.PARTIAL
    failed = fit_duration(tone(12.0, rate), rate, 6 * rate, max_speedup=1.35)  # 8.9 s: +48 %
    assert failed.status is FitStatus.FAILED


def test_fit_slows_down_a_short_dub_only_as_far_as_allowed() -> None:
    rate = 16000
    fit = fit_duration(tone(5.0, rate), rate, 6 * rate, max_speedup=1.35, max_slowdown=1.35)
    assert fit.speed_ratio == pytest.approx(5 / 6, abs=1e-3)
    assert fit.status is FitStatus.SUCCESS
    unchanged = fit_duration(tone(5.0, rate), rate, 6 * rate, max_speedup=1.35)  # no slow-down allowed
    assert unchanged.speed_ratio == 1.0
    assert len(unchanged.audio) == 5 * rate
    assert unchanged.variance_percent == pytest.approx(-16.67, abs=0.01)


@pytest.mark.parametrize(
    ("variance", "status"),
    [
        (0.0, FitStatus.SUCCESS),
        (-10.0, FitStatus.SUCCESS),
        (10.5, FitStatus.PARTIAL),
        (-20.0, FitStatus.PARTIAL),
        (20.1, FitStatus.FAILED),
        (-35.0, FitStatus.FAILED),
    ],
)
def test_duration_status_rule(variance: float, status: FitStatus) -> None:
    assert duration_status(variance) is status


def test_place_pads_and_trims_to_exactly_the_slot() -> None:
    clip = np.ones(100, dtype=np.float32)
    out = place(clip, 1000, offset=200)
    assert len(out) == 1000 and out[200:300].all() and out[:200].sum() == 0 and out[300:].sum() == 0
    moved = place(clip, 1000, offset=950)  # would overrun the end: moved earlier, not cut
    assert moved[900:].all() and moved.sum() == 100
    assert len(place(np.ones(1500, dtype=np.float32), 1000)) == 1000
