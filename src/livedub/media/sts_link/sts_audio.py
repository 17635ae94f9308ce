"""Segments to STS payloads and dubs back, with the protocol's codec (`livedub.protocol.codec`).

STS works on mono speech (ASR in, TTS out): a segment is sent as mono (stereo would only double the payload), and
its mono dub stays mono (at the segment's sample rate) until the muxer mixes it onto every output channel.
"""

from __future__ import annotations

from livedub.media.types import AudioSegment, Pcm
from livedub.protocol import AudioFormat, AudioPayload
from livedub.protocol.codec import decode_payload, downmix_to_mono, encode_payload


def segment_payload(segment: AudioSegment, audio_format: AudioFormat) -> AudioPayload:
    """The segment's audio, downmixed to mono, as a payload of `audio_format`."""
    return encode_payload(downmix_to_mono(segment.pcm), segment.sample_rate, audio_format)


def dub_pcm(payload: AudioPayload, segment: AudioSegment) -> Pcm:
    """The dub as mono int16 PCM (shape (n, 1)) at the segment's sample rate. Raises ValueError if it does not
    decode."""
    return decode_payload(payload, segment.sample_rate, 1)
