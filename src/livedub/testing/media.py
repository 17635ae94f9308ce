"""Helpers for the media tests and the benchmarks: an ffmpeg publisher and an echo DubClient (the recorder is
livedub.analysis.recorder, which the demo uses too)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from livedub.media.types import AudioSegment, DubOutcome, DubStatus, OnChunk, OnOutcome
from livedub.protocol.codec import downmix_to_mono
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
    """A DubClient that answers each of `targets` with the segment's own audio (mono, as the STS's dubs) after
    `delay_s` (the STS echo pipeline, without STS)."""

    def __init__(self, targets: Sequence[str], delay_s: float = 0.05, length_error: int = 0) -> None:
        self.targets = list(targets)
        self.delay_s = delay_s
        self.length_error = length_error  # samples added (>0) or removed (<0), like a real TTS that is never exact
        self.calls = 0

    async def start(self) -> None:
        return None

    async def dub_targets(self, segment: AudioSegment, on_outcome: OnOutcome, on_chunk: OnChunk | None = None) -> None:
        outcome = await self.dub(segment)
        for language in self.targets:
            on_outcome(replace(outcome, language=language))

    async def dub(self, segment: AudioSegment) -> DubOutcome:
        """The echo, for no language in particular."""
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        pcm = downmix_to_mono(segment.pcm)
        if self.length_error > 0:
            pcm = pcm.copy()
            pcm.resize((pcm.shape[0] + self.length_error, pcm.shape[1]), refcheck=False)
        elif self.length_error < 0:
            pcm = pcm[: self.length_error]
        return DubOutcome(segment.sequence_number, DubStatus.DUBBED, pcm=pcm, sts_status="success", round_trip_s=0)

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, object]:
        return {"ready": True, "echo": True}
