"""Watch a running stack from outside: the STS monitor room, the services' Prometheus metrics and their processes'
CPU and memory (from /proc).

Used by `livedub demo` for its report, by the E2E suite for its assertions and by the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
from prometheus_client.parser import text_string_to_metric_families

# ---------------------------------------------------------------------------------------------------- Socket.IO

MONITORED_EVENTS = (
    "stream:ready",
    "fragment:ack",
    "fragment:processed",
    "fragment:chunk",
    "backpressure",
    "stream:complete",
    "error",
)


@dataclass
class ObservedEvent:
    name: str
    data: dict[str, Any]
    received_at: float  # time.monotonic()


class StsMonitor:
    """A Socket.IO client in the STS monitor room of one stream (or all streams), on a background thread.

    Every server->client event of the watched stream is recorded with its arrival time; `wait_for` blocks until a
    condition over the recorded events holds.
    """

    def __init__(self, sts_url: str, stream_id: str | None = None, api_key: str | None = None) -> None:
        self.sts_url = sts_url
        self.stream_id = stream_id
        self.api_key = api_key
        self.events: list[ObservedEvent] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: socketio.AsyncClient | None = None
        self.subscribed: dict[str, Any] | None = None
        self.listeners: list[Callable[[ObservedEvent], None]] = []

    # lifecycle ----------------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> StsMonitor:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._connect())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="sts-monitor", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"STS monitor could not connect to {self.sts_url} within {timeout}s")
        if failure:
            raise failure[0]
        return self

    async def _connect(self) -> None:
        client = socketio.AsyncClient(reconnection=True)
        self._client = client
        for name in MONITORED_EVENTS:
            client.on(name, self._handler(name))
        auth = {"token": self.api_key} if self.api_key else None
        await client.connect(self.sts_url, auth=auth, transports=["websocket"], wait_timeout=10)
        payload = {"stream_id": self.stream_id} if self.stream_id else {}
        self.subscribed = await client.call("monitor:subscribe", payload, timeout=10)

        async def resubscribe() -> None:  # after a reconnect, join the room again
            await client.emit("monitor:subscribe", payload)

        client.on("connect", resubscribe)

    def _handler(self, name: str) -> Callable[[Any], Any]:
        async def handle(data: Any = None) -> None:
            event = ObservedEvent(name, data if isinstance(data, dict) else {"value": data}, time.monotonic())
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
            for listener in list(self.listeners):
                try:
                    listener(event)
                except Exception:  # a listener must not break the monitor
                    pass

        return handle

    def stop(self) -> None:
        loop, client = self._loop, self._client
        if loop is None or not loop.is_running():
            return
        if client is not None:
            fut = asyncio.run_coroutine_threadsafe(client.disconnect(), loop)
            try:
                fut.result(timeout=5)
            except Exception:
                pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> StsMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # queries ------------------------------------------------------------------------------------------------
    def of(self, name: str) -> list[ObservedEvent]:
        with self._cond:
            return [e for e in self.events if e.name == name]

    def processed(self) -> list[dict[str, Any]]:
        return [e.data for e in self.of("fragment:processed")]

    def wait_for(self, predicate: Callable[[list[ObservedEvent]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(remaining, 0.5))
            return True

    def wait_processed(self, count: int, timeout: float) -> bool:
        return self.wait_for(lambda evs: sum(1 for e in evs if e.name == "fragment:processed") >= count, timeout)


# ---------------------------------------------------------------------------------------------------- Prometheus


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Metrics:
    """A parsed Prometheus text exposition."""

    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        samples = [
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
        return cls(samples)

    @classmethod
    def fetch(cls, url: str, timeout: float = 3.0) -> Metrics:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return cls.parse(resp.read().decode("utf-8", "replace"))

    def select(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, default: float = 0.0, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        found = self.select(name, **labels)
        return sum(s.value for s in found) if found else default

    def has(self, name: str, **labels: str) -> bool:
        return bool(self.select(name, **labels))

    def by_label(self, name: str, label: str, **labels: str) -> dict[str, float]:
        result: dict[str, float] = {}
        for s in self.select(name, **labels):
            key = s.labels.get(label, "")
            result[key] = result.get(key, 0.0) + s.value
        return result

    def histogram_fraction_le(self, name: str, bound: float, **labels: str) -> tuple[float, float]:
        """(fraction of observations <= bound, count) of histogram `name` (`bound` must be one of its buckets)."""
        count = self.value(f"{name}_count", **labels)
        if count <= 0:
            return float("nan"), 0.0
        for s in self.select(f"{name}_bucket", **labels):
            le = s.labels.get("le", "")
            if le != "+Inf" and abs(float(le) - bound) < 1e-9:
                return s.value / count, count
        raise KeyError(f"{name} has no bucket le={bound}")

    def histogram_quantile(self, name: str, q: float, **labels: str) -> float:
        """Upper bucket bound below which a fraction `q` of the observations lie (coarse, like PromQL)."""
        buckets = sorted(
            (float("inf") if s.labels["le"] == "+Inf" else float(s.labels["le"]), s.value)
            for s in self.select(f"{name}_bucket", **labels)
        )
        if not buckets or buckets[-1][1] <= 0:
            return float("nan")
        total = buckets[-1][1]
        for bound, cumulative in buckets:
            if cumulative >= q * total:
                return bound
        return float("inf")


# ---------------------------------------------------------------------------------------------------- processes

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of the process and its reaped children (a worker child process is reaped at stream end)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime


def rss_mib(pid: int | None) -> float:
    """Resident memory of the process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
