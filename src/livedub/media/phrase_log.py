"""Captions and the phrase log of one stream: what each phrase said, and what each language played in its place.

- Source captions: the phrase's transcript (ASR runs once per phrase) at its speech span on the output timeline
  (`speech_start_ms`/`speech_end_ms` from STS, else the whole phrase), once per phrase, from the first answer.
- Translation captions: each language's translated text at its dub's placed span (the dub track's clock), only where
  the dub plays.
- Phrase log: one line per phrase and language when the muxer decides it (`muxer.Decision`).

Every time is on the output timestamp clock (`OutputTimeline.audio_out_ms / 1000`), as the HLS presentation's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from livedub.media.muxer import Decision, OutputTimeline
from livedub.media.types import AudioSegment, DubOutcome

CueSink = Callable[[str, float, float, str], None]
"""(language, start_s, end_s, text): a subtitle cue for the HLS presentation."""

# Fallback reasons as the phrase log's status; anything else is "failed".
STATUS = {"late": "late", "timeout": "late", "dropped": "dropped", "no_speech": "original"}


class CueWriter(Protocol):
    """`captions.CueLog`."""

    def cue(self, *, sequence: int, language: str, kind: Any, start_s: float, end_s: float, text: str) -> None: ...

    def phrase(self, record: Any) -> None: ...

    def close(self) -> None: ...


def phrase_status(reason: str) -> str:
    return "dubbed" if reason == "dubbed" else STATUS.get(reason, "failed")


class PhraseRecorder:
    def __init__(
        self,
        timeline: OutputTimeline,
        source_language: str,
        log: CueWriter | None,
        cue_sink: CueSink | None = None,
    ) -> None:
        self.timeline = timeline
        self.source_language = source_language
        self.log = log
        self.cue_sink = cue_sink
        self._outcomes: dict[tuple[int, str], DubOutcome] = {}  # undecided phrases' answers
        self._source_done: set[int] = set()

    def _out_s(self, sample: int) -> float:
        return self.timeline.audio_out_ms(sample) / 1000

    def speech_span(self, segment: AudioSegment, outcome: DubOutcome | None) -> tuple[float, float]:
        """Output seconds of the phrase's speech: where STS heard it, else the whole phrase. It starts no earlier than
        the VAD's first speech: Whisper's first timestamp is coarse (0.0 for speech half a second in)."""
        start, end = segment.start_sample, segment.end_sample
        if outcome is not None and outcome.speech_start_ms is not None and outcome.speech_end_ms is not None:
            rate = segment.sample_rate
            heard_ms = max(outcome.speech_start_ms, segment.speech_start_ms or 0.0)
            first = segment.start_sample + round(heard_ms * rate / 1000)
            last = segment.start_sample + round(outcome.speech_end_ms * rate / 1000)
            if last > first >= start:
                start, end = first, last
        return self._out_s(start), self._out_s(end)

    def answered(self, segment: AudioSegment, outcome: DubOutcome, decided: bool) -> None:
        """A language's answer came for `segment` (before the muxer places it; `decided`: its time has passed)."""
        if segment.sequence_number not in self._source_done and (outcome.transcript or "").strip():
            self._source_done.add(segment.sequence_number)
            start_s, end_s = self.speech_span(segment, outcome)
            self._cue(segment.sequence_number, self.source_language, "source", start_s, end_s, outcome.transcript or "")
        if not decided and outcome.language is not None:
            self._outcomes[(segment.sequence_number, outcome.language)] = outcome

    def decided(self, decision: Decision) -> None:
        """The muxer decided what `decision.language` plays for the phrase."""
        segment = decision.segment
        outcome = self._outcomes.pop((segment.sequence_number, decision.language), None)
        placed = decision.placed
        if placed is not None:
            start_s, end_s = self._out_s(placed.start), self._out_s(placed.end)
            text = (outcome.translated_text or "") if outcome is not None else ""
            if text.strip():
                self._cue(segment.sequence_number, decision.language, "translation", start_s, end_s, text)
        else:
            start_s, end_s = self.speech_span(segment, outcome)
        if self.log is not None:
            self.log.phrase(self._record(decision, outcome, start_s, end_s))

    def _record(self, decision: Decision, outcome: DubOutcome | None, start_s: float, end_s: float) -> dict[str, Any]:
        stage_ms = dict(outcome.stage_ms) if outcome is not None else {}
        round_trip = outcome.round_trip_s if outcome is not None else None
        return {
            "sequence": decision.segment.sequence_number,
            "language": decision.language,
            "start_s": round(start_s, 3),
            "end_s": round(end_s, 3),
            "status": phrase_status(decision.reason),
            "reason": None if decision.reason == "dubbed" else decision.reason,
            "transcript": outcome.transcript if outcome is not None else None,
            "translation": outcome.translated_text if outcome is not None else None,
            "voice": outcome.voice if outcome is not None else None,
            "stage_ms": {k: stage_ms.get(k) for k in ("asr", "translation", "tts")},
            "round_trip_ms": round(1000 * round_trip) if round_trip is not None else None,
            "speed": round(decision.placed.speed, 3) if decision.placed is not None else None,
        }

    def _cue(self, sequence: int, language: str, kind: str, start_s: float, end_s: float, text: str) -> None:
        if self.cue_sink is not None:
            self.cue_sink(language, start_s, end_s, text)
        if self.log is not None:
            self.log.cue(sequence=sequence, language=language, kind=kind, start_s=start_s, end_s=end_s, text=text)

    def close(self) -> None:
        self._outcomes.clear()
        if self.log is not None:
            self.log.close()
