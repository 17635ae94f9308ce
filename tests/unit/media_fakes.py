"""Fake WorkerRunner / DubClient for the media-service manager and hook tests (no media, no STS)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.plan import StreamPlan
from livedub.media.service.manager import WorkerManager
from livedub.media.settings import MediaSettings
from livedub.media.types import AudioSegment, DubClient, DubOutcome, DubStatus, OnChunk, OnOutcome


class FakeClient:
    def __init__(self) -> None:
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def dub_targets(self, segment: AudioSegment, on_outcome: OnOutcome, on_chunk: OnChunk | None = None) -> None:
        on_outcome(DubOutcome(segment.sequence_number, DubStatus.FALLBACK, reason="fake"))

    async def close(self) -> None:
        self.closed = True

    def status(self) -> dict[str, Any]:
        return {"ready": True, "fake": True}


class FakeRunner:
    """Runs until stop(); `crash` makes run() raise, `stubborn` ignores stop(), `gives_up` returns as failed."""

    def __init__(self, stream_id: str, *, crash: bool = False, stubborn: bool = False, gives_up: bool = False) -> None:
        self.stream_id = stream_id
        self.crash = crash
        self.stubborn = stubborn
        self.gives_up = gives_up
        self.state = "running"
        self.stop_calls = 0
        self.output_held = False  # a republish: published only once the previous worker played out
        self.running = threading.Event()  # the worker runs on its own loop thread; tests wait from theirs
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        await asyncio.sleep(0)
        if self.crash:
            raise RuntimeError(f"worker {self.stream_id} exploded")
        if self.gives_up:
            self.state = "failed"  # like WorkerRunner: a stream problem ends run() without raising
            return
        await self._stopped.wait()
        self.state = "stopped"

    def hold_output(self) -> None:
        self.output_held = True

    def release_output(self) -> None:
        self.output_held = False

    def stop(self) -> None:
        self.stop_calls += 1
        if not self.stubborn:
            self._stopped.set()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "lag_s": 1.5, "fragments": 7}


async def wait_running(runner: FakeRunner) -> None:
    assert await asyncio.to_thread(runner.running.wait, 5), f"{runner.stream_id} never ran"


class FakeFleet:
    """Factories for WorkerManager that build fakes and remember them by stream id."""

    def __init__(
        self, crash: set[str] | None = None, stubborn: set[str] | None = None, gives_up: set[str] | None = None
    ) -> None:
        self.crash = crash or set()
        self.stubborn = stubborn or set()
        self.gives_up = gives_up or set()
        self.runners: dict[str, FakeRunner] = {}
        self.clients: dict[str, FakeClient] = {}

    def runner(
        self, plan: StreamPlan, settings: MediaSettings, client: DubClient, metrics: WorkerMetrics
    ) -> FakeRunner:
        stream_id = plan.stream_id
        runner = FakeRunner(
            stream_id,
            crash=stream_id in self.crash,
            stubborn=stream_id in self.stubborn,
            gives_up=stream_id in self.gives_up,
        )
        self.runners[stream_id] = runner
        return runner

    def client(self, plan: StreamPlan, settings: MediaSettings, metrics: WorkerMetrics) -> FakeClient:
        client = FakeClient()
        self.clients[plan.stream_id] = client
        return client


def make_manager(fleet: FakeFleet, **settings: Any) -> WorkerManager:
    # Fake runners never play from a media server: nothing to wait for in on_publish.
    media_settings = MediaSettings(_env_file=None, **{"PUBLISH_JOIN_WAIT_MS": 0, **settings})  # type: ignore[call-arg]
    return WorkerManager(
        media_settings,
        WorkerMetrics(CollectorRegistry()),
        runner_factory=fleet.runner,
        client_factory=fleet.client,
        isolation="thread",  # fakes keep their state in this process
        stop_timeout_s=0.5,
    )
