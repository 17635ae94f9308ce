"""WorkerManager: one WorkerRunner per published stream, started and stopped by the media server's hooks.

Isolation: by default each worker runs in its own process (`worker_process`), so a worker can neither block the
HTTP API and the hooks (PyAV keeps the GIL while FFmpeg opens an RTMP output that waits for our own on_publish
hook) nor crash the service. `isolation="thread"` runs workers on their own event loop threads in this process
(tests with fake runners, debugging). A worker that crashes is logged, counted and marked `failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from livedub.media.metrics import METRICS, WorkerMetrics
from livedub.media.pipeline.plan import StreamInputs, StreamPlan
from livedub.media.service.loop_thread import EventLoopThread
from livedub.media.service.worker_process import (
    ChildMetrics,
    ClientFactory,
    ParentSideClient,
    ProcessRunner,
    Runner,
    RunnerFactory,
)
from livedub.media.settings import MediaSettings
from livedub.media.types import DubClient

log = logging.getLogger(__name__)


def default_runner_factory(
    plan: StreamPlan, settings: MediaSettings, dub_client: DubClient, metrics: WorkerMetrics
) -> Runner:
    from livedub.media.pipeline.worker import WorkerRunner  # imported late: it pulls in PyAV, models, ...

    return WorkerRunner(plan, settings, dub_client, metrics)


def default_client_factory(plan: StreamPlan, settings: MediaSettings, metrics: WorkerMetrics) -> DubClient:
    from livedub.media.sts_link.sts_client import StsClient
    from livedub.media.sts_link.sts_pool import stream_endpoint

    endpoint = stream_endpoint(plan.stream_id, settings.sts_service_url, metrics.registry)
    return StsClient(
        plan.stream_id, settings, metrics, targets=plan.targets, dub_overrun_ms=settings.dub_overrun_ms,
        endpoint=endpoint,
    )  # fmt: skip


@dataclass(frozen=True)
class StartDecision:
    accepted: bool
    reason: str


@dataclass
class WorkerHandle:
    stream_id: str
    runner: Runner
    client: DubClient
    inputs: StreamInputs  # what the worker was started with (the operator's target languages, if chosen)
    source: str
    loop_thread: EventLoopThread | None  # None: the worker is a process, driven from the service's loop
    started_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = None
    state: str = "starting"  # starting | running | stopping | stopped | failed
    error: str | None = None
    predecessor: WorkerHandle | None = None  # the same stream's previous worker, still playing out (a republish)

    @property
    def active(self) -> bool:
        return self.task is not None and not self.task.done()

    def sts_status(self, runner_status: dict[str, Any]) -> object:
        """The STS link's status: a worker process reports its client's with its own status; a worker on a thread
        has its client here."""
        return runner_status.get("sts") if self.loop_thread is None else self.client.status()


class WorkerManager:
    """Starts/stops workers by stream id and enforces MAX_CONCURRENT_STREAMS.

    In process isolation the factories run in the worker process: they must be importable module-level callables.
    """

    def __init__(
        self,
        settings: MediaSettings,
        metrics: WorkerMetrics = METRICS,
        *,
        runner_factory: RunnerFactory = default_runner_factory,
        client_factory: ClientFactory = default_client_factory,
        isolation: Literal["process", "thread"] = "process",
        stop_timeout_s: float = 15.0,
        stop_call_timeout_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._runner_factory = runner_factory
        self._client_factory = client_factory
        self.isolation = isolation
        # What /metrics serves: this registry plus the latest numbers of every worker process.
        self.metrics_view = ChildMetrics(metrics.registry)
        self.stop_timeout_s = stop_timeout_s
        self.stop_call_timeout_s = stop_call_timeout_s
        self._pending_stops: set[asyncio.Future[None]] = set()
        self._handovers: set[asyncio.Task[None]] = set()
        self._workers: dict[str, WorkerHandle] = {}
        self._next_inputs: dict[str, StreamInputs] = {}  # the operator's target languages for a stream's next start
        self._lock = asyncio.Lock()  # start/stop decisions for the same id must not interleave
        self._closing = False

    @property
    def max_streams(self) -> int:
        return self.settings.max_concurrent_streams

    def set_next_targets(self, stream_id: str, target_languages: list[str] | None) -> None:
        """Target languages for the stream's next worker start (None or empty: back to the settings). A running
        worker keeps its languages until it is restarted."""
        if target_languages:
            self._next_inputs[stream_id] = StreamInputs(targets=tuple(dict.fromkeys(target_languages)))
        else:
            self._next_inputs.pop(stream_id, None)

    def next_targets(self, stream_id: str) -> list[str] | None:
        chosen = self._next_inputs.get(stream_id)
        return list(chosen.targets) if chosen is not None else None

    def inputs_for(self, stream_id: str) -> StreamInputs:
        """What a new worker of `stream_id` is started with: the operator's target languages, else the settings'."""
        chosen = self._next_inputs.get(stream_id)
        return chosen if chosen is not None else StreamInputs.of_settings(self.settings)

    def active_count(self) -> int:
        return sum(1 for handle in self._workers.values() if handle.active)

    def get(self, stream_id: str) -> WorkerHandle | None:
        return self._workers.get(stream_id)

    async def start_stream(self, stream_id: str, source: str = "hook") -> StartDecision:
        """Start a worker for `stream_id`, or say why not. A second start for a running stream is a no-op."""
        async with self._lock:
            if self._closing:
                return StartDecision(False, "media-service is shutting down")
            existing = self._workers.get(stream_id)
            predecessor = None
            if existing is not None and existing.active:
                if existing.state != "stopping":
                    return StartDecision(True, f"worker already {existing.state}")
                # A republish while the old worker still plays out its delay line: the new worker reads the new
                # input at once (the media server waits for this hook) and publishes once the old one is done.
                predecessor = existing
            if self.active_count() - (predecessor is not None) >= self.max_streams:
                log.warning(
                    "refusing stream %s: %d/%d workers running", stream_id, self.active_count(), self.max_streams
                )
                self.metrics.errors.labels(stream_id=stream_id, type="stream_limit").inc()
                return StartDecision(False, f"stream limit reached ({self.max_streams} concurrent streams)")
            loop_thread = EventLoopThread(f"worker-{stream_id}") if self.isolation == "thread" else None
            try:
                if loop_thread is None:
                    handle = self._create_process(stream_id, source)
                else:  # built on its own loop: asyncio objects of the runner and client belong there
                    handle = await loop_thread.call(self._create, stream_id, source, loop_thread)
                if predecessor is not None:
                    await self._on_worker_loop(handle, handle.runner.hold_output)
            except Exception as exc:  # a worker that cannot even be built must not break the hook
                if loop_thread is not None:
                    loop_thread.stop()
                log.exception("cannot create worker for %s", stream_id)
                self.metrics.errors.labels(stream_id=stream_id, type="worker_create").inc()
                self.metrics.set_state(stream_id, "failed")
                return StartDecision(False, f"worker could not be created: {exc}")
            handle.predecessor = predecessor
            self._workers[stream_id] = handle
            handle.task = asyncio.create_task(self._run(handle), name=f"worker-{stream_id}")
            if predecessor is not None:
                self._handovers.add(task := asyncio.create_task(self._hand_over(predecessor, handle)))
                task.add_done_callback(self._handovers.discard)
            log.info("started worker for %s (%d/%d)", stream_id, self.active_count(), self.max_streams)
            return StartDecision(True, "worker started" if predecessor is None else "worker started (after the last)")

    async def _hand_over(self, old: WorkerHandle, new: WorkerHandle) -> None:
        """Let the previous worker play out (bounded by stop_timeout_s), then let the new one publish."""
        try:
            await self._finish(old)
        finally:
            new.predecessor = None
            with contextlib.suppress(Exception):
                await self._on_worker_loop(new, new.runner.release_output)

    @staticmethod
    async def _on_worker_loop(handle: WorkerHandle, call: Callable[[], None]) -> None:
        """Call a runner method where the runner lives: its loop thread, or here for a process runner (which sends
        the call down its pipe)."""
        if handle.loop_thread is None:
            call()
        else:
            await handle.loop_thread.call(call)

    async def stop_stream(self, stream_id: str) -> bool:
        """Ask the stream's worker to stop (it drains in the background). False if there was none."""
        handle = self._workers.get(stream_id)
        if handle is None:
            return False
        if handle.active:
            await self._request_stop(handle)
        else:
            self._workers.pop(stream_id, None)  # a finished or failed entry: forget it
        return True

    def list_streams(self) -> list[dict[str, Any]]:
        return [self._describe(handle) for handle in self._workers.values()]

    async def shutdown(self) -> None:
        """Stop every worker, wait for them (bounded), close their STS clients."""
        self._closing = True
        handles = list(self._workers.values())
        handles += [h.predecessor for h in handles if h.predecessor is not None]
        await asyncio.gather(*(self._request_stop(handle) for handle in handles if handle.active))
        await asyncio.gather(*(self._finish(handle) for handle in handles))

    # ------------------------------------------------------------------ internals

    def _create(self, stream_id: str, source: str, loop_thread: EventLoopThread) -> WorkerHandle:
        inputs = self.inputs_for(stream_id)
        plan = StreamPlan.build(stream_id, self.settings, inputs)
        client = self._client_factory(plan, self.settings, self.metrics)
        runner = self._runner_factory(plan, self.settings, client, self.metrics)
        return WorkerHandle(stream_id, runner, client, inputs, source=source, loop_thread=loop_thread)

    def _create_process(self, stream_id: str, source: str) -> WorkerHandle:
        inputs = self.inputs_for(stream_id)
        runner = ProcessRunner(
            stream_id, self.settings, self._runner_factory, self._client_factory, self.metrics_view, inputs=inputs
        )
        return WorkerHandle(stream_id, runner, ParentSideClient(), inputs, source=source, loop_thread=None)

    @staticmethod
    async def _drive(handle: WorkerHandle) -> None:
        """The worker's life, on its own loop."""
        await handle.client.start()
        handle.state = "running" if handle.state == "starting" else handle.state
        await handle.runner.run()

    async def _run(self, handle: WorkerHandle) -> None:
        stream_id = handle.stream_id
        try:
            if handle.loop_thread is None:
                await self._drive(handle)
            else:
                await handle.loop_thread.run(self._drive(handle))
            # run() does not raise for stream problems; it reports them as its final state.
            if self._runner_state(handle) == "failed":
                handle.state, handle.error = "failed", "the worker ended in state failed (see its log)"
            else:
                handle.state = "stopped"
        except asyncio.CancelledError:
            handle.state = "stopped"
            raise
        except Exception as exc:
            # The point of the manager: one broken worker is logged and counted, nothing else is affected.
            log.exception("worker for %s crashed", stream_id)
            handle.state, handle.error = "failed", f"{type(exc).__name__}: {exc}"
            self.metrics.errors.labels(stream_id=stream_id, type="worker_crash").inc()
            self.metrics.set_state(stream_id, "failed")
        finally:
            await self._close_client(handle)
            if handle.loop_thread is not None:
                handle.loop_thread.stop()
            log.info("worker for %s ended: %s", stream_id, handle.state)
            if handle.state == "stopped" and self._workers.get(stream_id) is handle:
                del self._workers[stream_id]  # failed ones stay listed until the stream is unpublished

    async def _finish(self, handle: WorkerHandle, timeout_s: float | None = None) -> None:
        """Wait for a stopping worker; cancel it if it does not end within `timeout_s` (default stop_timeout_s)."""
        if handle.task is None:
            return
        timeout_s = self.stop_timeout_s if timeout_s is None else timeout_s
        done, _ = await asyncio.wait({handle.task}, timeout=timeout_s)
        if not done:
            log.warning("worker for %s did not stop within %.1fs; cancelling", handle.stream_id, timeout_s)
            handle.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handle.task

    async def _request_stop(self, handle: WorkerHandle) -> None:
        """Call runner.stop() on the worker's loop. A busy loop gets it later; _finish() bounds the wait."""
        handle.state = "stopping"
        if handle.loop_thread is None:
            handle.runner.stop()  # a process runner: sends "stop" down its pipe
            return
        stop_call = asyncio.ensure_future(handle.loop_thread.call(handle.runner.stop))
        done, _ = await asyncio.wait({stop_call}, timeout=self.stop_call_timeout_s)
        if not done:
            log.warning("worker for %s is busy; its stop request is queued", handle.stream_id)
            self._pending_stops.add(stop_call)
            stop_call.add_done_callback(self._pending_stops.discard)
        elif stop_call.exception() is not None:
            log.error("stopping worker %s failed (%s); cancelling it", handle.stream_id, stop_call.exception())
            if handle.task is not None:
                handle.task.cancel()

    async def _close_client(self, handle: WorkerHandle) -> None:
        """Close the STS client on its loop (idempotent; the runner normally closed it already)."""
        closing = handle.client.close()
        if handle.loop_thread is not None:
            closing = handle.loop_thread.run(closing)
        try:
            await asyncio.wait_for(closing, self.stop_call_timeout_s * 5)
        except Exception as exc:
            log.warning("closing the STS client of %s failed: %r", handle.stream_id, exc)

    @staticmethod
    def _runner_state(handle: WorkerHandle) -> str | None:
        try:
            return handle.runner.status().get("state")
        except Exception:
            return None

    def _describe(self, handle: WorkerHandle) -> dict[str, Any]:
        try:
            runner_status = dict(handle.runner.status())
        except Exception as exc:
            runner_status = {"status_error": f"{type(exc).__name__}: {exc}"}
        return {
            # what the worker was started with (a worker process reports its own once it runs)
            "source_language": self.settings.source_language,
            "target_languages": list(handle.inputs.targets),
            **runner_status,
            "stream_id": handle.stream_id,
            "state": handle.state
            if handle.state in {"stopping", "failed"}
            else runner_status.get("state", handle.state),
            "source": handle.source,
            "started_at": runner_status.get("started_at") or datetime.fromtimestamp(handle.started_at, UTC).isoformat(),
            "uptime_s": round(time.time() - handle.started_at, 1),
            "error": handle.error,
            "sts": handle.sts_status(runner_status),
        }
