"""Ingest: read the input stream with PyAV in a thread and hand typed items to asyncio.

Video packets are passed through untouched (only their position on the media timeline is computed). Audio is decoded
and resampled by FFmpeg (av.AudioResampler) to s16 at the configured rate, keeping the channel count (more than two
channels are downmixed to stereo). Audio positions are sample counters (pitfall 3: FLV pts are rounded to ms); input
timestamps are only used to detect jumps and gaps.

The media timeline: milliseconds since the stream's origin = min(first audio pts, first video keyframe dts).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np

from livedub.media.metrics import METRICS, WorkerMetrics
from livedub.media.types import Pcm
from livedub.mediaserver.urls import WORKER_FLASHVER, rtmp_options

log = logging.getLogger(__name__)

SUPPORTED_VIDEO_CODECS = frozenset({"h264"})
JUMP_MS = 1000  # a timestamp step larger than this (either way) is a discontinuity, not jitter
GAP_FILL_MS = 15  # audio missing for longer than this (by timestamps: lost, corrupt) is filled with silence
MAX_GAP_FILL_MS = 5000
HANDOFF_S = 0.05  # how often the event loop collects what the reader thread read
STOP_QUIET_S = 0.25  # after stop(): end once nothing came for this long ...
STOP_GRACE_S = 1.0  # ... or after this long at most
PREROLL_AUDIO_S = 3.0  # with a keyframe in hand, how long to wait for the first audio packet
PREROLL_VIDEO_S = 12.0  # how long to wait for the first keyframe (a long GOP) before giving up the video
LONG_PROBE_S = 3.0  # a second probe when video is announced but not yet seen: more than a usual 2 s GOP


@dataclass(frozen=True)
class StreamLayout:
    """What the input holds; the first item ingest emits."""

    video: av.VideoStream | None  # template for the output's copied video stream
    audio_channels: int  # 0: no audio
    sample_rate: int
    audio_offset_ms: int  # media time of audio sample 0


@dataclass(frozen=True)
class VideoPacket:
    packet: av.Packet  # untouched
    media_dts_ms: int  # dts on the media timeline
    composition_ms: int  # pts - dts (B-frames)
    keyframe: bool
    arrival: float  # time.monotonic() when demuxed


@dataclass(frozen=True)
class AudioChunk:
    start_sample: int  # sample counter since audio sample 0
    pcm: Pcm  # (samples, channels) s16 at StreamLayout.sample_rate
    source_ms: float  # where start_sample sits according to the input's timestamps (media timeline)
    arrival: float


@dataclass(frozen=True)
class IngestEnd:
    reason: str  # stopped | timeout | eof | refused | error
    detail: str = ""


IngestItem = StreamLayout | VideoPacket | AudioChunk | IngestEnd
_Emit = Callable[[IngestItem], None]
_Packets = Iterator[av.Packet]


def announces_video(metadata: dict[str, str]) -> bool:
    """Whether the stream's onMetaData (the publisher's, or nginx-rtmp's rewrite of it) describes a video track."""
    return any(
        metadata.get(key, "0") not in {"", "0", "0.0", "0.000000"} for key in ("videocodecid", "width", "displayWidth")
    )


class Timeline:
    """Maps input timestamps (ms) to the media timeline, absorbing discontinuities (publisher restarts, wraps).

    At a jump, the stream that sees it first fixes the new offset from where its next packet belongs: audio from
    its exact sample clock, video one observed frame step after its last packet. The other stream then follows the
    same offset, so audio does not move against video."""

    def __init__(self, origin_ms: int) -> None:
        self.offset_ms: float = -origin_ms
        self.last: dict[str, float] = {}
        self.steps: dict[str, float] = {}
        self.jumps = 0

    def map(self, kind: str, ts_ms: int, expected_ms: float | None = None, default_step_ms: float = 33.0) -> float:
        """`expected_ms`: where a continuous next packet of `kind` would be (default: last + its last step)."""
        mapped = ts_ms + self.offset_ms
        last = self.last.get(kind)
        if last is not None and (mapped - last > JUMP_MS or mapped < last - JUMP_MS):
            target = expected_ms if expected_ms is not None else last + self.steps.get(kind, default_step_ms)
            self.offset_ms += target - mapped
            mapped = target
            self.jumps += 1
        elif last is not None and mapped > last:
            self.steps[kind] = mapped - last
        self.last[kind] = mapped
        return mapped


