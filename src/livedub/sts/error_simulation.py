"""Failure rehearsal for the echo pipeline: `config:error_simulation` rules (the seed echo service's test hook).

Rules are kept per stream. Each fragment the echo pipeline processes is counted for its stream (1-based, from the
time the rules were set) and checked against the rules in order; the first rule that matches decides what happens:
hold the fragment `delay_ms` (bounded by its deadline: past it, the server has answered TIMEOUT already) and then
fail it with `error_code`, or let it succeed. The dubbing pipeline never has a simulator, so rules never touch real
dubs.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.protocol import ErrorSimulation, ErrorSimulationRule, FragmentData

# A bit past the deadline, so that the server's TIMEOUT answer is out before the held fragment returns.
_PAST_DEADLINE_S = 0.05


@dataclass
class _StreamRules:
    config: ErrorSimulation
    fragments: int = 0
    applied: list[int] = field(default_factory=list)  # per rule: fragments it has chosen (for `count`)


class ErrorSimulator:
    """The rules in force, per stream; thread-safe (inference threads match, the event loop configures)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, _StreamRules] = {}
        self._rng = rng or random.Random()

    def configure(self, stream_id: str, config: ErrorSimulation) -> int:
        """Replace the rules of `stream_id`; return how many are in force (0 when disabled)."""
        with self._lock:
            if not config.enabled or not config.rules:
                self._streams.pop(stream_id, None)
                return 0
            self._streams[stream_id] = _StreamRules(config, applied=[0] * len(config.rules))
            return len(config.rules)

    def match(self, fragment: FragmentData) -> ErrorSimulationRule | None:
        """Count the fragment for its stream and return the first rule that chooses it, if any."""
        with self._lock:
            state = self._streams.get(fragment.stream_id)
            if state is None:
                return None
            state.fragments += 1
            for index, rule in enumerate(state.config.rules):
                if rule.count is not None and state.applied[index] >= rule.count:
                    continue
                if _chooses(rule, fragment, state.fragments) and self._rng.random() < _probability(rule):
                    state.applied[index] += 1
                    return rule
            return None

    @staticmethod
    def hold(rule: ErrorSimulationRule, deadline: Deadline = NO_DEADLINE) -> None:
        """Wait out the rule's delay, but not (much) past the fragment's deadline."""
        delay_s = min(rule.delay_ms / 1000.0, max(0.0, deadline.remaining() + _PAST_DEADLINE_S))
        if delay_s > 0:
            time.sleep(delay_s)


def _chooses(rule: ErrorSimulationRule, fragment: FragmentData, count: int) -> bool:
    if rule.trigger is None:
        return True
    if rule.trigger == "sequence_number":
        return fragment.sequence_number == rule.value
    if rule.trigger == "fragment_id":
        return fragment.fragment_id == rule.value
    assert isinstance(rule.value, int)
    return count % rule.value == 0  # nth_fragment: every Nth fragment of the stream


def _probability(rule: ErrorSimulationRule) -> float:
    """The seed's e2e tests send `probability`; it is kept as an extra field of the rule (default 1)."""
    extra = rule.model_extra or {}
    value = extra.get("probability", 1.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1.0
