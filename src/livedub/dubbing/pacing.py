"""The speaking rate asked of a synthesiser, chosen from the text before synthesis (one synthesis per phrase).

A voice's pace is learnt as characters per second at its natural rate, updated after every synthesis, so the
length of a dub can be predicted from its text. The synthesiser then speaks at the rate that brings the dub close
to the speech it replaces: natural prosody and less audio to compute, instead of a large time-stretch afterwards.
"""

from __future__ import annotations

import threading

from livedub.dubbing.values import Slot

MIN_TTS_SPEED = 0.75  # slowest rate asked of a synthesiser (the time-stretch may slow it further)
MAX_TTS_SPEED = 1.25  # fastest rate asked (the time-stretch may speed it up further)
DEFAULT_CHARS_PER_S = 14.0  # a typical speaking pace before a voice was heard


class SpeakingPace:
    """Characters per second of one voice at speed 1 (EWMA over its syntheses)."""

    def __init__(self, chars_per_s: float = DEFAULT_CHARS_PER_S, alpha: float = 0.3) -> None:
        self.chars_per_s = chars_per_s
        self.alpha = alpha
        self._heard = False
        self._lock = threading.Lock()

    def predict_s(self, text: str, speed: float = 1.0) -> float:
        return len(text.strip()) / self.chars_per_s / speed

    def observe(self, text: str, seconds: float, speed: float) -> None:
        chars = len(text.strip())
        if chars == 0 or seconds <= 0:
            return
        pace = chars / (seconds * speed)  # at speed 1 it would have taken seconds * speed
        with self._lock:
            self.chars_per_s = pace if not self._heard else self.alpha * pace + (1 - self.alpha) * self.chars_per_s
            self._heard = True


def choose_speed(natural_s: float, slot: Slot) -> float:
    """The rate that makes speech of `natural_s` (at speed 1) last the speech span, within the synthesiser's range
    (the time-stretch of the fit does the rest)."""
    if natural_s <= 0 or slot.span_s <= 0:
        return 1.0
    return round(min(MAX_TTS_SPEED, max(MIN_TTS_SPEED, natural_s / slot.span_s)), 3)
