"""The one Deadline value: its margins, and its way over the wire from the media-service's clock to the STS's."""

from __future__ import annotations

import pytest

from livedub.deadline import ANSWER_MARGIN_S, NO_DEADLINE, Deadline, DeadlineExceeded

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_deadline_crosses_the_wire_as_what_is_left_of_it_and_lands_on_the_other_clock() -> None:
    media, sts = Clock(1000.0), Clock(7.0)  # two machines, two unrelated monotonic clocks
    useful = Deadline.after(2.0, media)
    wire_ms = useful.earlier(ANSWER_MARGIN_S).to_wire()
    assert wire_ms == 1900
    media.now += 0.5
    assert useful.earlier(ANSWER_MARGIN_S).to_wire() == 1400  # sent later: less left
    received = Deadline.from_wire(wire_ms, received_at=sts.now, clock=sts)
    assert received.at == pytest.approx(8.9) and received.remaining() == pytest.approx(1.9)
    media.now += 10
    assert useful.to_wire() == 0  # never negative on the wire
    assert NO_DEADLINE.to_wire() is None


def test_margins_move_the_instant_and_keep_the_clock_and_the_backlog() -> None:
    clock = Clock(0.0)
    deadline = Deadline(5.0, clock).with_backlog(lambda: 0.25)
    sooner = deadline.earlier(1.0)
    assert sooner.at == 4.0 and sooner.clock is clock and sooner.backlog() == 0.25
    assert deadline.later(1.0).at == 6.0
    assert NO_DEADLINE.earlier(1.0) is NO_DEADLINE and not NO_DEADLINE.is_set
    assert sooner.affords(3.9) and not sooner.affords(4.0) and not sooner.affords(1.0, extra_s=0.3)
    clock.now = 4.0
    assert sooner.expired() and not deadline.expired()
    with pytest.raises(DeadlineExceeded, match="before tts: 1000 ms left"):
        deadline.check("tts", needed_s=1.5)


def test_without_a_deadline_the_fixed_timeout_counts_from_now() -> None:
    clock = Clock(10.0)
    assert Deadline(None, clock).or_after(8.0).at == 18.0  # the seed's rule: STS_TIMEOUT_MS
    assert Deadline(12.0, clock).or_after(8.0).at == 12.0
