"""Child processes that never outlive their parent, however the parent ends.

Three mechanisms, each covering what the others cannot:

* `PR_SET_PDEATHSIG`: the kernel signals the child when its parent dies, SIGKILL included. It fires when the
  *thread* that forked the child ends, not the process, and stacks start from short-lived threads (the E2E starts
  two at once), so `spawn` forks every child from one daemon thread that lives as long as the process.
* Process groups: each service runs in its own session, so stopping it stops what it spawned (`stack.ManagedProcess`).
* `interrupt_on_termination`: SIGTERM/SIGHUP raise KeyboardInterrupt in the main thread, so a parent that is told
  to stop (by `timeout`, a CI runner, systemd) takes its clean shutdown path (pytest then tears its fixtures down).
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

PR_SET_PDEATHSIG = 1
# Loaded in the parent: loading a library between fork and exec can deadlock in a threaded parent.
_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` that asks the kernel to send `sig` to the child when its parent dies."""
    parent = os.getpid()

    def preexec() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before the prctl: its signal would never come
            os.kill(os.getpid(), sig)

    return preexec


class _Spawner:
    """Forks children from one daemon thread that ends only with the process (see the module's note)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        self._ensure_thread()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((start, done))
        return done.result()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="livedub-spawner", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            start, done = self._jobs.get()
            try:
                done.set_result(start())
            except BaseException as exc:  # handed to the caller, who re-raises it
                done.set_exception(exc)


_SPAWNER = _Spawner()
_SPAWNER_PID = os.getpid()


def spawn(argv: Sequence[str], sig: int = signal.SIGTERM, **popen_kwargs: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(argv, **popen_kwargs)` whose child receives `sig` when this process ends, however it ends."""
    global _SPAWNER, _SPAWNER_PID
    if os.getpid() != _SPAWNER_PID:  # a forked copy of this process has no spawner thread
        _SPAWNER, _SPAWNER_PID = _Spawner(), os.getpid()
    preexec = die_with_parent(sig)
    return _SPAWNER.run(lambda: subprocess.Popen(list(argv), preexec_fn=preexec, **popen_kwargs))


def interrupt_on_termination() -> None:
    """From now on SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread (one cleanup path for all)."""

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
