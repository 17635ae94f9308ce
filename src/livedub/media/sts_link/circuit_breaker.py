"""A circuit breaker for the STS connection: stop waiting on a service that keeps failing.

closed --(threshold consecutive failures)--> open --(cooldown)--> half-open --(trial succeeds)--> closed
                                               ^------------------(trial fails)------------------'

Requests dropped as too late are neither (`record_dropped`): they neither count toward opening nor reset the count.
A new STS session (`new_session`, after a reconnect) is judged afresh: failures of the lost connection are not held
against it, and an open breaker lets its first request through as the trial at once instead of after the cooldown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    """Values match the `circuit_breaker_state` gauge: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Counts consecutive failures; while open, `allow_request()` says no until the cooldown has passed.

    In half-open state exactly one trial request is let through at a time; its outcome decides the next state.
    `on_change(state)` is called on every transition (e.g. to update a metric).
    """

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be >= 1")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        """The state now, without side effects: an open breaker whose cooldown has passed reads as half-open."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def allow_request(self) -> bool:
        """True if a request may go to the service now. In half-open state this claims the single trial."""
        state = self._refresh()
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def record_success(self) -> None:
        self._refresh()
        self._failures = 0
        self._trial_running = False
        if self._state is not BreakerState.CLOSED:
            self._move_to(BreakerState.CLOSED)

    def record_dropped(self) -> None:
        """A request dropped as too late (not a fault): the failure count is kept as is, a half-open trial is
        released undecided (the next request is a new trial)."""
        self._refresh()
        self._trial_running = False

    def new_session(self) -> None:
        """A fresh connection to the service: the failure count restarts; open becomes half-open (trial now)."""
        self._refresh()
        self._failures = 0
        self._trial_running = False
        if self._state is BreakerState.OPEN:
            self._move_to(BreakerState.HALF_OPEN)

    def record_failure(self) -> None:
        self._refresh()
        self._failures += 1
        self._trial_running = False
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self.threshold
        ):
            self._opened_at = self._clock()
            self._move_to(BreakerState.OPEN)

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self.cooldown_s

    def _refresh(self) -> BreakerState:
        """Make the cooldown's open -> half-open transition happen (and be reported) before acting on the state."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            self._move_to(BreakerState.HALF_OPEN)
        return self._state

    def _move_to(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)
