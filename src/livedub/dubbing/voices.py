"""Voices that follow the speaker: per stream, the stock voice of each target language nearest to who speaks.

    picker = VoicePicker(engine.voices)                 # one per pipeline (VoiceBank: voices per language)
    picker.warm_up(["es", "fr"])                        # each voice's reference embedding (cached on disk)
    stream = picker.stream(fragment.stream_id, config.voice_profile)
    turn = stream.observe(audio, sample_rate)           # once per fragment, before the targets are spoken
    engine.dub_each(utterance, source, targets, voice=stream)   # stream(target) -> VoiceRef

A speaker change (SpeakerTracker: hysteresis over phrases) picks, per target language, the voice whose reference
embedding is nearest to the new speaker's; a speaker heard before gets the voice they had. Until someone has said
about a second of speech the language's default voice speaks. A pin (`voice_profile` other than "default", or
matching switched off) bypasses all of it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from livedub.dubbing.interfaces import FloatAudio
from livedub.dubbing.speaker import (
    SpeakerEmbedder,
    SpeakerProfile,
    SpeakerTracker,
    SpeakerTurn,
    VoiceChoice,
    VoiceMatcher,
    voice_key,
)
from livedub.languages import LANGUAGES, VoiceRef

log = logging.getLogger(__name__)

# A speaker keeps their voice unless another voice becomes nearer by this much as their profile grows (the first
# phrase alone may point at a neighbour; switching voices under one speaker is worse than a near miss).
SWITCH_MARGIN = 0.05
MAX_STREAMS = 256  # per-stream state kept (least recently used dropped first)


class Spoken(Protocol):
    audio: FloatAudio
    sample_rate: int


class VoiceSource(Protocol):
    """What the picker needs of the engine's voice bank (livedub.dubbing.tts.bank.VoiceBank)."""

    def voices(self, language: str) -> list[VoiceRef]: ...

    def synthesize(self, text: str, language: str, voice: VoiceRef | str | None = None) -> Spoken: ...


def reference_sentence(language: str) -> str:
    """What each voice says once to be measured: the language's warm-up and example sentences (~7 s of speech;
    a d-vector from more speech is steadier)."""
    row = LANGUAGES[language]
    return f"{row.warmup} {row.example}"


@dataclass(frozen=True)
class VoiceDecision:
    """The voice for one target of one fragment, and why.

    reason: `pinned` (voice_profile or settings), `default` (matching off, no speaker yet, or no usable reference),
    `matched` (chosen for a new or returning speaker), `kept` (the speaker's voice so far).
    """

    voice: VoiceRef
    changed: bool  # differs from the voice this stream's previous fragment got in this language
    reason: str
    speaker: int | None = None
    similarity: float | None = None  # the speaker against the chosen voice's reference


class StreamVoices:
    """One stream's speaker tracker and its voice per target language. Callable: `stream(target) -> VoiceRef`."""

    def __init__(
        self,
        bank: VoiceSource,
        matcher: VoiceMatcher | None,
        tracker: SpeakerTracker | None,
        pin: str | None = None,
    ) -> None:
        self.bank = bank
        self.matcher = matcher
        self.tracker = tracker
        self.pin = pin
        self.last_turn: SpeakerTurn | None = None
        self._by_speaker: dict[tuple[str, int], VoiceChoice] = {}  # (language, speaker id) -> their voice
        self._spoken: dict[str, VoiceRef] = {}  # the voice of the previous fragment, per language
        self._lock = threading.Lock()

    @property
    def following(self) -> bool:
        return self.pin is None and self.matcher is not None and self.tracker is not None

    def observe(self, audio: FloatAudio, sample_rate: int) -> SpeakerTurn | None:
        """Feed one fragment's audio (once, before its targets are spoken); None when not following speakers."""
        if not self.following:
            return None
        assert self.tracker is not None
        try:
            self.last_turn = self.tracker.observe(audio, sample_rate)
        except Exception as exc:  # never lose a dub over the voice: the voice stays as it is
            log.warning("speaker embedding failed: %s", exc)
            return None
        if self.last_turn.changed:
            log.info("speaker %s (%s)", self.last_turn.speaker, self.last_turn.status)
        return self.last_turn

    def __call__(self, language: str) -> VoiceRef | str:
        """The voice for `language` (what DubEngine.dub_each calls per target); never raises: on any trouble the
        engine's default voice ("default") speaks, so the voice can never cost a dub."""
        try:
            return self.decide(language).voice
        except Exception as exc:
            log.warning("voice choice for %s failed, the default voice speaks: %s", language, exc)
            return "default"

    def decide(self, language: str) -> VoiceDecision:
        with self._lock:
            decision = self._decide(language)
            decision = VoiceDecision(
                decision.voice,
                self._spoken.get(language, decision.voice) != decision.voice,
                decision.reason,
                decision.speaker,
                decision.similarity,
            )
            self._spoken[language] = decision.voice
        return decision

    def _decide(self, language: str) -> VoiceDecision:
        candidates = self.bank.voices(language)
        default = candidates[0]
        if self.pin is not None:
            pinned = _find(candidates, self.pin)
            return VoiceDecision(pinned or default, False, "pinned" if pinned else "default")
        current = self.tracker.current if self.tracker is not None else None
        if not self.following or current is None or len(candidates) == 1:
            return VoiceDecision(default, False, "default", current.speaker if current else None)
        assert self.matcher is not None
        key = (language, current.speaker)
        previous = self._by_speaker.get(key)
        choice = self._choose(current, candidates, language, previous)
        if choice is None:
            return VoiceDecision(default, False, "default", current.speaker)
        self._by_speaker[key] = choice
        reason = "kept" if previous is not None and voice_key(previous.voice) == voice_key(choice.voice) else "matched"
        return VoiceDecision(choice.voice, False, reason, current.speaker, choice.similarity)

    def _choose(
        self, speaker: SpeakerProfile, candidates: Sequence[VoiceRef], language: str, previous: VoiceChoice | None
    ) -> VoiceChoice | None:
        assert self.matcher is not None
        best = self.matcher.choose(speaker.vector, candidates, language, reference_sentence(language), speaker.pitch_hz)
        if best is None or previous is None:
            return best
        # Re-scored against the grown profile; the old voice stays unless clearly beaten.
        held = best.scores.get(voice_key(previous.voice))
        if held is not None and best.similarity - held < SWITCH_MARGIN:
            return VoiceChoice(previous.voice, held, best.scores)
        return best


