"""The STS inference threads, serving the most urgent job first (earliest deadline first), fairly across streams.

Model inference is blocking and CPU-bound, so it runs on `workers` threads off the event loop. Each stream (a job's
`key`) has its own queue ordered by absolute deadline. Deadline order alone lets one stream starve another: a
stream that keeps its queue full of work more urgent than the other's (shorter deadlines, or simply more of it) gets
every thread. So the next job comes from the streams that have been served least: a stream may run at most
`FAIR_LEAD` jobs ahead of the least-served stream that is waiting, and among those the most urgent job goes first
(start-time fair queueing with a deadline tie-break; a stream that was idle does not bank credit). With one stream,
or streams that do not compete, this is plain earliest deadline first. A job whose deadline has passed before a
thread takes it is not run (its future fails with `DeadlineExpired` at once) and costs its stream nothing. A job
that runs past its deadline, once its timeout answer is out, can be `abandon`ed: its thread leaves the pool to
finish it on the side and a fresh thread takes its place, so the jobs behind a slow one are not held up by it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)

R = TypeVar("R")

# Priority of set-up jobs (model loading, warm-up): before every fragment, never expiring.
URGENT = -math.inf
# How many jobs a stream may be served ahead of the least-served waiting stream. 1 would be strict round-robin;
# 2 leaves room for deadline order (an urgent job of a stream just served may still go first) while no stream can
# wait behind more than two jobs of each other stream.
FAIR_LEAD = 2.0
_SETUP_KEY: Hashable = ("setup",)  # set-up jobs are nobody's stream
_SHARED_KEY: Hashable = ("shared",)  # jobs submitted without a key


class DeadlineExpired(Exception):
    """The job's deadline passed before it started; it was not run."""

    @classmethod
    def after_waiting(cls, waited_s: float) -> DeadlineExpired:
        return cls(
            f"deadline passed before processing started, or too close to it ({waited_s * 1000:.0f} ms in the queue)"
        )


@dataclass(order=True)
class _Job:
    priority: float
    order: int  # ties (same deadline) in submission order
    fn: Callable[[], Any] = field(compare=False)
    future: Future[Any] = field(compare=False)
    expires_at: float | None = field(compare=False)
    queued_at: float = field(compare=False)
    key: Hashable = field(compare=False, default=None)
    on_start: Callable[[], Any] | None = field(compare=False, default=None)
    needs_s: float = field(compare=False, default=0.0)  # the time it needs after its start_by (deadline - start_by)


@dataclass(eq=False)
class _Thread:
    job: _Job | None = None
    detached: bool = False  # abandoned with its job: exits when the job returns


