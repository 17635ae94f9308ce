"""Helpers for the media-service integration tests: in-process STS servers (the real one in echo mode, or a
scriptable fake) on a chosen port, and settings independent of the caller's environment."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import socketio
import uvicorn
from prometheus_client import CollectorRegistry

from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.plan import StreamPlan
from livedub.media.settings import MediaSettings
from livedub.media.types import AudioSegment
from livedub.protocol import StreamReady

TONE_HZ = 440


def write_input(path: Path, seconds: int) -> Path:
    """A small H.264 + AAC file: test picture and a steady 440 Hz tone (easy to recognise in the output; no speech,
    so the fixed segment policy is what sends it to STS)."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:d={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency={TONE_HZ}:sample_rate=48000:d={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac", "-b:a", "64k", str(path)],
        check=True,
    )  # fmt: skip
    return path


def media_settings(**overrides: Any) -> MediaSettings:
    return MediaSettings(_env_file=None, **overrides)  # type: ignore[call-arg]


def fresh_metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


def sample(metrics: Any, name: str, **labels: str) -> float:
    """A sample of a WorkerMetrics registry, or of anything with get_sample_value (the manager's metrics_view)."""
    source = getattr(metrics, "registry", metrics)
    return source.get_sample_value("media_service_worker_" + name, labels) or 0.0


def noise_segment(seq: int, seconds: float = 1.0, rate: int = 48000, channels: int = 1) -> AudioSegment:
    """Low-passed noise (~1 kHz): never periodic, so a shifted copy does not correlate, and AAC codes it well."""
    rng = np.random.default_rng(seq)
    noise = rng.standard_normal((round(seconds * rate) + 47, channels))
    kernel = np.ones(48) / 48
    smooth = np.stack([np.convolve(noise[:, c], kernel, mode="valid") for c in range(channels)], axis=1)
    pcm = (smooth / np.abs(smooth).max() * 12000).astype(np.int16)
    return AudioSegment("s1", seq, start_sample=seq * pcm.shape[0], pcm=pcm, sample_rate=rate)


@asynccontextmanager
async def serve_asgi(app: Any, port: int = 0) -> AsyncIterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1:port (0: any free one) inside this event loop; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)


def echo_sts_app(api_key: str = "") -> Any:
    """The real STS server with the echo pipeline (returns each fragment's own audio)."""
    from livedub.sts.pipeline import EchoPipeline
    from livedub.sts.server import create_app
    from livedub.sts.settings import StsSettings

    settings = StsSettings(_env_file=None).model_copy(update={"api_key": api_key, "worker_threads": 1})  # type: ignore[call-arg]
    return create_app(EchoPipeline(), settings)


class FakeSts:
    """A scripted STS: answers stream:init, then does what `on_fragment` says with each fragment:data.

    Modes: "silent" (never answers), "error" (error event naming the fragment), "drop" (disconnects the client).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.fragments: list[dict[str, Any]] = []
        self.inits = 0
        self.sio = socketio.AsyncServer(async_mode="asgi", max_http_buffer_size=20_000_000)
        self.app = socketio.ASGIApp(self.sio)
        self.sio.on("stream:init", self._on_init)
        self.sio.on("fragment:data", self._on_fragment)

    async def _on_init(self, sid: str, data: dict[str, Any]) -> None:
        self.inits += 1
        ready = StreamReady(stream_id=data["stream_id"], session_id=f"fake-{self.inits}", max_inflight=3)
        await self.sio.emit("stream:ready", ready.to_wire(), to=sid)

    async def _on_fragment(self, sid: str, data: dict[str, Any]) -> None:
        self.fragments.append(data)
        if self.mode == "error":
            error = {"code": "TIMEOUT", "message": "model stuck", "fragment_id": data["fragment_id"]}
            await self.sio.emit("error", error, to=sid)
        elif self.mode == "drop":
            await self.sio.disconnect(sid)


class ProcessFakeRunner:
    """A WorkerRunner stand-in for worker-process tests (module level: the child process imports it by name).

    The stream id picks the behaviour: `crash-*` raises, `die-*` exits the process abruptly, anything else counts
    a segment every 50 ms until stop().
    """

    def __init__(self, stream_id: str, settings: MediaSettings, client: Any, metrics: WorkerMetrics) -> None:
        self.stream_id = stream_id
        self.metrics = metrics
        self.state = "starting"
        self.segments = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        if self.stream_id.startswith("crash-"):
            raise RuntimeError("fake worker exploded")
        if self.stream_id.startswith("die-"):
            import os

            os._exit(3)
        self.state = "running"
        while not self._stop.is_set():
            self.segments += 1
            self.metrics.segments_processed.labels(stream_id=self.stream_id).inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.05)
        self.state = "stopped"

    def hold_output(self) -> None:
        """Nothing is published by this fake: holding and releasing its output change nothing."""

    def release_output(self) -> None:
        """See hold_output."""

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "segments": self.segments}


class ProcessFakeClient:
    async def start(self) -> None:
        return None

    async def dub_targets(self, segment: AudioSegment, on_outcome: Any, on_chunk: Any = None) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"ready": True, "fake": True}


def process_fake_runner(plan: StreamPlan, settings: MediaSettings, client: Any, metrics: WorkerMetrics) -> Any:
    return ProcessFakeRunner(plan.stream_id, settings, client, metrics)


def process_fake_client(plan: StreamPlan, settings: MediaSettings, metrics: WorkerMetrics) -> Any:
    return ProcessFakeClient()
