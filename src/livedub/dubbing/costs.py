"""What each stage is expected to cost, learnt as it runs: deadline checks compare it with the time left.

Costs are seconds per second of speech. The audio stages' (ASR, fit) follow the phrase's length; the text stages'
follow its words: a short phrase may say a long sentence ("Please try again" in 1 s is "Por favor, inténtelo de
nuevo", 3 s of Kokoro). Once the transcript is known, translation counts its characters at a usual speaking rate;
speech counts the dub's own length once its voice has predicted it (a slow voice costs more), its transcript's before.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from livedub.dubbing.values import Stage

# Seconds per second of audio before anything was measured (the default path on 2 cores). Warm-up replaces them.
PRIORS = {
    Stage.ASR: 0.1,
    Stage.TRANSLATION: 0.15,
    Stage.FAST_TRANSLATION: 0.03,
    Stage.TTS: 0.15,
    Stage.FAST_TTS: 0.01,
    Stage.FIT: 0.02,
}
# Work is dropped only when even a run this much faster than the average could not be on time: the averages include
# cold first runs and busy moments, and a wrong drop costs a phrase (measured: with the plain average, a 2-core run
# whose warm-up ran beside other work dropped every phrase and, dropping, never learnt better).
OPTIMISM = 0.5
RELAX = 0.85  # per drop on the estimate alone (not on an expired deadline)
# A pessimistic estimate is the average plus this many times the average overrun (how much slower than the average
# the runs that were slower came out). On a quiet machine runs vary by ~10 %, on a busy one a Kokoro synthesis took up
# to twice its average (2-core VM, one core loaded by stress-ng). At 2.0 a single slow run after warm-up sent 10 of
# 15 phrases of a quiet run to the fast voice (its overrun decays only as the usual voice runs again).
OVERRUN_WEIGHT = 1.0
TEXT_STAGES = frozenset({Stage.TRANSLATION, Stage.FAST_TRANSLATION, Stage.TTS, Stage.FAST_TTS})
SPEECH_STAGES = frozenset({Stage.TTS, Stage.FAST_TTS})
CHARS_PER_SPEECH_S = 15.0  # characters (spaces included) of usual speech per second: English and Spanish prompts 14-18


@dataclass(frozen=True)
class Work:
    """How much there is to do on a phrase: its audio, and its transcript's length once heard."""

    audio_s: float
    chars: int | None = None
    dub_s: float | None = None  # the dub's length (predicted by its voice's pace, or measured)

    def units(self, stage: str) -> float:
        """Seconds of speech, as `stage` counts them."""
        if stage in SPEECH_STAGES and self.dub_s is not None:
            return self.dub_s
        if stage in TEXT_STAGES and self.chars is not None:
            return self.chars / CHARS_PER_SPEECH_S
        return self.audio_s


def _work(work: Work | float) -> Work:
    return work if isinstance(work, Work) else Work(float(work))


class StageCosts:
    """Per stage, exponentially weighted moving averages of compute seconds per second of speech and of the
    relative overrun of the runs slower than that average."""

    def __init__(self, alpha: float = 0.3, priors: dict[str, float] | None = None) -> None:
        self.alpha = alpha
        self._rate = dict(PRIORS if priors is None else priors)
        self._overrun: dict[str, float] = {}
        self._measured: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, stage: str, seconds: float, work: Work | float) -> None:
        units = _work(work).units(stage)
        if units <= 0:
            return
        rate = seconds / units
        with self._lock:
            if stage in self._measured:
                average = self._rate[stage]
                over = max(0.0, rate / average - 1.0) if average > 0 else 0.0
                self._overrun[stage] = self.alpha * over + (1 - self.alpha) * self._overrun.get(stage, 0.0)
                rate = self.alpha * rate + (1 - self.alpha) * average
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

    def expected(self, stages: Iterable[str], work: Work | float) -> float:
        """Seconds that `stages` take on average on `work` (a Work, or seconds of audio)."""
        return self._total(stages, work, overrun_weight=0.0)

    def likely_max(self, stages: Iterable[str], work: Work | float) -> float:
        """Seconds that `stages` take on `work` in all but the slowest runs (see OVERRUN_WEIGHT)."""
        return self._total(stages, work, overrun_weight=OVERRUN_WEIGHT)

    def _total(self, stages: Iterable[str], work: Work | float, overrun_weight: float) -> float:
        work = _work(work)
        return sum(
            self.rate(stage) * (1 + overrun_weight * self._overrun.get(stage, 0.0)) * work.units(stage)
            for stage in stages
        )

    def needed(self, stages: Iterable[str], work: Work | float) -> float:
        """Seconds that `stages` need at least on `work` (an optimistic estimate)."""
        return OPTIMISM * self.expected(stages, work)

    def snapshot(self) -> dict[str, float]:
        return {stage: round(rate, 4) for stage, rate in self._rate.items()}