def _find(candidates: Sequence[VoiceRef], pin: str) -> VoiceRef | None:
    """A pinned voice among the language's: `backend:voice`, or the voice's name alone."""
    for ref in candidates:
        if pin in {str(ref), ref.voice}:
            return ref
    return None


def pin_of(voice_profile: str | None, voice_match: bool = True) -> str | None:
    """The stream's pin: its `voice_profile` unless "default"; with matching off, the language's default voice."""
    if voice_profile and voice_profile != "default":
        return voice_profile
    return None if voice_match else "default"


class VoicePicker:
    """One per pipeline: the embedder, the reference embeddings (shared by every stream) and each stream's state."""

    def __init__(
        self,
        bank: VoiceSource,
        embedder: SpeakerEmbedder | None = None,
        *,
        voice_match: bool = True,
        cache_dir: Path | None = None,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.bank = bank
        self.voice_match = voice_match
        self.embedder = embedder if embedder is not None or not voice_match else SpeakerEmbedder()
        self.matcher = VoiceMatcher(self.embedder, self._say, cache_dir) if self.embedder is not None else None
        self.max_streams = max_streams
        self._streams: OrderedDict[str, StreamVoices] = OrderedDict()
        self._lock = threading.Lock()

    def _say(self, voice: VoiceRef, text: str, language: str) -> tuple[FloatAudio, int]:
        voiced = self.bank.synthesize(text, language, voice)
        return voiced.audio, voiced.sample_rate

    def warm_up(self, languages: Iterable[str]) -> dict[str, int]:
        """Every voice's reference for `languages` (synthesised once, then read from the disk cache): how many
        voices per language can be matched."""
        if self.matcher is None:
            return {}
        ready = {}
        for language in languages:
            voices = self.bank.voices(language)
            if len(voices) > 1:  # one voice leaves nothing to choose: no reference needed
                ready[language] = self.matcher.warm_up(voices, language, reference_sentence(language))
        return ready

    def stream(self, stream_id: str, voice_profile: str | None = "default") -> StreamVoices:
        """The stream's state (created on first use; a changed `voice_profile` applies from now on)."""
        pin = pin_of(voice_profile, self.voice_match)
        with self._lock:
            state = self._streams.get(stream_id)
            if state is None:
                tracker = SpeakerTracker(self.embedder) if self.embedder is not None else None
                state = self._streams[stream_id] = StreamVoices(self.bank, self.matcher, tracker, pin)
                while len(self._streams) > self.max_streams:
                    self._streams.popitem(last=False)
            else:
                state.pin = pin
            self._streams.move_to_end(stream_id)
        return state

    def forget(self, stream_id: str) -> None:
        """Drop a stream's state (stream end); a stream that comes back starts afresh."""
        with self._lock:
            self._streams.pop(stream_id, None)


__all__ = ["SWITCH_MARGIN", "StreamVoices", "VoiceDecision", "VoicePicker", "pin_of", "reference_sentence"]