@dataclass(frozen=True)
class Decoded:
    chunks: list[AudioChunk]  # contiguous, from the decoder's position before the packet
    corrupt: bool = False  # the packet did not decode (its time is filled by the next packet's timestamp)
    filled: bool = False  # silence was inserted for missing audio before the packet
    trimmed: int = 0  # samples dropped because the input's timestamps put them over audio already counted


class AudioDecoder:
    """AAC (or any) packets -> s16 interleaved PCM at `rate`, counting samples and keeping them on the input's
    timestamps: missing audio (gaps, lost or corrupt packets) is filled with silence, audio that the timestamps put
    over what is already counted (a looping publisher's longer audio track) is dropped."""

    def __init__(self, stream: av.AudioStream, rate: int, offset_ms: int) -> None:
        self.stream = stream
        self.rate = rate
        self.channels = min(2, stream.codec_context.channels or 2)
        layout = "mono" if self.channels == 1 else "stereo"
        self.resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        self.samples = 0
        self.offset_ms = offset_ms
        self.gaps_filled = 0
        self.trimmed_samples = 0

    def position_ms(self) -> float:
        return self.offset_ms + 1000.0 * self.samples / self.rate

    def decode(self, packet: av.Packet, source_ms: float, arrival: float) -> Decoded:
        chunks: list[AudioChunk] = []
        gap_ms = source_ms - self.position_ms()
        filled = GAP_FILL_MS < gap_ms <= MAX_GAP_FILL_MS
        if filled:
            n = round(gap_ms * self.rate / 1000.0)
            chunks.append(self._chunk(np.zeros((n, self.channels), dtype=np.int16), source_ms - gap_ms, arrival))
            self.gaps_filled += 1
        trim = round(-gap_ms * self.rate / 1000.0) if -MAX_GAP_FILL_MS <= gap_ms < -GAP_FILL_MS else 0
        try:
            pcm = self._decode(packet)
        except av.error.FFmpegError:  # undecodable: only the silence before it counts
            return Decoded(chunks, corrupt=True, filled=filled)
        dropped = min(trim, pcm.shape[0])
        self.trimmed_samples += dropped
        if pcm.shape[0] > dropped:
            chunks.append(self._chunk(pcm[dropped:], source_ms + 1000.0 * dropped / self.rate, arrival))
        return Decoded(chunks, filled=filled, trimmed=dropped)

    def _decode(self, packet: av.Packet) -> Pcm:
        parts = [
            out.to_ndarray().reshape(-1, self.channels)
            for frame in packet.decode()
            for out in self.resampler.resample(frame)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.channels), dtype=np.int16)

    def _chunk(self, pcm: Pcm, source_ms: float, arrival: float) -> AudioChunk:
        chunk = AudioChunk(start_sample=self.samples, pcm=pcm, source_ms=source_ms, arrival=arrival)
        self.samples += pcm.shape[0]
        return chunk


