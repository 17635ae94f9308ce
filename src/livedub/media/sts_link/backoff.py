"""Pacing helpers for the STS client: reconnect back-off and send throttling under STS backpressure."""

from __future__ import annotations

import random

from livedub.protocol import Backpressure, BackpressureAction


class ExponentialBackoff:
    """Delays initial, 2x, 4x, ... capped at `max_s`, each with +/- `jitter` (fraction) so workers spread out."""

    def __init__(self, initial_s: float = 0.5, max_s: float = 10.0, factor: float = 2.0, jitter: float = 0.2) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._attempt = 0

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return max(0.0, base * (1 + self.jitter * (2 * random.random() - 1)))

    def reset(self) -> None:
        self._attempt = 0


class SendThrottle:
    """Turns STS `backpressure` events into a wait before each send.

    `slow_down` spaces sends by the recommended delay; `pause` holds all sends for the recommended delay (or
    `default_pause_s`) unless a later event lifts it; `none` clears both. Times come from the caller's clock.
    """

    def __init__(self, default_delay_s: float = 0.25, default_pause_s: float = 1.0) -> None:
        self.default_delay_s = default_delay_s
        self.default_pause_s = default_pause_s
        self._interval_s = 0.0
        self._paused_until = 0.0
        self._next_slot = 0.0

    def apply(self, event: Backpressure, now: float) -> None:
        recommended = event.recommended_delay_ms / 1000 if event.recommended_delay_ms else None
        if event.action is BackpressureAction.NONE:
            self.reset()
        elif event.action is BackpressureAction.SLOW_DOWN:
            self._interval_s = recommended or self.default_delay_s
            self._paused_until = 0.0
        else:
            self._paused_until = now + (recommended or self.default_pause_s)

    def reserve(self, now: float) -> float:
        """Book the next send slot; returns how long to wait (s) before sending."""
        start = max(now, self._paused_until, self._next_slot)
        self._next_slot = start + self._interval_s
        return start - now

    def reset(self) -> None:
        self._interval_s = 0.0
        self._paused_until = 0.0
        self._next_slot = 0.0
