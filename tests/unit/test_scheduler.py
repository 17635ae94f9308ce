"""DeadlineRunner: earliest deadline first, late jobs answered without running, slow jobs abandoned to a fresh thread.

Deadlines are instants of a fake clock (the test moves it); the jobs are real threads held by gates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import pytest

from livedub.sts.scheduler import DeadlineExpired, DeadlineRunner

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Jobs:
    """Jobs that record the order they start in and, when gated, wait for the test to let them finish."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self._changed = threading.Condition()

    def job(self, name: str, *, gated: bool = False) -> Callable[[], str]:
        gate = self.gates.setdefault(name, threading.Event())
        if not gated:
            gate.set()

        def run() -> str:
            with self._changed:
                self.started.append(name)
                self._changed.notify_all()
            assert gate.wait(10), f"{name} was never released"
            return name

        return run

    def wait_started(self, *names: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: set(names) <= set(self.started), timeout=10), self.started


def result(future: Future[str]) -> str:
    return future.result(timeout=10)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_waiting_jobs_start_earliest_deadline_first_across_submission_order(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        blocker = runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100)
        jobs.wait_started("blocker")
        late = runner.submit(jobs.job("late"), deadline=clock.now + 30)
        urgent = runner.submit(jobs.job("urgent"), deadline=clock.now + 10)
        middle = runner.submit(jobs.job("middle"), deadline=clock.now + 20)
        tie = runner.submit(jobs.job("tie"), deadline=clock.now + 20)  # same deadline: after the earlier one
        assert [runner.queue_position(f) for f in (urgent, middle, tie, late)] == [0, 1, 2, 3]
        jobs.gates["blocker"].set()
        for future in (blocker, urgent, middle, tie, late):
            result(future)
    finally:
        runner.shutdown()
    assert jobs.started == ["blocker", "urgent", "middle", "tie", "late"]


def test_set_up_jobs_go_before_every_fragment(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100)
        jobs.wait_started("blocker")
        fragment = runner.submit(jobs.job("fragment"), deadline=clock.now + 1)
        warmup = runner.submit(jobs.job("warmup"))  # no deadline: model loading / warm-up
        jobs.gates["blocker"].set()
        result(fragment)
        result(warmup)
    finally:
        runner.shutdown()
    assert jobs.started == ["blocker", "warmup", "fragment"]
    assert result(warmup) == "warmup"


def test_a_job_whose_deadline_passed_while_queued_is_not_run(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100)
        jobs.wait_started("blocker")
        expired = runner.submit(jobs.job("expired"), deadline=clock.now + 1)
        on_time = runner.submit(jobs.job("on-time"), deadline=clock.now + 50)
        clock.now += 5  # the blocker ran past `expired`'s deadline
        jobs.gates["blocker"].set()
        with pytest.raises(DeadlineExpired, match=r"5000 ms in the queue"):
            expired.result(timeout=10)
        assert result(on_time) == "on-time"
    finally:
        runner.shutdown()
    assert "expired" not in jobs.started


def test_a_job_already_late_on_arrival_is_answered_at_once(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100)
        jobs.wait_started("blocker")
        late = runner.submit(jobs.job("late"), deadline=clock.now)  # deadline_ms=0
        assert late.done()  # without waiting for the busy thread
        with pytest.raises(DeadlineExpired):
            late.result()
        assert runner.queue_position(late) is None
        jobs.gates["blocker"].set()
    finally:
        runner.shutdown()


