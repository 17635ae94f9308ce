"""The STS inference threads, serving the most urgent job first (earliest deadline first).

Model inference is blocking and CPU-bound, so it runs on `workers` threads off the event loop. Jobs wait in one
queue for all streams, ordered by their absolute deadline; a job whose deadline has passed before a thread takes it
is not run (its future fails with `DeadlineExpired` at once). A job that runs past its deadline, once its
timeout answer is out, can be `abandon`ed: its thread leaves the pool to finish it on the side and a fresh thread
takes its place, so the jobs behind a slow one are not held up by it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

R = TypeVar("R")

# Priority of set-up jobs (model loading, warm-up): before every fragment, never expiring.
URGENT = -math.inf


class DeadlineExpired(Exception):
    """The job's deadline passed before it started; it was not run."""

    @classmethod
    def after_waiting(cls, waited_s: float) -> DeadlineExpired:
        return cls(f"deadline passed before processing started ({waited_s * 1000:.0f} ms in the queue)")


@dataclass(order=True)
class _Job:
    priority: float
    order: int  # ties (same deadline) in submission order
    fn: Callable[[], Any] = field(compare=False)
    future: Future[Any] = field(compare=False)
    expires_at: float | None = field(compare=False)
    queued_at: float = field(compare=False)


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
        self._queue: list[_Job] = []
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

    def submit(self, fn: Callable[..., R], *args: Any, deadline: float | None = None) -> Future[R]:
        """Queue `fn(*args)` to run before `deadline`; None: a set-up job, run before any other, never expiring."""
        future: Future[R] = Future()
        now = self._clock()
        if deadline is not None and deadline <= now:
            # Answered at once: no thread could start it in time.
            future.set_exception(DeadlineExpired.after_waiting(0.0))
            return future
        job = _Job(
            priority=URGENT if deadline is None else deadline,
            order=next(self._order),
            fn=lambda: fn(*args),
            future=future,
            expires_at=deadline,
            queued_at=now,
        )
        with self._cond:
            if self._shutdown:
                future.cancel()
                return future
            heapq.heappush(self._queue, job)
            self._cond.notify()
        return future

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run a set-up job (no deadline, ahead of every fragment) and await its result."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def queue_position(self, future: Future[Any]) -> int | None:
        """None when the job is running (or about to: a thread is free for it), else how many jobs start before it."""
        with self._cond:
            job = next((j for j in self._queue if j.future is future), None)
            if job is None:
                return None
            ahead = sum(1 for j in self._queue if j < job and not j.future.cancelled())
            free = self.workers - self._busy
            return None if ahead < free else ahead - free

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
            for job in self._queue:
                job.future.cancel()
            self._queue.clear()
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

    def _take(self) -> _Job | None:
        """The most urgent live job, waiting for one; None on shutdown. Caller holds the lock."""
        while not self._shutdown:
            while self._queue:
                job = heapq.heappop(self._queue)
                if not job.future.cancelled():
                    return job
            self._cond.wait()
        return None

    def _execute(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return  # cancelled between leaving the queue and now
        now = self._clock()
        if job.expires_at is not None and now >= job.expires_at:
            job.future.set_exception(DeadlineExpired.after_waiting(now - job.queued_at))
            return
        try:
            result = job.fn()
        except BaseException as exc:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)
