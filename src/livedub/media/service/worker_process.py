"""Run each WorkerRunner in its own child process.

Why a process and not a thread: PyAV keeps the GIL while FFmpeg opens an RTMP output, and nginx-rtmp only accepts
the worker's `/out` publisher after asking this service (`on_publish`). In one process nobody could answer, and
the publish would time out. A process also confines a crash inside FFmpeg to one stream and lets the workers use
every core.

The child reports `runner.status()` and its Prometheus exposition every `report_interval_s` over a pipe; the
parent serves both (`ProcessRunner.status()`, `ChildMetrics`). The parent sends "stop" for a clean stop.

The child gets the service's settings as they are and its stream's own inputs (`StreamInputs`: the target
languages) as one JSON argument, which it validates before building anything: a malformed one fails that stream,
with the reason as its error, and no other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.plan import StreamInputs, StreamPlan
from livedub.media.settings import MediaSettings
from livedub.media.types import AudioSegment, DubClient, OnChunk, OnOutcome

log = logging.getLogger(__name__)


class Runner(Protocol):
    """A stream's worker as the manager and the worker process drive it (`pipeline.worker.WorkerRunner`)."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def hold_output(self) -> None:
        """Read the input at once but publish only after release_output() (a republish: the previous worker of the
        stream still plays out on the same output). Called before run()."""

    def release_output(self) -> None: ...


RunnerFactory = Callable[[StreamPlan, MediaSettings, DubClient, WorkerMetrics], Runner]
ClientFactory = Callable[[StreamPlan, MediaSettings, WorkerMetrics], DubClient]

STOP = "stop"
RELEASE_OUTPUT = "release_output"  # the previous worker of the stream has played out: publish the output


# ---------------------------------------------------------------------------------------------- child side


def child_main(
    stream_id: str,
    settings: MediaSettings,
    inputs_json: str,
    runner_factory: RunnerFactory,
    client_factory: ClientFactory,
    conn: Connection,
    report_interval_s: float,
    log_level: int,
    hold_output: bool = False,
) -> None:
    """Entry point of the worker process."""
    # Ctrl-C reaches the whole process group; the parent decides when a worker stops (it sends "stop").
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format=f"%(asctime)s %(levelname)s [worker {stream_id}] %(name)s: %(message)s")
    asyncio.run(
        _child(stream_id, settings, inputs_json, runner_factory, client_factory, conn, report_interval_s, hold_output)
    )


def _build(
    stream_id: str, settings: MediaSettings, inputs_json: str, runner_factory: RunnerFactory, factory: ClientFactory
) -> tuple[DubClient, Runner]:
    """The stream's STS client and runner, from its inputs (refused here, before anything starts, if malformed)."""
    from livedub.media.metrics import METRICS  # this process's own registry

    plan = StreamPlan.build(stream_id, settings, StreamInputs.from_json(stream_id, inputs_json))
    client = factory(plan, settings, METRICS)
    return client, runner_factory(plan, settings, client, METRICS)


async def _child(
    stream_id: str,
    settings: MediaSettings,
    inputs_json: str,
    runner_factory: RunnerFactory,
    client_factory: ClientFactory,
    conn: Connection,
    report_interval_s: float,
    hold_output: bool = False,
) -> None:
    from livedub.media.metrics import METRICS  # this process's own registry

    loop = asyncio.get_running_loop()
    try:
        client, runner = _build(stream_id, settings, inputs_json, runner_factory, client_factory)
    except Exception as exc:  # the parent marks the stream failed with this reason
        logging.getLogger(__name__).exception("worker %s could not be built", stream_id)
        with contextlib.suppress(OSError, ValueError):
            conn.send(("exit", f"{type(exc).__name__}: {exc}"))
        return
    if hold_output:
        runner.hold_output()

    def report() -> None:
        status = {**runner.status(), "sts": client.status()}
        with contextlib.suppress(OSError, ValueError):  # the parent may be gone
            conn.send(("report", status, generate_latest(METRICS.registry).decode()))

    def listen() -> None:
        # A thread: Connection.recv blocks. EOF means the parent is gone: stop as well.
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = STOP
            command = runner.release_output if message == RELEASE_OUTPUT else runner.stop if message == STOP else None
            if command is not None and not _call_on(loop, command):
                return  # the run has ended and its loop is closed: nothing left to command
            if message == STOP:
                return

    async def report_periodically() -> None:
        while True:
            await asyncio.sleep(report_interval_s)
            report()

    threading.Thread(target=listen, name="parent-commands", daemon=True).start()
    reporter = asyncio.create_task(report_periodically())
    error: str | None = None
    try:
        await runner.run()
    except Exception as exc:
        logging.getLogger(__name__).exception("worker %s crashed", stream_id)
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"
    finally:
        reporter.cancel()
        with contextlib.suppress(Exception):
            await client.close()
        report()
        with contextlib.suppress(OSError, ValueError):
            conn.send(("exit", error))


# ---------------------------------------------------------------------------------------------- parent side


class WorkerProcessError(RuntimeError):
    """The worker process crashed or died."""


