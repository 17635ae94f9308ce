"""Fragment payloads as the engine's audio: decode a payload (raw pcm_s16le or m4a/AAC, `livedub.protocol.codec`) to
mono float32 at a rate, and encode a dub back in the fragment's format. The engine itself never sees a payload.
"""

from __future__ import annotations

from livedub.dubbing.interfaces import FloatAudio
from livedub.protocol import AudioFormat, AudioPayload, codec


class InvalidAudioError(ValueError):
    """Audio that does not decode or does not match its declared format (INVALID_AUDIO_FORMAT)."""


def decode_audio(
    data: bytes, fmt: AudioFormat | str, sample_rate_hz: int, channels: int, target_rate: int
) -> FloatAudio:
    """Decode a fragment payload (raw pcm_s16le or an m4a/AAC file) to mono float32 at `target_rate` (the payload
    codec of `livedub.protocol.codec`).

    Raises InvalidAudioError when the bytes do not decode or do not match the declared format.
    """
    if not data:
        raise InvalidAudioError("empty audio payload")
    try:
        pcm = codec.decode_bytes(data, fmt, sample_rate_hz, channels, rate=target_rate, to_channels=1)
    except ValueError as exc:  # PayloadDecodeError, or an unknown format
        raise InvalidAudioError(str(exc)) from exc
    if len(pcm) == 0:
        raise InvalidAudioError(f"{AudioFormat(fmt)} payload decodes to no audio")
    return codec.pcm_to_float(pcm)[:, 0]


def encode_audio(audio: FloatAudio, sample_rate: int, fmt: AudioFormat | str, channels: int = 1) -> bytes:
    """Encode mono float audio as raw pcm_s16le or as an m4a (AAC in MP4) file, copied to `channels` channels."""
    return codec.encode_bytes(codec.match_channels(codec.float_to_pcm(audio), channels), sample_rate, fmt)


def mono_payload(audio: FloatAudio, sample_rate: int, fmt: AudioFormat) -> AudioPayload:
    """Mono float audio encoded as an `AudioPayload` of `fmt` (duration from its sample count)."""
    return codec.encode_payload(codec.float_to_pcm(audio), sample_rate, fmt)


__all__ = ["InvalidAudioError", "decode_audio", "encode_audio", "mono_payload"]
