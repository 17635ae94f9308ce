"""Helpers for the media tests and the benchmark: an ffmpeg publisher and recorder, an echo DubClient."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av

from livedub.media.types import AudioSegment, DubOutcome, DubStatus
from livedub.mediaserver.urls import rtmp_options
from livedub.stack import publish_argv


def publish(path: Path, url: str, loop: bool = False, log: Path | None = None) -> subprocess.Popen[bytes]:
    """ffmpeg publishing `path` to `url` in real time (-re), streams copied."""
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(publish_argv(path, url, loop=loop), stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def stop_process(proc: subprocess.Popen[bytes], wait_s: float = 0.0, timeout: float = 5.0) -> None:
    """Let the process end by itself for `wait_s`, then terminate it, then kill it."""
    try:
        proc.wait(timeout=wait_s)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EchoDubClient:
    """A DubClient that returns the segment's own audio after `delay_s` (the STS echo pipeline, without STS)."""

    def __init__(self, delay_s: float = 0.05, length_error: int = 0) -> None:
        self.delay_s = delay_s
        self.length_error = length_error  # samples added (>0) or removed (<0), like a real TTS that is never exact
        self.calls = 0

    async def start(self) -> None:
        return None

    async def dub(self, segment: AudioSegment) -> DubOutcome:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        pcm = segment.pcm
        if self.length_error > 0:
            pcm = pcm.copy()
            pcm.resize((pcm.shape[0] + self.length_error, pcm.shape[1]), refcheck=False)
        elif self.length_error < 0:
            pcm = pcm[: self.length_error]
        return DubOutcome(segment.sequence_number, DubStatus.DUBBED, pcm=pcm, sts_status="success", round_trip_s=0)

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class PacketInfo:
    kind: str  # video | audio
    size: int
    digest: str  # sha1 of the payload
    pts: int | None
    dts: int | None
    keyframe: bool
    arrival: float  # time.monotonic() when read


def read_packets(
    source: str | Path,
    copy_to: Path | None = None,
    open_timeout_s: float = 20.0,
    read_timeout_s: float = 3.0,
    stop: threading.Event | None = None,
) -> list[PacketInfo]:
    """Read every packet of a file or stream (until EOF, the read timeout or `stop`), optionally remuxing to FLV."""
    url = str(source)
    # Long enough a probe to find the video of a stream joined mid-GOP (audio comes before the next keyframe).
    rtmp = {"analyzeduration": "3000000", "probesize": "50000000", "flv_metadata": "1"}
    options = {**rtmp, **rtmp_options(url)} if "://" in url else {}
    infos: list[PacketInfo] = []
    container = av.open(url, options=options, timeout=(open_timeout_s, read_timeout_s))
    out = av.open(str(copy_to), "w", format="flv") if copy_to else None
    try:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        mapping = {s.index: out.add_stream_from_template(s) for s in streams} if out else {}
        try:
            for packet in container.demux(*streams):
                if packet.dts is None or packet.size == 0:
                    continue
                payload = bytes(packet)
                infos.append(
                    PacketInfo(
                        packet.stream.type,
                        packet.size,
                        hashlib.sha1(payload).hexdigest(),
                        packet.pts,
                        packet.dts,
                        bool(packet.is_keyframe),
                        time.monotonic(),
                    )
                )
                if out is not None:
                    packet.stream = mapping[packet.stream.index]
                    out.mux(packet)
                if stop is not None and stop.is_set():
                    break
        except av.error.FFmpegError:
            pass  # read timeout: the RTMP server sends no end-of-stream
    finally:
        container.close()
        if out is not None:
            out.close()
    return infos


class StreamRecorder:
    """read_packets() in a thread: start before the stream is published, join() after it ended."""

    def __init__(self, source: str, copy_to: Path | None = None, open_timeout_s: float = 20.0) -> None:
        self.packets: list[PacketInfo] = []
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source, copy_to, open_timeout_s), daemon=True)
        self._thread.start()

    def _run(self, source: str, copy_to: Path | None, open_timeout_s: float) -> None:
        try:
            self.packets = read_packets(source, copy_to, open_timeout_s, stop=self.stop_event)
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 30.0) -> list[PacketInfo]:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.packets
