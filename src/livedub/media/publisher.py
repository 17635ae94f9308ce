"""Publisher: the output FLV container (RTMP `live/<id>/out` or a file) with copied H.264 and encoded AAC.

It knows nothing of timing: callers give packets/frames with final timestamps (see muxer.OutputTimeline).
"""

from __future__ import annotations

import logging
from typing import Protocol

import av

from livedub.mediaserver.urls import rtmp_options

log = logging.getLogger(__name__)

AAC_FRAME = 1024
MAX_INTERLEAVE_DELTA_US = 250_000


def output_open_url(url: str) -> str:
    """The URL to give PyAV for writing.

    PyAV opens an output's AVIO without options, so `rtmp_app`/`rtmp_playpath` cannot be passed. FFmpeg takes the
    application up to the second-to-last slash of the path, and nginx-rtmp trims a trailing slash from the
    application name, so `rtmp://h/live//abc/out` publishes application `live`, stream `abc/out`.
    """
    options = rtmp_options(url)
    if not options:
        return url
    prefix = url[: url.index("://") + 3]
    host = url[len(prefix) :].split("/", 1)[0]
    return f"{prefix}{host}/{options['rtmp_app']}//{options['rtmp_playpath']}"


class Publisher(Protocol):
    """What the muxer writes to (FlvPublisher; fakes in tests)."""

    video: av.VideoStream | None
    audio: av.AudioStream | None

    def write_video(self, packet: av.Packet, dts_ms: int, pts_ms: int) -> None: ...

    def write_audio(self, frame: av.AudioFrame | None) -> int: ...

    def close(self) -> None: ...


class FlvPublisher:
    def __init__(
        self,
        url: str,
        video_template: av.VideoStream | None,
        audio_channels: int,
        sample_rate: int,
        audio_bit_rate: int = 128_000,
        aac_coder: str = "fast",  # FFmpeg's default "twoloop" costs 2.3x the CPU (1.1 % vs 0.5 % of a core/stream)
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        # FFmpeg's interleaver holds a packet until every stream has one queued; if audio ever stalls, video must
        # not wait its default 10 s for it (the muxer already writes both in time order).
        self.container = av.open(
            output_open_url(url),
            mode="w",
            format="flv",
            container_options={"max_interleave_delta": str(MAX_INTERLEAVE_DELTA_US)},
            timeout=(open_timeout_s, open_timeout_s),
        )
        self.video: av.VideoStream | None = None
        self.audio: av.AudioStream | None = None
        if video_template is not None:
            self.video = self.container.add_stream_from_template(video_template)
        if audio_channels:
            self.audio = self.container.add_stream(
                "aac",
                rate=sample_rate,
                layout="mono" if audio_channels == 1 else "stereo",
                options={"aac_coder": aac_coder},
            )
            self.audio.bit_rate = audio_bit_rate
        self.closed = False
        # Connect now (the caller runs this in a thread), not at the first packet: a refused publish fails the start,
        # and the first write does not wait for the RTMP handshake.
        self.container.start_encoding()

    def write_video(self, packet: av.Packet, dts_ms: int, pts_ms: int) -> None:
        assert self.video is not None
        packet.stream = self.video
        packet.dts = dts_ms
        packet.pts = pts_ms
        self.container.mux(packet)

    def write_audio(self, frame: av.AudioFrame | None) -> int:
        """Encode one frame (None flushes the encoder) and mux the packets; returns the number of packets."""
        assert self.audio is not None
        packets = self.audio.encode(frame)
        for packet in packets:
            self.container.mux(packet)
        return len(packets)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.audio is not None:
                self.write_audio(None)
        finally:
            self.container.close()
