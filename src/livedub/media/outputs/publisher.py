"""Publisher: the output FLV container (RTMP `live/<id>/out` or a file) with copied H.264 and encoded AAC.

It knows nothing of timing: callers give packets/frames with final timestamps (see muxer.OutputTimeline).

Each language's audio is AAC-encoded once (`AacEncoder`), whatever number of outputs carry it: the muxer renders one
frame per language and hands that same frame to each of the language's outputs (RTMP publishers, the HLS rendition);
the first to write it encodes it, the others mux copies of the same packets.
"""

from __future__ import annotations

import logging
from fractions import Fraction
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


def copy_encoded(packet: av.Packet) -> av.Packet:
    """An encoded packet's copy (data, timestamps, time base): `mux()` takes the data of the packet it writes."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
    copy.is_keyframe = packet.is_keyframe
    if packet.time_base is not None:
        copy.time_base = packet.time_base
    return copy


class AacEncoder:
    """One language's AAC encoder, shared by every output of that language.

    `packets(frame)` encodes a frame the first time any output asks for it and gives every output its own copy of the
    same packets; the muxer hands each output of a language the same frame object before rendering the next, so the
    last frame (held, so that its identity cannot be reused) is all that is remembered. `packets(None)` flushes once:
    the outputs that close later get the same last packets.
    """

    def __init__(self, sample_rate: int, channels: int, bit_rate: int = 128_000, coder: str = "fast") -> None:
        # "fast": FFmpeg's default "twoloop" costs 2.3x the CPU (1.1 % vs 0.5 % of a core per language)
        self.sample_rate = sample_rate
        self.channels = max(1, min(2, channels))
        self.layout = "mono" if self.channels == 1 else "stereo"
        self.bit_rate = bit_rate
        self.coder = coder
        context = av.CodecContext.create("aac", "w")
        assert isinstance(context, av.AudioCodecContext)
        context.sample_rate = sample_rate
        context.layout = self.layout
        context.format = "fltp"
        context.bit_rate = bit_rate
        context.time_base = Fraction(1, sample_rate)
        context.options = {"aac_coder": coder}
        context.open()
        self.context = context
        self.frames_encoded = 0
        self._last: av.AudioFrame | None = None
        self._last_packets: list[av.Packet] = []
        self._flushed = False

    def add_stream(self, container: av.container.OutputContainer) -> av.AudioStream:
        """An AAC stream in `container` with this encoder's parameters (the header's AudioSpecificConfig is the
        same: profile, rate and channels), to mux this encoder's packets into."""
        stream = container.add_stream(
            "aac", rate=self.sample_rate, layout=self.layout, options={"aac_coder": self.coder}
        )
        stream.bit_rate = self.bit_rate
        return stream

    def packets(self, frame: av.AudioFrame | None) -> list[av.Packet]:
        """The packets `frame` gives (None: the encoder's last ones), each output its own copies."""
        if frame is None:
            if not self._flushed:
                self._flushed, self._last = True, None
                self._last_packets = list(self.context.encode(None))
        elif frame is not self._last:
            self._last = frame
            self._last_packets = list(self.context.encode(frame))
            self.frames_encoded += 1
        return [copy_encoded(packet) for packet in self._last_packets]


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
        encoder: AacEncoder | None,  # the language's shared encoder; None: no audio
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
        self.encoder = encoder
        if encoder is not None:
            self.audio = encoder.add_stream(self.container)
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
        """Mux the language's packets of one frame (None: the encoder's last ones); returns the number of packets."""
        assert self.audio is not None and self.encoder is not None
        packets = self.encoder.packets(frame)
        for packet in packets:
            packet.stream = self.audio
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
