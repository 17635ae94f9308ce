"""Captions and the phrase log of one stream: what each phrase said, and what each language played in its place.

- Source captions: the phrase's transcript (ASR runs once per phrase) at its speech span on the output timeline
  (`speech_start_ms`/`speech_end_ms` from STS, else the whole phrase), once per phrase, from the first answer.
- Translation captions: each language's translated text at its dub's placed span (the dub track's clock), only where
  the dub plays.
- Phrase log: one line per phrase and language when the muxer decides it (`muxer.Decision`).
- A dub that comes in chunks: a translation caption per chunk (its clause) where it plays; the phrase is decided on
  its first chunk, before the answer with the phrase's metadata: its line (and tier shares) waits for that answer.

Every time is on the output timestamp clock (`OutputTimeline.audio_out_ms / 1000`), as the HLS presentation's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from livedub.media.pipeline.muxer import Decision, OutputTimeline
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


TierSink = Callable[[str, str, str, float], None]
"""(language, translator tier, voice tier, speech seconds): a dub played (for a metric)."""


class TierShares:
    """Per target language, how much of the dubbed speech each tier made: the main translator's words or the fast
    one's, the language's usual voice or its fast voice (STS metadata `translator`, `voice_tier`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[tuple[str, str], float]] = {}

    def add(self, language: str, translator: str, voice_tier: str, speech_s: float) -> None:
        by_tier = self.seconds.setdefault(language, {})
        by_tier[(translator, voice_tier)] = by_tier.get((translator, voice_tier), 0.0) + speech_s

    def shares(self, language: str) -> dict[str, float | None]:
        """`main_words`: share of the dubbed speech in the main translator's words; `usual_voice`: in a usual voice
        (None before any dub with tiers)."""
        by_tier = self.seconds.get(language, {})
        total = sum(by_tier.values())
        if not total:
            return {"main_words": None, "usual_voice": None}
        main = sum(s for (translator, _), s in by_tier.items() if translator == "main")
        usual = sum(s for (_, voice), s in by_tier.items() if voice == "usual")
        return {"main_words": round(main / total, 3), "usual_voice": round(usual / total, 3)}


@dataclass
class _Waiting:
    """A phrase decided before its answer came (its dub came in chunks): where its chunks play, so far."""

    decision: Decision
    start: int | None = None  # output samples of the dub's chunks (None: not placed)
    end: int | None = None
    chunks: int = 0


def phrase_status(reason: str) -> str:
    return "dubbed" if reason == "dubbed" else STATUS.get(reason, "failed")


class PhraseRecorder:
    def __init__(
        self,
        timeline: OutputTimeline,
        source_language: str,
        log: CueWriter | None,
        cue_sink: CueSink | None = None,
        tier_sink: TierSink | None = None,
    ) -> None:
        self.timeline = timeline
        self.source_language = source_language
        self.log = log
        self.cue_sink = cue_sink
        self.tier_sink = tier_sink
        self.tiers = TierShares()
        self._outcomes: dict[tuple[int, str], DubOutcome] = {}  # undecided phrases' answers
        self._source_done: set[int] = set()
        self._chunked: set[tuple[int, str]] = set()  # phrases (and language) whose dub comes in chunks
        self._waiting: dict[tuple[int, str], _Waiting] = {}  # decided on a chunk, the answer still to come

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
        """A language's answer came for `segment` (before the muxer places it; `decided`: its time has passed, or its
        chunks decided it)."""
        if segment.sequence_number not in self._source_done and (outcome.transcript or "").strip():
            self._source_done.add(segment.sequence_number)
            start_s, end_s = self.speech_span(segment, outcome)
            self._cue(segment.sequence_number, self.source_language, "source", start_s, end_s, outcome.transcript or "")
        if outcome.language is None:
            return
        key = (segment.sequence_number, outcome.language)
        waiting = self._waiting.pop(key, None)
        if waiting is not None:  # decided on its first chunk: the answer completes its record
            self._write(waiting.decision, outcome, waiting)
        elif not decided:
            self._outcomes[key] = outcome
        else:
            self._chunked.discard(key)

    def chunked(self, segment: AudioSegment, language: str) -> None:
        """A chunk of `language`'s dub came for `segment` (before the muxer places it)."""
        self._chunked.add((segment.sequence_number, language))

    def chunk_placed(self, segment: AudioSegment, language: str, span: tuple[int, int], text: str) -> None:
        """A chunk plays at output samples `span`: its caption, and the phrase's span in the log."""
        start, end = span
        waiting = self._waiting.get((segment.sequence_number, language))
        if waiting is not None:
            waiting.start = start if waiting.start is None else min(waiting.start, start)
            waiting.end = end if waiting.end is None else max(waiting.end, end)
            waiting.chunks += 1
        if text.strip():
            self._cue(segment.sequence_number, language, "translation", self._out_s(start), self._out_s(end), text)

    def decided(self, decision: Decision) -> None:
        """The muxer decided what `decision.language` plays for the phrase."""
        key = (decision.segment.sequence_number, decision.language)
        outcome = self._outcomes.pop(key, None)
        if outcome is None and key in self._chunked:  # decided on a chunk: the record waits for the answer
            self._waiting[key] = _Waiting(decision)
            return
        self._write(decision, outcome, None)

    def _write(self, decision: Decision, outcome: DubOutcome | None, chunks: _Waiting | None) -> None:
        """The phrase's tier shares, translation caption (a whole dub: its chunks had theirs) and log line."""
        segment = decision.segment
        self._chunked.discard((segment.sequence_number, decision.language))
        placed = decision.placed
        if placed is not None and outcome is not None and outcome.translator and outcome.voice_tier:
            self.tiers.add(decision.language, outcome.translator, outcome.voice_tier, segment.speech_s)
            if self.tier_sink is not None:
                self.tier_sink(decision.language, outcome.translator, outcome.voice_tier, segment.speech_s)
        if placed is not None:
            start, end = placed.start, placed.end
            if chunks is not None and chunks.start is not None and chunks.end is not None:
                start, end = min(start, chunks.start), max(end, chunks.end)
            start_s, end_s = self._out_s(start), self._out_s(end)
            text = (outcome.translated_text or "") if outcome is not None else ""
            if chunks is None and text.strip():
                self._cue(segment.sequence_number, decision.language, "translation", start_s, end_s, text)
        else:
            start_s, end_s = self.speech_span(segment, outcome)
        if self.log is not None:
            record = self._record(decision, outcome, start_s, end_s)
            record["chunks"] = chunks.chunks if chunks is not None else 0
            self.log.phrase(record)

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
            "translator": outcome.translator if outcome is not None else None,
            "voice_tier": outcome.voice_tier if outcome is not None else None,
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
        for waiting in list(self._waiting.values()):  # the stream ended before their answers came
            self._write(waiting.decision, None, waiting)
        self._waiting.clear()
        self._chunked.clear()
        self._outcomes.clear()
        if self.log is not None:
            self.log.close()
