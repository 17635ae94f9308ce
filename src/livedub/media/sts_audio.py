"""Audio <-> STS payload conversion for the media-service (PyAV): pcm_s16le or m4a (AAC in MP4) both ways."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

from livedub.media.types import Pcm
from livedub.protocol import AudioFormat, AudioPayload


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def encode_payload(pcm: Pcm, sample_rate: int, audio_format: AudioFormat) -> AudioPayload:
    """Wrap interleaved int16 PCM (samples, channels) into an `AudioPayload` of the requested format."""
    samples, channels = int(pcm.shape[0]), int(pcm.shape[1])
    if audio_format is AudioFormat.PCM_S16LE:
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
    else:
        data = _encode_m4a(pcm, sample_rate)
    return AudioPayload.from_bytes(
        data,
        format=audio_format,
        sample_rate_hz=sample_rate,
        channels=channels,
        duration_ms=1000.0 * samples / sample_rate,
    )


def decode_payload(payload: AudioPayload, sample_rate: int, channels: int) -> Pcm:
    """Decode a payload to int16 PCM (samples, channels) at `sample_rate`/`channels`. Raises ValueError if invalid."""
    data = payload.decode_bytes()
    try:
        if payload.format is AudioFormat.PCM_S16LE:
            pcm = _decode_pcm(data, payload, sample_rate)
        else:
            pcm = _decode_container(data, sample_rate)
            # AAC pads its last frame: drop what lies past the declared duration.
            declared = round(payload.duration_ms * sample_rate / 1000)
            pcm = pcm[:declared] if 0 < declared < len(pcm) else pcm
    except av.FFmpegError as exc:
        raise ValueError(f"cannot decode {payload.format} payload: {exc}") from exc
    return match_channels(pcm, channels)


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


def _decode_pcm(data: bytes, payload: AudioPayload, sample_rate: int) -> Pcm:
    if len(data) % (2 * payload.channels):
        raise ValueError("pcm_s16le payload is not a whole number of sample frames")
    pcm = np.frombuffer(data, dtype="<i2").astype(np.int16).reshape(-1, payload.channels)
    return pcm if payload.sample_rate_hz == sample_rate else _resample(pcm, payload.sample_rate_hz, sample_rate)


def downmix_to_mono(pcm: Pcm) -> Pcm:
    """Average the channels: (samples, channels) -> (samples, 1)."""
    if pcm.shape[1] == 1:
        return pcm
    return np.round(pcm.mean(axis=1, keepdims=True)).astype(np.int16)


def _encode_m4a(pcm: Pcm, sample_rate: int) -> bytes:
    channels = int(pcm.shape[1])
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ipod") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout=_layout(channels))
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout=_layout(channels)
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


def _decode_container(data: bytes, sample_rate: int) -> Pcm:
    """Decode the first audio stream to s16 at `sample_rate`, keeping its channel layout."""
    chunks: list[Pcm] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise ValueError("payload container has no audio stream")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        resampler = av.AudioResampler(format="s16", layout=stream.codec_context.layout, rate=sample_rate)
        for frame in container.decode(stream):
            chunks.extend(_frame_to_pcm(out, channels) for out in resampler.resample(frame))
        chunks.extend(_frame_to_pcm(out, channels) for out in resampler.resample(None))
    return np.concatenate(chunks) if chunks else np.zeros((0, channels), dtype=np.int16)


def _resample(pcm: Pcm, from_rate: int, to_rate: int) -> Pcm:
    channels = int(pcm.shape[1])
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout=_layout(channels))
    frame.sample_rate = from_rate
    resampler = av.AudioResampler(format="s16", layout=_layout(channels), rate=to_rate)
    chunks = [_frame_to_pcm(out, channels) for out in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(chunks) if chunks else np.zeros((0, channels), dtype=np.int16)


def _frame_to_pcm(frame: av.AudioFrame, channels: int) -> Pcm:
    return frame.to_ndarray().reshape(-1, channels).astype(np.int16, copy=False)
