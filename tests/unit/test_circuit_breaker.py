"""CircuitBreaker: closed -> open after N consecutive failures -> half-open after cooldown -> closed on success."""

from __future__ import annotations

import pytest

from livedub.media.circuit_breaker import BreakerState, CircuitBreaker

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, cooldown_s: float = 10.0) -> tuple[CircuitBreaker, FakeClock, list[BreakerState]]:
    clock = FakeClock()
    changes: list[BreakerState] = []
    return CircuitBreaker(threshold, cooldown_s, clock=clock, on_change=changes.append), clock, changes


def test_opens_only_after_threshold_consecutive_failures() -> None:
    breaker, _, changes = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow_request()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow_request()
    assert changes == [BreakerState.OPEN]


def test_success_resets_the_failure_count() -> None:
    breaker, _, _ = make(threshold=2)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 1


def test_half_open_after_cooldown_lets_exactly_one_trial_through() -> None:
    breaker, clock, _ = make(threshold=1, cooldown_s=10.0)
    breaker.record_failure()
    clock.now += 9.9
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow_request()
    clock.now += 0.2
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow_request()
    assert not breaker.allow_request()  # the trial is still running


def test_successful_trial_closes() -> None:
    breaker, clock, changes = make(threshold=1, cooldown_s=1.0)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow_request()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow_request()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_trial_reopens_for_a_full_cooldown() -> None:
    breaker, clock, _ = make(threshold=5, cooldown_s=2.0)
    for _ in range(5):
        breaker.record_failure()
    clock.now += 2.0
    assert breaker.allow_request()
    breaker.record_failure()  # one failure in half-open is enough
    assert breaker.state is BreakerState.OPEN
    clock.now += 1.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN


def test_threshold_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1.0)


def test_reading_the_state_changes_nothing() -> None:
    breaker, clock, changes = make(threshold=1, cooldown_s=1.0)
    breaker.record_failure()
    clock.now += 5
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.state is BreakerState.HALF_OPEN
    assert changes == [BreakerState.OPEN]  # the transition is reported when the breaker is used, not when read
    breaker.record_failure()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN]
