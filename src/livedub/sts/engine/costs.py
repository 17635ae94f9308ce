"""What each stage is expected to cost, learnt as it runs: deadline checks compare it with the time left."""

from __future__ import annotations

import threading
from collections.abc import Iterable

# Seconds per second of audio before anything was measured (the default path on 2 cores). Warm-up replaces them.
PRIORS = {"asr": 0.1, "translation": 0.15, "translation_fast": 0.03, "tts": 0.15, "fit": 0.02}
# Work is dropped only when even a run this much faster than the average could not be on time: the averages include
# cold first runs and busy moments, and a wrong drop costs a phrase (measured: with the plain average, a 2-core run
# whose warm-up ran beside other work dropped every phrase and, dropping, never learnt better).
OPTIMISM = 0.5
RELAX = 0.85  # per drop on the estimate alone (not on an expired deadline)


class StageCosts:
    """Per stage, an exponentially weighted moving average of compute seconds per second of audio."""

    def __init__(self, alpha: float = 0.3, priors: dict[str, float] | None = None) -> None:
        self.alpha = alpha
        self._rate = dict(PRIORS if priors is None else priors)
        self._measured: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, stage: str, seconds: float, audio_s: float) -> None:
        if audio_s <= 0:
            return
        rate = seconds / audio_s
        with self._lock:
            if stage in self._measured:
                rate = self.alpha * rate + (1 - self.alpha) * self._rate[stage]
            self._rate[stage] = rate  # the first measurement replaces the prior
            self._measured.add(stage)

    def relax(self, stages: Iterable[str], factor: float = RELAX) -> None:
        """Work on `stages` was dropped on the estimate alone: lower it a little. Dropped work measures nothing, so
        without this one pessimistic estimate (a cold start, a busy minute) would drop every phrase from then on."""
        with self._lock:
            for stage in stages:
                if stage in self._rate:
                    self._rate[stage] *= factor

    def rate(self, stage: str) -> float:
        return self._rate.get(stage, 0.0)

    def expected(self, stages: Iterable[str], audio_s: float) -> float:
        """Seconds that `stages` take on average on `audio_s` seconds of audio."""
        return sum(self.rate(stage) for stage in stages) * audio_s

    def needed(self, stages: Iterable[str], audio_s: float) -> float:
        """Seconds that `stages` need at least on `audio_s` seconds of audio (an optimistic estimate)."""
        return OPTIMISM * self.expected(stages, audio_s)

    def snapshot(self) -> dict[str, float]:
        return {stage: round(rate, 4) for stage, rate in self._rate.items()}