def test_abandoning_a_slow_job_lets_a_fresh_thread_serve_the_queue(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        slow = runner.submit(jobs.job("slow", gated=True), deadline=clock.now + 1)
        jobs.wait_started("slow")
        behind = runner.submit(jobs.job("behind"), deadline=clock.now + 50)
        assert runner.queue_position(behind) == 0  # waits for the one thread
        clock.now += 2  # `slow` is past its deadline; the server has answered it
        assert runner.abandon(slow)
        assert result(behind) == "behind"  # while `slow` still runs
        assert not slow.done()
        assert not runner.abandon(slow)  # already abandoned
        assert runner.threads == 2
        jobs.gates["slow"].set()
        assert result(slow) == "slow"  # finishes on the side (the server drops it)
        _wait_for(lambda: runner.threads == 1)  # ...and its thread ends there
        after = runner.submit(jobs.job("after"), deadline=clock.now + 50)
        assert result(after) == "after"
    finally:
        runner.shutdown()


def test_at_most_as_many_abandoned_threads_as_workers(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        first = runner.submit(jobs.job("first", gated=True), deadline=clock.now + 1)
        jobs.wait_started("first")
        assert runner.abandon(first)
        second = runner.submit(jobs.job("second", gated=True), deadline=clock.now + 1)
        jobs.wait_started("second")
        assert not runner.abandon(second)  # one abandoned thread already: this one keeps its place
        third = runner.submit(jobs.job("third"), deadline=clock.now + 50)
        assert runner.queue_position(third) == 0
        jobs.gates["first"].set()
        result(first)
        _wait_for(lambda: runner.threads == 1)
        assert runner.abandon(second)  # the first one is back: room again
        assert result(third) == "third"
        jobs.gates["second"].set()
    finally:
        runner.shutdown()


def test_queue_position_counts_free_threads(clock: FakeClock) -> None:
    runner = DeadlineRunner(2, clock=clock)
    jobs = Jobs()
    try:
        one = runner.submit(jobs.job("one", gated=True), deadline=clock.now + 10)
        jobs.wait_started("one")
        two = runner.submit(jobs.job("two", gated=True), deadline=clock.now + 10)
        jobs.wait_started("two")
        three = runner.submit(jobs.job("three"), deadline=clock.now + 10)
        assert runner.queue_position(three) == 0
        assert runner.queue_position(one) is None  # running
        jobs.gates["one"].set()
        assert result(three) == "three"
        jobs.gates["two"].set()
        result(two)
    finally:
        runner.shutdown()


def test_cancelled_jobs_never_run_and_do_not_count(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100)
        jobs.wait_started("blocker")
        cancelled = runner.submit(jobs.job("cancelled"), deadline=clock.now + 1)
        waiting = runner.submit(jobs.job("waiting"), deadline=clock.now + 2)
        assert cancelled.cancel()
        assert runner.queue_position(waiting) == 0
        jobs.gates["blocker"].set()
        assert result(waiting) == "waiting"
    finally:
        runner.shutdown()
    assert "cancelled" not in jobs.started


def test_exceptions_reach_the_future_and_shutdown_cancels_the_queue(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()

    def boom() -> str:
        raise RuntimeError("model crashed")

    failing = runner.submit(boom, deadline=clock.now + 10)
    with pytest.raises(RuntimeError, match="model crashed"):
        failing.result(timeout=10)
    runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100)
    jobs.wait_started("blocker")
    queued = runner.submit(jobs.job("queued"), deadline=clock.now + 10)
    runner.shutdown()
    assert queued.cancelled()
    assert runner.submit(jobs.job("after"), deadline=clock.now + 10).cancelled()
    jobs.gates["blocker"].set()


def _wait_for(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    end = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < end, "condition never held"
        time.sleep(0.01)


def test_one_stream_cannot_starve_another_with_more_urgent_work(clock: FakeClock) -> None:
    """Stream a fills the queue with work more urgent than b's: pure deadline order would run all of a first (and
    b's dubs would all miss). Served fairly, b runs after at most FAIR_LEAD jobs of a, and so on alternately;
    queue_position predicts that order."""
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        blocker = runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100)
        jobs.wait_started("blocker")
        futures = {f"a{i}": runner.submit(jobs.job(f"a{i}"), deadline=clock.now + i, key="a") for i in range(1, 7)}
        futures |= {
            f"b{i}": runner.submit(jobs.job(f"b{i}"), deadline=clock.now + 50 + i, key="b") for i in range(1, 4)
        }
        positions = {name: runner.queue_position(f) for name, f in futures.items()}
        assert runner.queued("a") == 6 and runner.queued("b") == 3
        jobs.gates["blocker"].set()
        for future in (blocker, *futures.values()):
            result(future)
    finally:
        runner.shutdown()
    assert jobs.started == ["blocker", "a1", "a2", "b1", "a3", "b2", "a4", "b3", "a5", "a6"]
    assert sorted(positions, key=lambda name: positions[name]) == jobs.started[1:]


def test_an_idle_stream_banks_no_credit(clock: FakeClock) -> None:
    """A stream that was served alone for a while competes as an equal once another stream arrives (and the
    newcomer does not get a burst for the time it was absent either)."""
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        for i in range(3):  # a alone: served three times
            result(runner.submit(jobs.job(f"solo{i}"), deadline=clock.now + 10, key="a"))
        blocker = runner.submit(jobs.job("blocker", gated=True), deadline=clock.now + 100, key="c")
        jobs.wait_started("blocker")
        later = [runner.submit(jobs.job(f"b{i}"), deadline=clock.now + 1 + i, key="b") for i in range(4)]
        later += [runner.submit(jobs.job(f"a{i}"), deadline=clock.now + 1 + i, key="a") for i in range(4)]
        jobs.gates["blocker"].set()
        for future in (blocker, *later):
            result(future)
    finally:
        runner.shutdown()
    assert jobs.started[4:] == ["b0", "a0", "b1", "a1", "b2", "a2", "b3", "a3"]


def test_on_start_is_called_before_the_job_and_never_for_an_expired_one(clock: FakeClock) -> None:
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    calls: list[str] = []
    try:
        blocker = runner.submit(
            jobs.job("blocker", gated=True), deadline=clock.now + 100, on_start=lambda: calls.append("blocker")
        )
        jobs.wait_started("blocker")
        expiring = runner.submit(
            jobs.job("late"), deadline=clock.now + 1, key="x", on_start=lambda: calls.append("late")
        )
        clock.now += 2  # its deadline passes while it waits
        jobs.gates["blocker"].set()
        result(blocker)
        with pytest.raises(DeadlineExpired):
            expiring.result(timeout=10)
        broken = runner.submit(jobs.job("runs"), deadline=clock.now + 10, on_start=lambda: 1 / 0)
        assert result(broken) == "runs"  # a failing notification does not fail the job
    finally:
        runner.shutdown()
    assert calls == ["blocker"] and "late" not in jobs.started


def test_a_job_that_could_no_longer_finish_in_time_expires_unrun(clock: FakeClock) -> None:
    # While a's job runs, b's job passes the moment it had to start by (it needs 3 s before its deadline): it
    # expires in the queue instead of taking the thread for nothing; b's fresh job still runs.
    runner = DeadlineRunner(1, clock=clock)
    jobs = Jobs()
    try:
        runner.submit(jobs.job("a1", gated=True), deadline=clock.now + 100, key="a")
        jobs.wait_started("a1")
        stale = runner.submit(jobs.job("b1"), deadline=clock.now + 5, start_by=clock.now + 2, key="b")
        fresh = runner.submit(jobs.job("b2"), deadline=clock.now + 30, start_by=clock.now + 27, key="b")
        clock.now += 3  # a1 ran past b1's start-by, not past its deadline
        jobs.gates["a1"].set()
        with pytest.raises(DeadlineExpired):
            stale.result(timeout=10)
        assert result(fresh) == "b2"
        late = runner.submit(jobs.job("b3"), deadline=clock.now + 5, start_by=clock.now - 1, key="b")
        with pytest.raises(DeadlineExpired):  # could not even start on arrival: answered at once
            late.result(timeout=10)
    finally:
        runner.shutdown()
    assert jobs.started == ["a1", "b2"]


def test_slack_is_how_long_the_waiting_jobs_could_still_wait() -> None:
    clock = [100.0]
    runner = DeadlineRunner(1, clock=lambda: clock[0])
    gate = threading.Event()
    try:
        runner.submit(gate.wait, deadline=200.0, start_by=190.0)  # takes the only thread
        _wait_until(lambda: runner.queued(None) == 0)
        assert runner.slack_s() == float("inf")  # nothing waits
        runner.submit(lambda: None, deadline=110.0, start_by=106.0)  # needs 4 s, must start within 6 s
        runner.submit(lambda: None, deadline=112.0, start_by=109.0)  # starts after the first's 4 s: 9 - 4 = 5 s
        assert runner.slack_s() == pytest.approx(5.0)
        clock[0] = 104.0
        assert runner.slack_s() == pytest.approx(1.0)
    finally:
        gate.set()
        runner.shutdown()


def _wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)
