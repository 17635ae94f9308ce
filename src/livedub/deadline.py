"""A phrase's deadline: the one value that travels from the muxer to the engine.

The muxer knows the last moment a phrase's dub can still start (`PacedMuxer.deadline`); everything downstream works
to that instant, each side on its own monotonic clock:

    media-service: muxer.deadline(segment) ─(− PLACE_MARGIN_S)→ AudioSegment.deadline → STS client
    wire:          fragment:data deadline_ms = what is left of it (− ANSWER_MARGIN_S), counted from its receipt
    STS:           Deadline.from_wire(deadline_ms, arrival) → scheduler (earliest first) → engine (tiers, stages)

The two margins are named here and nowhere else. Lateness itself is decided once, by the dub track's rule
(`DubTrack.latest_start`), which both the muxer's deadline and its last-moment fallback come from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

# Media-service: the time it takes to place a dub once it is back (decode, trim, onto the dub track).
PLACE_MARGIN_S = 0.05
# Wire: the STS answers this much before the client stops waiting, so that its answer (a TIMEOUT included) is back in
# time and a missing answer is the STS's fault, not a race with the network.
ANSWER_MARGIN_S = 0.1


class DeadlineExceeded(Exception):
    """The dub cannot be back in time; the fragment is answered with TIMEOUT instead of finishing the work."""

    def __init__(self, stage: str, remaining_s: float, needed_s: float) -> None:
        super().__init__(f"before {stage}: {remaining_s * 1000:.0f} ms left, about {needed_s * 1000:.0f} ms needed")
        self.stage = stage


def _no_backlog() -> float:
    return float("inf")


@dataclass(frozen=True)
class Deadline:
    """An instant on `clock` (monotonic seconds); `None` for `at` means no deadline.

    `backlog` says how much longer the work queued behind this one (the stream's next phrases, other streams')
    could still wait and start in time: an upgrade of this phrase (a better translator, a natural voice) is worth
    its extra cost only if the phrases behind it can afford the wait (`affords`)."""

    at: float | None
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    backlog: Callable[[], float] = field(default=_no_backlog, compare=False)

    @classmethod
    def after(cls, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(None if seconds is None else clock() + seconds, clock)

    @classmethod
    def from_wire(
        cls, deadline_ms: int | float, received_at: float, clock: Callable[[], float] = time.monotonic
    ) -> Deadline:
        """The deadline of a fragment received at `received_at` (on `clock`) with `deadline_ms` left."""
        return cls(received_at + deadline_ms / 1000.0, clock)

    @property
    def is_set(self) -> bool:
        return self.at is not None

    def to_wire(self) -> int | None:
        """What is left of it in whole milliseconds (≥ 0), as `deadline_ms` carries it; None without a deadline."""
        # Floored (never later than the deadline), up to float noise (1.9 s is 1900 ms, not 1899).
        return None if self.at is None else max(0, math.floor(self.remaining() * 1000 + 1e-6))

    def remaining(self) -> float:
        return float("inf") if self.at is None else self.at - self.clock()

    def later(self, seconds: float) -> Deadline:
        """The same deadline `seconds` later (a later piece of a dub is due when the pieces before it have played)."""
        return self if self.at is None else replace(self, at=self.at + seconds)

    def earlier(self, seconds: float) -> Deadline:
        """The same deadline `seconds` sooner (a margin for the work that follows it)."""
        return self.later(-seconds)

    def or_after(self, seconds: float) -> Deadline:
        """This deadline, or `seconds` from now when there is none (the seed's fixed timeout)."""
        return self if self.at is not None else Deadline.after(seconds, self.clock)

    def with_backlog(self, backlog: Callable[[], float]) -> Deadline:
        return replace(self, backlog=backlog)

    def affords(self, needed_s: float, extra_s: float = 0.0) -> bool:
        """Whether work that needs `needed_s` from now is on time, when `extra_s` of it is an upgrade over the
        cheapest way that delays the work queued behind."""
        return self.remaining() > needed_s and extra_s <= self.backlog()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self, stage: str, needed_s: float = 0.0) -> None:
        """Raise DeadlineExceeded when less than `needed_s` (the expected cost of the rest) is left."""
        remaining = self.remaining()
        if remaining <= needed_s:
            raise DeadlineExceeded(stage, remaining, needed_s)


NO_DEADLINE = Deadline(None)