class DeadlineRunner:
    """`workers` threads serving jobs in order of their deadline (a monotonic instant of `clock`)."""

    def __init__(
        self, workers: int, *, clock: Callable[[], float] = time.monotonic, name: str = "sts-inference"
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._queues: dict[Hashable, list[_Job]] = {}  # per stream, by deadline
        self._served: dict[Hashable, float] = {}  # per stream: jobs started (virtual time, see the module doc)
        self._virtual_now = 0.0  # the served count of the stream of the last job started
        self._order = itertools.count()
        self._threads: list[_Thread] = []
        self._busy = 0  # pool threads (not detached) running a job
        self._detached = 0
        self._shutdown = False
        self._started = 0
        for _ in range(workers):
            self._start_thread()

    @property
    def threads(self) -> int:
        """Threads alive: the pool's, plus abandoned ones still finishing a late job."""
        with self._cond:
            return len(self._threads)

    # ------------------------------------------------------------ submitting

    def submit(
        self,
        fn: Callable[..., R],
        *args: Any,
        deadline: float | None = None,
        key: Hashable = None,
        on_start: Callable[[], Any] | None = None,
        start_by: float | None = None,
    ) -> Future[R]:
        """Queue `fn(*args)` to run before `deadline`; None: a set-up job, run before any other, never expiring.

        `key` names the job's stream (jobs of different keys share the threads fairly); `on_start` is called on the
        inference thread right before `fn` runs (not for jobs that expire or are cancelled first). `start_by`
        (default: the deadline): the job is worth starting only before it (it needs the time after it), else it
        expires in the queue like a job past its deadline, at no cost to its stream. Under overload this keeps a
        stream's stale jobs from using up its fair turns while its fresh ones age behind another stream's.
        """
        future: Future[R] = Future()
        now = self._clock()
        expires_at = deadline if start_by is None or deadline is None else min(start_by, deadline)
        if expires_at is not None and expires_at <= now:
            # Answered at once: no thread could start it in time.
            future.set_exception(DeadlineExpired.after_waiting(0.0))
            return future
        job = _Job(
            priority=URGENT if deadline is None else deadline,
            order=next(self._order),
            fn=lambda: fn(*args),
            future=future,
            expires_at=expires_at,
            queued_at=now,
            key=_SETUP_KEY if deadline is None else _SHARED_KEY if key is None else key,
            on_start=on_start,
            needs_s=0.0 if deadline is None or expires_at is None else max(0.0, deadline - expires_at),
        )
        with self._cond:
            if self._shutdown:
                future.cancel()
                return future
            queue = self._queues.setdefault(job.key, [])
            if not self._live(queue):  # becomes backlogged: starts level with the others, no banked credit
                self._served[job.key] = max(self._served.get(job.key, 0.0), self._virtual_now)
            heapq.heappush(queue, job)
            self._cond.notify()
        return future

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a set-up job (no deadline, ahead of every fragment) and await its result."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def queue_position(self, future: Future[Any]) -> int | None:
        """None when the job is running (or about to: a thread is free for it), else how many jobs start before it
        (as queued now, if none expires first)."""
        with self._cond:
            queues = {k: sorted(j for j in q if not j.future.cancelled()) for k, q in self._queues.items()}
            if not any(j.future is future for q in queues.values() for j in q):
                return None
            served = dict(self._served)
            ahead = 0
            while (key := _pick(queues, served)) is not None:
                job = queues[key].pop(0)
                if job.future is future:
                    break
                served[key] = served.get(key, 0.0) + 1
                ahead += 1
            free = self.workers - self._busy
            return None if ahead < free else ahead - free

    def slack_s(self) -> float:
        """How much longer the jobs waiting now could all wait and still start in time (by their `start_by`), served
        earliest first, each taking what it needs; infinite when none waits. A running job that takes more than its
        cheapest way (an upgrade) should not take more than this: the work behind it would start too late."""
        now = self._clock()
        with self._cond:
            waiting = sorted(
                (j for q in self._queues.values() for j in q if j.expires_at is not None and not j.future.cancelled()),
                key=lambda j: j.expires_at or 0.0,
            )
        slack, ahead = math.inf, 0.0
        for job in waiting:
            assert job.expires_at is not None
            slack = min(slack, job.expires_at - now - ahead / self.workers)
            ahead += job.needs_s
        return max(0.0, slack)

    def queued(self, key: Hashable) -> int:
        """Jobs of `key` waiting for a thread."""
        with self._cond:
            jobs = self._queues.get(_SHARED_KEY if key is None else key, [])
            return sum(1 for j in jobs if not j.future.cancelled())

    def abandon(self, future: Future[Any]) -> bool:
        """The running job of `future` is past its deadline and answered: give its thread's place to a fresh one.

        At most `workers` threads are abandoned at a time (a job that never returns must not grow the process
        without bound); past that the job keeps its place. True when a fresh thread was started.
        """
        with self._cond:
            thread = next((t for t in self._threads if t.job is not None and t.job.future is future), None)
            if thread is None or thread.detached or self._detached >= self.workers or self._shutdown:
                return False
            thread.detached = True
            self._detached += 1
            self._busy -= 1
            self._start_thread()
            return True

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            for queue in self._queues.values():
                for job in queue:
                    job.future.cancel()
            self._queues.clear()
            self._cond.notify_all()

    # ------------------------------------------------------------ threads

    def _start_thread(self) -> None:
        # Caller holds the lock (or is __init__).
        state = _Thread()
        self._threads.append(state)
        self._started += 1
        thread = threading.Thread(target=self._serve, args=(state,), name=f"{self._name}-{self._started}", daemon=True)
        thread.start()

    def _serve(self, state: _Thread) -> None:
        while True:
            with self._cond:
                job = self._take()
                if job is None:
                    self._threads.remove(state)
                    return
                state.job = job
                self._busy += 1
            self._execute(job)  # never raises: the job's outcome goes to its future
            with self._cond:
                state.job = None
                if state.detached:
                    self._detached -= 1
                    self._threads.remove(state)
                    return
                self._busy -= 1

    @staticmethod
    def _live(queue: list[_Job]) -> bool:
        """Drop cancelled jobs from the head of `queue`; True if a job is left."""
        while queue and queue[0].future.cancelled():
            heapq.heappop(queue)
        return bool(queue)

    def _take(self) -> _Job | None:
        """The next job (fair across streams, most urgent first), waiting for one; None on shutdown.
        Caller holds the lock. Jobs found expired are answered here and cost their stream nothing."""
        while not self._shutdown:
            for idle in [k for k, q in self._queues.items() if not self._live(q)]:  # e.g. all its jobs cancelled
                del self._queues[idle]
                self._served.pop(idle, None)
            key = _pick(self._queues, self._served)
            if key is None:
                self._cond.wait()
                continue
            job = heapq.heappop(self._queues[key])
            now = self._clock()
            if job.expires_at is not None and now >= job.expires_at:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(DeadlineExpired.after_waiting(now - job.queued_at))
                continue
            self._virtual_now = max(self._virtual_now, self._served.get(key, 0.0))
            self._served[key] = self._served.get(key, 0.0) + 1
            return job
        return None

    def _execute(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # cancelled between leaving the queue and now
        now = self._clock()
        if job.expires_at is not None and now >= job.expires_at:
            job.future.set_exception(DeadlineExpired.after_waiting(now - job.queued_at))
            return
        if job.on_start is not None:
            try:
                job.on_start()
            except Exception:  # a notification must not fail the job (e.g. its event loop is closing)
                log.debug("on_start of a job failed", exc_info=True)
        try:
            result = job.fn()
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)


def _pick(queues: dict[Hashable, list[_Job]], served: dict[Hashable, float]) -> Hashable | None:
    """The key whose head job starts next: set-up jobs first, then the most urgent head among the streams served
    fewer than FAIR_LEAD jobs more than the least-served waiting one. `queues` holds live, heap-ordered queues."""
    heads = {k: q[0] for k, q in queues.items() if q}
    if not heads:
        return None
    if _SETUP_KEY in heads:
        return _SETUP_KEY
    least = min(served.get(k, 0.0) for k in heads)
    eligible = [k for k in heads if served.get(k, 0.0) < least + FAIR_LEAD]
    return min(eligible, key=lambda k: heads[k])
