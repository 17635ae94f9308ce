"""What a stream carries and when each packet arrived, optionally copied to an FLV file: one recorder for the demo's
added-latency measurement, the media tests and the benchmarks."""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from livedub.mediaserver.stat import parse_rtmp_stat
from livedub.mediaserver.urls import rtmp_options

SILENCE_S = 3.0  # no packet for this long ends a read: nginx-rtmp never tells a player that the publisher left
# With /stat followed, the publisher's leaving ends the recording; silence then only ends a stalled one, so it may be
# longer than a busy machine's pause (stop() waits for the reader at most this long).
WATCHED_SILENCE_S = 10.0
# A recorder is made before its stream is published (so it loses no packet): the open waits for the publisher, and
# a dubbed output starts only after the input, the STS's first answers and the delay line (well past 20 s on a busy
# machine: the E2E's outputs were lost with a 20 s open).
RECORDER_OPEN_S = 120.0
STAT_POLL_S = 0.1


@dataclass(frozen=True)
class PacketInfo:
    kind: str  # video | audio
    size: int
    digest: str  # sha1 of the payload
    pts: int | None
    dts: int | None
    keyframe: bool
    arrival: float  # time.monotonic() when read


def _packet_info(packet: av.Packet) -> PacketInfo:
    digest = hashlib.sha1(bytes(packet)).hexdigest()
    keyframe = bool(packet.is_keyframe)
    return PacketInfo(packet.stream.type, packet.size, digest, packet.pts, packet.dts, keyframe, time.monotonic())


def _open_options(url: str) -> dict[str, str]:
    if "://" not in url:
        return {}
    # Long enough a probe to find the video of a stream joined mid-GOP (audio comes before the next keyframe).
    rtmp = {"analyzeduration": "3000000", "probesize": "50000000", "flv_metadata": "1"}
    return {**rtmp, **rtmp_options(url)}


def read_packets(
    source: str | Path,
    copy_to: Path | None = None,
    open_timeout_s: float = 20.0,
    read_timeout_s: float = SILENCE_S,
    stop: threading.Event | None = None,
) -> list[PacketInfo]:
    """Read every packet of a file or stream (until EOF, the read timeout or `stop`), optionally remuxing to FLV."""
    url = str(source)
    infos: list[PacketInfo] = []
    container = av.open(url, options=_open_options(url), timeout=(open_timeout_s, read_timeout_s))
    out = av.open(str(copy_to), "w", format="flv") if copy_to else None
    try:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        mapping = {s.index: out.add_stream_from_template(s) for s in streams} if out else {}
        try:
            for packet in container.demux(*streams):
                if packet.dts is None or packet.size == 0:
                    continue
                infos.append(_packet_info(packet))
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


def stream_name(url: str) -> str:
    """`abc/out` for rtmp://host:port/live/abc/out."""
    options = rtmp_options(url)
    return options.get("rtmp_playpath", url.rsplit("/", 2)[-2] + "/" + url.rsplit("/", 1)[-1]).split("?")[0]


def is_publishing(stat_url: str, name: str) -> bool:
    """nginx-rtmp's /stat shows a publisher on `name` (False when /stat does not answer)."""
    try:
        with urllib.request.urlopen(stat_url, timeout=2.0) as resp:
            body = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return False
    stream = parse_rtmp_stat(body).get(name)
    return stream is not None and stream.publishing


class StreamRecorder:
    """Every packet of a stream (kind, digest, arrival), optionally copied to an FLV file, in a thread.

    It starts reading when made: make it before the stream is published (nginx-rtmp holds the player until a
    publisher arrives, so nothing at the start is lost), `join()` after the stream ended. With `stat_url` a second
    thread follows the stream's publisher in nginx-rtmp's /stat, for `stop_when_unpublished()`.
    """

    def __init__(
        self,
        source: str,
        copy_to: Path | None = None,
        log_path: Path | None = None,
        *,
        stat_url: str | None = None,
        open_timeout_s: float = RECORDER_OPEN_S,
    ) -> None:
        self.url = source
        self.out_path = copy_to
        self.log_path = log_path
        self.stream_name = stream_name(source)
        self.packets: list[PacketInfo] = []
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        self.first_publish_at: float | None = None
        self.unpublished_at: float | None = None
        self._silence_s = WATCHED_SILENCE_S if stat_url else SILENCE_S
        self._ended = threading.Event()
        self._watcher: threading.Thread | None = None
        if copy_to is not None:
            copy_to.parent.mkdir(parents=True, exist_ok=True)
        self._reader = threading.Thread(target=self._read, args=(open_timeout_s,), daemon=True)
        self._reader.start()
        if stat_url:
            self.watch(stat_url)

    def start(self) -> StreamRecorder:
        """The recorder already reads from when it was made; kept so `StreamRecorder(...).start()` reads as it does."""
        return self

    def _read(self, open_timeout_s: float) -> None:
        try:
            self.packets = read_packets(self.url, self.out_path, open_timeout_s, self._silence_s, self.stop_event)
        except BaseException as exc:
            self.error = exc
        self._note_end()

    def _note_end(self) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(f"{self.url}: {len(self.packets)} packets; error: {self.error!r}\n")

    def watch(self, stat_url: str) -> None:
        """Follow the stream's publisher in /stat (first publish, then unpublish) on a background thread."""
        if self._watcher is not None:
            return
        self._watcher = threading.Thread(target=self._follow, args=(stat_url,), name=f"watch-{self.stream_name}")
        self._watcher.daemon = True
        self._watcher.start()

    def _follow(self, stat_url: str) -> None:
        while not self.stop_event.is_set():
            published = is_publishing(stat_url, self.stream_name)
            now = time.monotonic()
            if published and self.first_publish_at is None:
                self.first_publish_at = now
            if self.first_publish_at is not None and not published:
                self.unpublished_at = now
                self._ended.set()
                return
            self.stop_event.wait(STAT_POLL_S)

    def running(self) -> bool:
        return self._reader.is_alive()

    def join(self, timeout: float = 30.0) -> list[PacketInfo]:
        """The packets read so far, once the reader ended (or `timeout` passed); raises the reader's error."""
        self._reader.join(timeout)
        if self.error is not None:
            raise self.error
        return self.packets

    def stop(self) -> None:
        """End the recording; the FLV copy is complete when this returns (unless the reader is stuck opening)."""
        self.stop_event.set()
        self._reader.join(self._silence_s + 2.0)

    def stop_when_unpublished(
        self,
        stat_url: str,
        timeout: float = 60.0,
        grace_s: float = 1.0,
        should_abort: Callable[[], bool] | None = None,
    ) -> bool:
        """Block until the stream was published and then unpublished (True) or `timeout` passes (False); stop."""
        self.watch(stat_url)
        deadline = time.monotonic() + timeout
        while not self._ended.is_set() and time.monotonic() < deadline:
            if should_abort is not None and should_abort():
                break
            if not self.running():
                break
            self._ended.wait(0.2)
        ended = self._ended.is_set()
        if ended:
            time.sleep(grace_s)
        self.stop()
        return ended