class ChildMetrics:
    """The latest Prometheus exposition of every worker process, merged with the parent's own registry.

    `collect()` makes it usable wherever a registry is (generate_latest, get_sample_value). Ended workers keep
    their final numbers (the last `keep_ended` of them), so a scrape after a stream ended still sees its totals.
    """

    def __init__(self, base: CollectorRegistry, keep_ended: int = 16) -> None:
        self.base = base
        self.keep_ended = keep_ended
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._ended: list[str] = []
        self._lock = threading.Lock()

    def update(self, stream_id: str, exposition: str) -> None:
        with self._lock:
            self._texts[stream_id] = exposition
            if stream_id in self._ended:
                self._ended.remove(stream_id)

    def ended(self, stream_id: str) -> None:
        with self._lock:
            self._ended.append(stream_id)
            while len(self._ended) > self.keep_ended:
                self._texts.pop(self._ended.pop(0), None)

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for family in self.base.collect():
            merged[family.name] = family
            seen.update((s.name, tuple(sorted(s.labels.items()))) for s in family.samples)
        with self._lock:
            texts = list(self._texts.values())
        for text in texts:
            for family in text_string_to_metric_families(text):
                if family.name.endswith("_created"):
                    continue  # creation timestamps of child series: not worth a clash with the parent's
                # A series the parent also has (e.g. pipeline_state after a crash) is the parent's: one value per
                # series, or Prometheus rejects the scrape.
                samples = [
                    s
                    for s in family.samples
                    if not s.name.endswith("_created") and (s.name, tuple(sorted(s.labels.items()))) not in seen
                ]
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(family.name, family.documentation, family.type)
                target.samples.extend(samples)
        return list(merged.values())

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        wanted = labels or {}
        for family in self.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == wanted:
                    return float(sample.value)
        return None


def _call_on(loop: asyncio.AbstractEventLoop, command: Callable[[], object]) -> bool:
    """Run `command` on `loop` (from another thread); False when the loop is closed already."""
    try:
        loop.call_soon_threadsafe(command)
    except RuntimeError:  # "Event loop is closed": a stop that comes after the run ended
        return False
    return True


class ParentSideClient:
    """The manager's DubClient in process mode: the real STS client lives in the worker process."""

    async def start(self) -> None:
        return None

    async def dub_targets(self, segment: AudioSegment, on_outcome: OnOutcome, on_chunk: OnChunk | None = None) -> None:
        """Never asked: the worker that dubs runs in the worker process, with its own client."""
        raise RuntimeError(f"phrase {segment.sequence_number}: dubbing happens in the worker process")

    async def close(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        """Never asked: the STS client's status comes with the worker process's reports (ProcessRunner.status)."""
        return {"in_worker_process": True}


class ProcessRunner:
    """The manager's Runner for a worker process: run() starts it and returns when it ends."""

    def __init__(
        self,
        stream_id: str,
        settings: MediaSettings,
        runner_factory: RunnerFactory,
        client_factory: ClientFactory,
        child_metrics: ChildMetrics,
        report_interval_s: float = 1.0,
        *,
        inputs: StreamInputs,
    ) -> None:
        self.stream_id = stream_id
        self.settings = settings  # the service's, unchanged: the stream's own part travels as `inputs`
        self.inputs = inputs
        self._runner_factory = runner_factory
        self._client_factory = client_factory
        self._child_metrics = child_metrics
        self._report_interval_s = report_interval_s
        self._status: dict[str, Any] = {"state": "starting"}
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._stop_requested = False
        self._hold_output = False
        self._output_released = False

    def hold_output(self) -> None:
        """The child publishes its output only after release_output() (see WorkerRunner.hold_output)."""
        self._hold_output = True

    def release_output(self) -> None:
        self._output_released = True
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(RELEASE_OUTPUT)

    def status(self) -> dict[str, Any]:
        pid = self._process.pid if self._process is not None else None
        return {**self._status, "pid": pid}

    def stop(self) -> None:
        self._stop_requested = True
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(STOP)

    async def run(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork: the parent has threads and an event loop
        parent_conn, child_conn = context.Pipe()
        process = context.Process(
            target=child_main,
            args=(
                self.stream_id,
                self.settings,
                self.inputs.to_json(),
                self._runner_factory,
                self._client_factory,
                child_conn,
                self._report_interval_s,
                logging.getLogger().getEffectiveLevel(),
                self._hold_output,
            ),
            name=f"livedub-worker-{self.stream_id}",
            daemon=True,
        )
        self._process, self._conn = process, parent_conn
        await asyncio.to_thread(process.start)
        child_conn.close()
        if self._output_released:
            self.release_output()
        if self._stop_requested:
            self.stop()
        try:
            error = await self._read_reports(parent_conn)
        except asyncio.CancelledError:
            process.kill()
            raise
        finally:
            await asyncio.to_thread(process.join, 5)
            if process.is_alive():
                process.kill()
            parent_conn.close()
            self._child_metrics.ended(self.stream_id)
        if error is not None:
            raise WorkerProcessError(error)

    async def _read_reports(self, conn: Connection) -> str | None:
        """Consume reports until the child says it exited; returns its error (None for a clean end)."""
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[Any] = asyncio.Queue()

        def readable() -> None:
            try:
                messages.put_nowait(conn.recv())
            except (EOFError, OSError):
                loop.remove_reader(conn.fileno())
                messages.put_nowait(None)

        loop.add_reader(conn.fileno(), readable)
        try:
            while True:
                message = await messages.get()
                if message is None:  # the pipe closed without an exit message: the process died
                    code = await asyncio.to_thread(self._exit_code)
                    self._status = {**self._status, "state": "failed"}
                    return f"worker process died (exit code {code})"
                kind, *payload = message
                if kind == "report":
                    self._status, exposition = payload
                    self._child_metrics.update(self.stream_id, exposition)
                elif kind == "exit":
                    return payload[0]
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(conn.fileno())

    def _exit_code(self) -> int | None:
        if self._process is None:
            return None
        self._process.join(5)
        return self._process.exitcode
