"""Helpers for the media tests and the benchmark: free ports, an ffmpeg publisher and recorder, an echo DubClient."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

from livedub.media.types import AudioSegment, DubOutcome, DubStatus
from livedub.mediaserver.urls import ffmpeg_rtmp_args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def publish(path: Path, url: str, loop: bool = False, log: Path | None = None) -> subprocess.Popen[bytes]:
    """ffmpeg publishing `path` to `url` in real time (-re), streams copied."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "warning", "-re"]
    if loop:
        cmd += ["-stream_loop", "-1"]
    cmd += ["-i", str(path), "-c", "copy", "-f", "flv", *ffmpeg_rtmp_args(url), url]
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def record(url: str, path: Path, idle_timeout_s: float = 15.0, log: Path | None = None) -> subprocess.Popen[bytes]:
    """ffmpeg copying the stream at `url` into `path` (FLV).

    The RTMP server sends no end-of-stream, and ffmpeg ignores signals while blocked in an RTMP read, so the
    recorder ends itself `idle_timeout_s` after the last data (start it at most that long before the stream).
    """
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "warning", "-y", "-rw_timeout", str(int(idle_timeout_s * 1e6))]
    cmd += [*ffmpeg_rtmp_args(url), "-i", url, "-c", "copy", "-copyts", "-flush_packets", "1", "-f", "flv", str(path)]
    out = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)


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
