"""The audio payload codec of the protocol, shared by both services: int16 PCM (samples, channels) <-> `AudioPayload`.

`pcm_s16le` is raw little-endian 16-bit interleaved PCM; `m4a` is AAC in an MP4 file (FFmpeg's `ipod` muxer).
Encoding and decoding run in FFmpeg through PyAV; decoding resamples (`aresample`) to the rate the caller wants
and maps channels (mono copied to every channel at full level, several averaged down to mono).
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import av.error
import numpy as np
import numpy.typing as npt

from livedub.protocol.events import AudioFormat, AudioPayload

__all__ = [
    "AAC_BITRATE_PER_CHANNEL",
    "PayloadDecodeError",
    "Pcm",
    "decode_bytes",
    "decode_payload",
    "downmix_to_mono",
    "encode_bytes",
    "encode_payload",
    "float_to_pcm",
    "match_channels",
    "pcm_to_float",
]

Pcm = npt.NDArray[np.int16]
"""Signed 16-bit PCM, shape (samples, channels): row-major, i.e. interleaved."""

AAC_BITRATE_PER_CHANNEL = 96_000  # ample for speech; the m4a payload stays ~12 kB per second and channel


class PayloadDecodeError(ValueError):
    """Audio bytes that do not decode, or do not match their declared format."""


# ---------------------------------------------------------------- encode


def encode_bytes(pcm: Pcm, sample_rate: int, audio_format: AudioFormat | str) -> bytes:
    """The payload bytes of int16 PCM (samples, channels) in `audio_format`."""
    if AudioFormat(audio_format) is AudioFormat.PCM_S16LE:
        return np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    return _encode_m4a(np.asarray(pcm, dtype=np.int16), sample_rate)


def encode_payload(pcm: Pcm, sample_rate: int, audio_format: AudioFormat | str) -> AudioPayload:
    """Wrap int16 PCM (samples, channels) into an `AudioPayload` (duration from the sample count)."""
    audio_format = AudioFormat(audio_format)
    return AudioPayload.from_bytes(
        encode_bytes(pcm, sample_rate, audio_format),
        format=audio_format,
        sample_rate_hz=sample_rate,
        channels=int(pcm.shape[1]),
        duration_ms=1000.0 * int(pcm.shape[0]) / sample_rate,
    )


def _encode_m4a(pcm: Pcm, sample_rate: int) -> bytes:
    channels = int(pcm.shape[1])
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ipod") as container:  # "ipod" is FFmpeg's m4a muxer
        stream = container.add_stream("aac", rate=sample_rate, layout=_layout(channels))
        stream.bit_rate = AAC_BITRATE_PER_CHANNEL * channels
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout=_layout(channels)
        )
        frame.sample_rate = sample_rate
        # A pts lets the muxer write an edit list for the encoder priming, so decoders skip it (no 21 ms shift).
        frame.pts = 0
        frame.time_base = Fraction(1, sample_rate)
        # PyAV re-chunks the frame into the encoder's 1024-sample frames; None flushes the encoder.
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


# ---------------------------------------------------------------- decode


def decode_bytes(
    data: bytes,
    audio_format: AudioFormat | str,
    sample_rate_hz: int,
    channels: int,
    *,
    rate: int | None = None,
    to_channels: int | None = None,
    duration_ms: float | None = None,
) -> Pcm:
    """Decode payload bytes to int16 PCM (samples, channels) at `rate` with `to_channels` (default: as declared).

    For m4a, `duration_ms` (the declared duration) trims the AAC padding of the last frame. Raises
    PayloadDecodeError when the bytes do not decode or do not match the declared format; an m4a file without
    samples decodes to zero samples.
    """
    audio_format = AudioFormat(audio_format)
    rate = rate or sample_rate_hz
    try:
        if audio_format is AudioFormat.PCM_S16LE:
            pcm = _decode_pcm(data, sample_rate_hz, channels, rate)
        else:
            pcm = _decode_container(data, rate)
            declared = round(duration_ms * rate / 1000) if duration_ms is not None else 0
            pcm = pcm[:declared] if 0 < declared < len(pcm) else pcm
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise PayloadDecodeError(f"cannot decode {audio_format} payload: {exc}") from exc
    return match_channels(pcm, to_channels or channels)


def decode_payload(payload: AudioPayload, sample_rate: int | None = None, channels: int | None = None) -> Pcm:
    """Decode a payload to int16 PCM (samples, channels) at `sample_rate`/`channels` (default: as declared)."""
    try:
        data = payload.decode_bytes()
    except ValueError as exc:
        raise PayloadDecodeError(str(exc)) from exc
    return decode_bytes(
        data,
        payload.format,
        payload.sample_rate_hz,
        payload.channels,
        rate=sample_rate,
        to_channels=channels,
        duration_ms=payload.duration_ms,
    )


def _decode_pcm(data: bytes, sample_rate_hz: int, channels: int, rate: int) -> Pcm:
    if len(data) % (2 * channels):
        raise PayloadDecodeError(
            f"pcm_s16le payload of {len(data)} bytes is not a whole number of {channels}-channel 16-bit frames"
        )
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16).reshape(-1, channels)
    return pcm if sample_rate_hz == rate else _resample(pcm, sample_rate_hz, rate)


def _decode_container(data: bytes, rate: int) -> Pcm:
    """Decode the first audio stream to s16 at `rate`, keeping its channel layout."""
    chunks: list[Pcm] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise PayloadDecodeError("payload container has no audio stream")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        resampler = av.AudioResampler(format="s16", layout=stream.codec_context.layout, rate=rate)
        for frame in container.decode(stream):
            chunks.extend(_frame_to_pcm(out, channels) for out in resampler.resample(frame))
        chunks.extend(_frame_to_pcm(out, channels) for out in resampler.resample(None))
    return np.concatenate(chunks) if chunks else np.zeros((0, channels), dtype=np.int16)


def _resample(pcm: Pcm, from_rate: int, to_rate: int) -> Pcm:
    channels = int(pcm.shape[1])
    if len(pcm) == 0:
        return pcm
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout=_layout(channels))
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="s16", layout=_layout(channels), rate=to_rate)
    chunks = [_frame_to_pcm(out, channels) for out in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(chunks) if chunks else np.zeros((0, channels), dtype=np.int16)


def _frame_to_pcm(frame: av.AudioFrame, channels: int) -> Pcm:
    return frame.to_ndarray().reshape(-1, channels).astype(np.int16, copy=False)


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


# ---------------------------------------------------------------- channels and sample types


def match_channels(pcm: Pcm, channels: int) -> Pcm:
    """Copy mono to every channel at full level (FFmpeg's upmix would lower it 3 dB), or downmix to mono."""
    have = int(pcm.shape[1])
    if have == channels:
        return pcm
    if have == 1:
        return np.repeat(pcm, channels, axis=1)
    if channels == 1:
        return downmix_to_mono(pcm)
    return match_channels(downmix_to_mono(pcm), channels)


def downmix_to_mono(pcm: Pcm) -> Pcm:
    """Average the channels: (samples, channels) -> (samples, 1)."""
    if pcm.shape[1] == 1:
        return pcm
    return np.round(pcm.mean(axis=1, keepdims=True)).astype(np.int16)


def float_to_pcm(audio: npt.NDArray[np.floating]) -> Pcm:
    """Float audio in [-1, 1] (mono 1-D, or (samples, channels)) -> int16 (samples, channels), clipped."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, np.newaxis]
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def pcm_to_float(pcm: Pcm) -> npt.NDArray[np.float32]:
    """int16 (samples, channels) -> float32 (samples, channels) in [-1, 1)."""
    return np.asarray(pcm, dtype=np.float32) / 32768.0
