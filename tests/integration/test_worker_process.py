"""Workers in child processes: status and metrics reach the parent, stop() ends them, a crash or a dying process
is reported as a failed worker while the service and the other workers go on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from media_testkit import fresh_metrics, media_settings, process_fake_client, process_fake_runner, sample

from livedub.media.service.manager import WorkerManager

pytestmark = pytest.mark.integration


def make_manager() -> WorkerManager:
    return WorkerManager(
        media_settings(MAX_CONCURRENT_STREAMS=3),
        fresh_metrics(),
        runner_factory=process_fake_runner,
        client_factory=process_fake_client,
        stop_timeout_s=20,
    )


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - reports arrive over a pipe; polling the view is the simplest
            await asyncio.sleep(0.05)


async def test_process_worker_reports_status_and_metrics_and_stops_cleanly() -> None:
    manager = make_manager()
    try:
        assert (await manager.start_stream("good")).accepted
        await until(lambda: sample(manager.metrics_view, "segments_processed_total", stream_id="good") >= 3)
        [entry] = manager.list_streams()
        assert entry["state"] == "running" and entry["segments"] >= 1 and entry["pid"]
        assert entry["sts"] == {"ready": True, "fake": True}
        assert await manager.stop_stream("good")
        handle = manager.get("good")
        assert handle is not None and handle.task is not None
        await asyncio.wait_for(asyncio.shield(handle.task), 20)
        assert handle.state == "stopped"
        assert manager.get("good") is None
        # The final numbers stay visible after the worker ended.
        assert sample(manager.metrics_view, "segments_processed_total", stream_id="good") >= 3
    finally:
        await manager.shutdown()


async def test_crashing_and_dying_processes_are_failed_workers_and_the_rest_goes_on() -> None:
    manager = make_manager()
    try:
        for stream_id in ("ok", "crash-1", "die-1"):
            assert (await manager.start_stream(stream_id)).accepted
        for stream_id in ("crash-1", "die-1"):
            handle = manager.get(stream_id)
            assert handle is not None and handle.task is not None
            await asyncio.wait_for(asyncio.shield(handle.task), 20)
        states = {s["stream_id"]: s for s in manager.list_streams()}
        assert states["crash-1"]["state"] == "failed" and "exploded" in states["crash-1"]["error"]
        assert states["die-1"]["state"] == "failed" and "exit code 3" in states["die-1"]["error"]
        for stream_id in ("crash-1", "die-1"):
            assert sample(manager.metrics, "errors_total", stream_id=stream_id, type="worker_crash") == 1
        ok = manager.get("ok")
        assert ok is not None and ok.active
        before = sample(manager.metrics_view, "segments_processed_total", stream_id="ok")
        await until(lambda: sample(manager.metrics_view, "segments_processed_total", stream_id="ok") > before)
    finally:
        await manager.shutdown()
    assert manager.active_count() == 0


class HeldRunner:
    """Publishes (counts segments) only once its output is released, like WorkerRunner.hold_output()."""

    def __init__(self, stream_id: str, settings: object, client: object, metrics: object) -> None:
        self.state = "starting"
        self.segments = 0
        self._free: asyncio.Event | None = None
        self._stop = asyncio.Event()

    def hold_output(self) -> None:
        self._free = asyncio.Event()

    def release_output(self) -> None:
        assert self._free is not None
        self._free.set()

    async def run(self) -> None:
        if self._free is not None:
            self.state = "held"
            await self._free.wait()
        self.state = "publishing"
        await self._stop.wait()
        self.state = "stopped"

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, object]:
        return {"state": self.state}


async def test_a_process_worker_holds_its_output_until_released() -> None:
    from livedub.media.pipeline.plan import StreamInputs
    from livedub.media.service.worker_process import ChildMetrics, ProcessRunner

    metrics = fresh_metrics()
    runner = ProcessRunner(
        "held",
        media_settings(),
        HeldRunner,
        process_fake_client,
        ChildMetrics(metrics.registry),
        report_interval_s=0.1,
        inputs=StreamInputs(targets=("es",)),
    )
    runner.hold_output()  # a republish: the previous worker still plays out
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: runner.status()["state"] == "held")
        await asyncio.sleep(0.5)
        assert runner.status()["state"] == "held"
        runner.release_output()  # over the pipe
        await until(lambda: runner.status()["state"] == "publishing")
    finally:
        runner.stop()
        await asyncio.wait_for(task, 20)
    assert runner.status()["state"] == "stopped"
