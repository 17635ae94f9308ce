"""CircuitBreaker: closed -> open after N consecutive failures -> half-open after cooldown -> closed on success.

And what counts as a failure: STS faults do, work dropped as too late does not (sts_faults)."""

from __future__ import annotations

import pytest

from livedub.media.sts_link.circuit_breaker import BreakerState, CircuitBreaker
from livedub.media.sts_link.sts_faults import StsVerdict, code_verdict, processed_verdict
from livedub.protocol import ErrorCode, FragmentError, FragmentProcessed

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


def test_dropped_late_work_neither_opens_nor_resets() -> None:
    breaker, _, changes = make(threshold=2)
    breaker.record_failure()
    for _ in range(10):  # a burst of late drops under load: not STS faults
        breaker.record_dropped()
    assert breaker.state is BreakerState.CLOSED and breaker.consecutive_failures == 1
    breaker.record_failure()  # the next real fault still counts as the second in a row
    assert breaker.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]


def test_a_dropped_half_open_trial_frees_the_trial_undecided() -> None:
    breaker, clock, _ = make(threshold=1, cooldown_s=1.0)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow_request()
    breaker.record_dropped()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow_request()  # a new trial
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def _processed(status: str, code: ErrorCode | None = None, stage: str = "asr") -> FragmentProcessed:
    error = None if code is None else FragmentError(stage=stage, code=code, message="m")  # type: ignore[arg-type]
    return FragmentProcessed(fragment_id="f", stream_id="s", sequence_number=0, status=status, error=error)


@pytest.mark.parametrize(
    ("processed", "verdict"),
    [
        (_processed("success"), StsVerdict.HEALTHY),
        (_processed("partial"), StsVerdict.HEALTHY),
        (_processed("failed", ErrorCode.TIMEOUT, "timeout"), StsVerdict.LATE),
        (_processed("failed", ErrorCode.INTERNAL_ERROR, "pipeline"), StsVerdict.FAULT),
        (_processed("failed", ErrorCode.ASR_FAILED, "asr"), StsVerdict.FAULT),
        (_processed("failed", ErrorCode.TRANSLATION_FAILED, "translation"), StsVerdict.FAULT),
        (_processed("failed", ErrorCode.TTS_SYNTHESIS_FAILED, "tts"), StsVerdict.FAULT),
        (_processed("failed", ErrorCode.TTS_SYNTHESIS_FAILED, "fit"), StsVerdict.HEALTHY),  # dub too long: content
        (_processed("failed", ErrorCode.INVALID_AUDIO_FORMAT, "decode"), StsVerdict.HEALTHY),  # our input
        (_processed("failed"), StsVerdict.FAULT),  # failed without a reason
    ],
)
def test_sts_answers_are_judged_by_what_they_say_about_the_sts(
    processed: FragmentProcessed, verdict: StsVerdict
) -> None:
    assert processed_verdict(processed) is verdict


def test_refusals_are_judged_by_their_code() -> None:
    assert code_verdict(ErrorCode.BACKPRESSURE_EXCEEDED) is StsVerdict.LATE  # load shedding
    assert code_verdict(ErrorCode.TIMEOUT) is StsVerdict.LATE
    assert code_verdict(ErrorCode.INTERNAL_ERROR) is StsVerdict.FAULT
    assert code_verdict(ErrorCode.INVALID_EVENT) is StsVerdict.HEALTHY


def test_a_new_session_clears_the_failures_of_the_lost_one() -> None:
    breaker, _, changes = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.new_session()
    assert breaker.consecutive_failures == 0
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    assert changes == []


def test_a_new_session_lets_an_open_breaker_try_at_once() -> None:
    breaker, clock, changes = make(threshold=1, cooldown_s=10.0)
    breaker.record_failure()
    clock.now += 1.0  # well inside the cooldown
    breaker.new_session()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow_request()
    assert not breaker.allow_request()  # still one trial at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