class Ingest:
    """Reads `url` in a daemon thread; `items()` yields StreamLayout first, then packets/chunks, then IngestEnd."""

    def __init__(
        self,
        stream_id: str,
        url: str,
        sample_rate: int,
        open_timeout_s: float,
        read_timeout_s: float,
        metrics: WorkerMetrics = METRICS,
    ) -> None:
        self.stream_id = stream_id
        self.url = url
        self.sample_rate = sample_rate
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.metrics = metrics
        self._stop = threading.Event()  # the reader thread quits at its next packet
        self._stop_requested_at: float | None = None
        self._thread: threading.Thread | None = None
        self.pts_jumps = 0
        self.corrupt_packets = 0

    def stop(self) -> None:
        """End the input: what already arrived is still delivered (up to STOP_GRACE_S of trailing packets), then
        IngestEnd("stopped"), without waiting for the read timeout of a stream whose publisher is gone."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()

    async def items(self) -> AsyncIterator[IngestItem]:
        """Items in order. The reader thread appends to a batch that the loop collects every HANDOFF_S (arrival
        times are taken in the thread, so batching does not move the delay line; no wake-up per packet)."""
        pending: deque[IngestItem] = deque()
        lock = threading.Lock()

        def emit(item: IngestItem) -> None:  # reader thread
            with lock:
                pending.append(item)

        self._thread = threading.Thread(target=self._run, args=(emit,), name=f"ingest-{self.stream_id}", daemon=True)
        self._thread.start()
        last_item = time.monotonic()
        try:
            while True:
                await asyncio.sleep(HANDOFF_S)
                with lock:
                    batch = list(pending)
                    pending.clear()
                now = time.monotonic()
                if batch:
                    last_item = now
                for item in batch:
                    yield item
                    if isinstance(item, IngestEnd):
                        return
                stop_at = self._stop_requested_at
                if stop_at is not None and (now - last_item >= STOP_QUIET_S or now - stop_at >= STOP_GRACE_S):
                    yield IngestEnd("stopped")
                    return
        finally:
            self._stop.set()

    def _error(self, kind: str) -> None:
        self.metrics.errors.labels(stream_id=self.stream_id, type=kind).inc()

    def _open(self, probe_s: float = 0.2) -> av.container.InputContainer:
        # Short probe (pitfall 2: not 0); flv_metadata creates the streams onMetaData announces, so a reader that
        # joins a running stream (nginx-rtmp sends video only from the next keyframe) still sees its video.
        options = {
            "analyzeduration": str(round(probe_s * 1e6)),
            "probesize": str(500_000 if probe_s <= 0.2 else 50_000_000),
            "flv_metadata": "1",
            **rtmp_options(self.url),
        }
        if self.url.startswith("rtmp"):
            options["rtmp_flashver"] = WORKER_FLASHVER
        return av.open(self.url, options=options, timeout=(self.open_timeout_s, self.read_timeout_s))

    def _run(self, emit: _Emit) -> None:
        try:
            container = self._open()
            if not container.streams.video and announces_video(container.metadata):
                # Joined mid-GOP on a server that sends audio before the next keyframe (nginx-rtmp without
                # wait_video, which audio-only inputs need): probe again, long enough to see a keyframe.
                log.info(
                    "stream %s: video announced, none probed yet: probing for %.1f s", self.stream_id, LONG_PROBE_S
                )
                container.close()
                container = self._open(probe_s=LONG_PROBE_S)
        except Exception as exc:
            log.error(
                "stream %s: cannot open %s: %s (no media arrived to probe; an audio-only input gets here when the"
                " media server holds audio until video: nginx-rtmp wait_video)",
                self.stream_id, self.url, exc,
            )  # fmt: skip
            self._error("open_failed")
            emit(IngestEnd("error", f"open failed: {exc}"))
            return
        try:
            emit(self._read(container, emit))
        except Exception as exc:
            log.exception("stream %s: ingest failed", self.stream_id)
            self._error("ingest")
            emit(IngestEnd("error", str(exc)))
        finally:
            container.close()

    def _read(self, container: av.container.InputContainer, emit: _Emit) -> IngestEnd:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None and video.codec_context.name not in SUPPORTED_VIDEO_CODECS:
            log.error(
                "stream %s: unsupported video codec %r (only H.264 can be copied to FLV); refusing the stream",
                self.stream_id,
                video.codec_context.name,
            )
            self._error("unsupported_codec")
            return IngestEnd("refused", f"unsupported video codec {video.codec_context.name}")
        if video is None and audio is None:
            self._error("no_streams")
            return IngestEnd("refused", "no audio or video stream")
        if audio is None:
            log.warning("stream %s: no audio stream; passing the video through", self.stream_id)
            self._error("no_audio")
        if video is None:
            log.warning("stream %s: no video stream; audio only", self.stream_id)
            self._error("no_video")
        streams = [s for s in (video, audio) if s is not None]
        packets = container.demux(*streams)

        # Pre-roll: find the first keyframe and the first audio packet to fix the origin.
        preroll: list[tuple[av.Packet, float]] = []
        first_key: int | None = None
        first_audio: int | None = None
        started = time.monotonic()
        end: IngestEnd | None = None
        while (video is not None and first_key is None) or (audio is not None and first_audio is None):
            packet, end = self._next(packets)
            if packet is None:
                break
            now = time.monotonic()
            if packet.stream is video and first_key is None:
                if not packet.is_keyframe:
                    continue  # nothing before the first keyframe can be decoded
                first_key = packet.dts
            if packet.stream is audio and first_audio is None:
                first_audio = packet.pts
            preroll.append((packet, now))
            waited = now - started
            if (first_key is not None and waited > PREROLL_AUDIO_S) or waited > PREROLL_VIDEO_S:
                break
        if first_key is None and first_audio is None:
            return end or IngestEnd("error", "no packets")
        if audio is not None and first_audio is None:
            log.warning(
                "stream %s: audio stream announced but no audio packet; passing the video through", self.stream_id
            )
            self._error("no_audio")
            audio = None
        origin = min(x for x in (first_key, first_audio) if x is not None)
        timeline = Timeline(origin)
        decoder = AudioDecoder(audio, self.sample_rate, first_audio - origin) if audio is not None else None
        emit(
            StreamLayout(
                video=video if first_key is not None else None,
                audio_channels=decoder.channels if decoder else 0,
                sample_rate=self.sample_rate,
                audio_offset_ms=decoder.offset_ms if decoder else 0,
            )
        )
        for packet, arrival in preroll:
            self._handle(packet, arrival, video, decoder, timeline, emit)
        while end is None:
            packet, end = self._next(packets)
            if packet is not None:
                self._handle(packet, time.monotonic(), video, decoder, timeline, emit)
        return end

    def _next(self, packets: _Packets) -> tuple[av.Packet | None, IngestEnd | None]:
        """The next usable packet, or the reason the input ended."""
        consecutive_errors = 0
        while True:
            if self._stop.is_set():
                return None, IngestEnd("stopped")
            try:
                packet = next(packets)
            except StopIteration:
                return None, IngestEnd("eof")
            except av.error.InvalidDataError as exc:
                consecutive_errors += 1
                self.corrupt_packets += 1
                self._error("corrupt_packet")
                if consecutive_errors > 50:
                    return None, IngestEnd("error", f"unreadable input: {exc}")
                continue
            except av.error.FFmpegError as exc:
                if self._stop.is_set():
                    return None, IngestEnd("stopped")
                log.info("stream %s: input ended (%s)", self.stream_id, exc)
                return None, IngestEnd("timeout", str(exc))
            if packet.dts is None or packet.size == 0:
                continue  # flush/empty packets
            if packet.is_corrupt:
                self.corrupt_packets += 1
                self._error("corrupt_packet")
                continue
            return packet, None

    def _handle(
        self,
        packet: av.Packet,
        arrival: float,
        video: av.VideoStream | None,
        decoder: AudioDecoder | None,
        timeline: Timeline,
        emit: _Emit,
    ) -> None:
        jumps = timeline.jumps
        assert packet.dts is not None
        if video is not None and packet.stream is video:
            dts = round(timeline.map("video", int(packet.dts)))
            composition = int(packet.pts - packet.dts) if packet.pts is not None else 0
            emit(VideoPacket(packet, dts, composition, bool(packet.is_keyframe), arrival))
        elif decoder is not None and packet.stream is decoder.stream:
            ts = int(packet.pts if packet.pts is not None else packet.dts)
            source = timeline.map("audio", ts, expected_ms=decoder.position_ms())
            decoded = decoder.decode(packet, float(source), arrival)
            if decoded.corrupt:  # undecodable: skipped; the next packet's timestamp fills its time
                self.corrupt_packets += 1
                self._error("corrupt_packet")
            if decoded.filled:
                self._error("audio_gap")
            if decoded.trimmed:
                self._error("audio_overlap")
            for chunk in decoded.chunks:
                emit(chunk)
        if timeline.jumps != jumps:
            self.pts_jumps += 1
            self._error("pts_jump")
            log.warning(
                "stream %s: timestamp discontinuity; timeline offset now %.1f ms", self.stream_id, timeline.offset_ms
            )
