"""The time by which a fragment's dub is still useful, checked before each pipeline stage."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


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

    def remaining(self) -> float:
        return float("inf") if self.at is None else self.at - self.clock()

    def later(self, seconds: float) -> Deadline:
        """The same deadline `seconds` later (a later piece of a dub is due when the pieces before it have played)."""
        return self if self.at is None else Deadline(self.at + seconds, self.clock, self.backlog)

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
