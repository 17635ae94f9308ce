"""Reconnect back-off and the send throttle driven by STS backpressure events."""

from __future__ import annotations

import pytest

from livedub.media.sts_link.backoff import ExponentialBackoff, SendThrottle
from livedub.protocol import Backpressure, BackpressureAction, BackpressureSeverity

pytestmark = pytest.mark.unit


def backpressure(action: BackpressureAction, delay_ms: int | None = None) -> Backpressure:
    return Backpressure(
        stream_id="s",
        severity=BackpressureSeverity.MEDIUM,
        action=action,
        current_inflight=3,
        max_inflight=3,
        recommended_delay_ms=delay_ms,
    )


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = ExponentialBackoff(initial_s=0.5, max_s=3.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_stays_within_bounds() -> None:
    backoff = ExponentialBackoff(initial_s=1.0, max_s=1.0, jitter=0.2)
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len(set(delays)) > 1


def test_no_backpressure_means_no_wait() -> None:
    throttle = SendThrottle()
    assert throttle.reserve(10.0) == 0.0
    assert throttle.reserve(10.0) == 0.0


def test_slow_down_spaces_sends_by_the_recommended_delay() -> None:
    throttle = SendThrottle()
    throttle.apply(backpressure(BackpressureAction.SLOW_DOWN, 500), now=10.0)
    assert throttle.reserve(10.0) == 0.0
    assert throttle.reserve(10.0) == pytest.approx(0.5)
    assert throttle.reserve(10.1) == pytest.approx(0.9)


def test_pause_holds_sends_until_it_expires_or_is_lifted() -> None:
    throttle = SendThrottle()
    throttle.apply(backpressure(BackpressureAction.PAUSE, 2000), now=10.0)
    assert throttle.reserve(10.5) == pytest.approx(1.5)
    throttle.apply(backpressure(BackpressureAction.NONE), now=10.6)
    assert throttle.reserve(10.6) == 0.0


def test_pause_without_a_recommendation_uses_the_default() -> None:
    throttle = SendThrottle(default_pause_s=1.0)
    throttle.apply(backpressure(BackpressureAction.PAUSE), now=0.0)
    assert throttle.reserve(0.0) == pytest.approx(1.0)
