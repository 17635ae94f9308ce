"""Typed values between the engine's stages: Utterance → Transcript → Translation → Speech → FittedDub.

Nothing here knows the wire (Socket.IO events, payload codecs): the STS server, `livedub dub-file` and the benchmark
map their inputs to an `Utterance` and read a `Dub` back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from livedub.dubbing.interfaces import FloatAudio, Transcript

__all__ = [
    "TRANSLATION_STAGES",
    "VOICE_STAGES",
    "Dub",
    "DubProgress",
    "FitStatus",
    "FittedDub",
    "Slot",
    "Speech",
    "Stage",
    "StageFailed",
    "TooLate",
    "Transcript",
    "Translation",
    "TranslatorTier",
    "Utterance",
    "VoiceTier",
    "seconds_of",
    "step_of",
]


@dataclass(frozen=True)
class Utterance:
    """A piece of source audio to dub: mono float, at the rate the dub must have."""

    audio: FloatAudio
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass(frozen=True)
class Translation:
    text: str
    language: str


@dataclass(frozen=True)
class Slot:
    """Where the dub goes, in seconds from the utterance start."""

    start_s: float  # where the recognised speech starts: the dub starts there
    span_s: float  # the speech the dub replaces: what it is fitted to
    room_s: float  # from `start_s` to the utterance's end
    overrun_s: float = 0.0  # how far past the utterance's end the dub may run

    @property
    def limit_s(self) -> float:
        """The longest the dub may be."""
        return self.room_s + self.overrun_s


@dataclass(frozen=True)
class Speech:
    """Synthesised speech without the synthesiser's edge silence."""

    audio: FloatAudio
    sample_rate: int
    speed: float  # the speaking rate asked of the synthesiser (1 = its natural rate)
    voice: str = ""  # the voice that spoke, `backend:voice` (livedub.languages.VoiceRef)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


class FitStatus(StrEnum):
    """How close the fitted dub came to its target length: within ±10 %, ±20 %, or beyond."""

    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"


@dataclass(frozen=True)
class FittedDub:
    """The dub placed in its utterance: audio from the utterance start, as long as the utterance (or longer, up to
    the slot's overrun, when the dub runs on)."""

    audio: FloatAudio
    sample_rate: int
    speech_s: float  # the dubbed speech after the time-stretch
    target_s: float  # what it was fitted to: the span, or more of the room when it could not reach the span
    speed_ratio: float  # time-stretch applied (> 1: sped up)
    variance_percent: float  # (speech_s - target_s) / target_s * 100
    status: FitStatus

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class DubProgress:
    """What the stages produced so far and how long each took (seconds), also when a later stage fails."""

    transcript: Transcript | None = None
    translation: Translation | None = None
    slot: Slot | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class TranslatorTier(StrEnum):
    """Which translator made a dub's words: the main one (the LLM, or the configured one) or its fast stand-in."""

    MAIN = "main"
    FAST = "fast"


class VoiceTier(StrEnum):
    """Which voice spoke a dub: one of the language's usual voices, or its fast stand-in."""

    USUAL = "usual"
    FAST = "fast"


class Stage(StrEnum):
    """A step of the engine with its own learnt cost and timing. Each tier of a translator or a voice is a stage of
    its own (its cost is its backend's, not the main one's): `Stage.of_translator(tier)`, `Stage.of_voice(tier)`.
    The values are the names in `Dub.seconds` and the cost snapshots (logs, benchmarks)."""

    ASR = "asr"
    TRANSLATION = "translation"
    FAST_TRANSLATION = "translation_fast"
    TTS = "tts"
    FAST_TTS = "tts_fast"
    FIT = "fit"

    @staticmethod
    def of_translator(tier: TranslatorTier) -> Stage:
        return TRANSLATION_STAGES[tier]

    @staticmethod
    def of_voice(tier: VoiceTier) -> Stage:
        return VOICE_STAGES[tier]


TRANSLATION_STAGES = {TranslatorTier.MAIN: Stage.TRANSLATION, TranslatorTier.FAST: Stage.FAST_TRANSLATION}
VOICE_STAGES = {VoiceTier.USUAL: Stage.TTS, VoiceTier.FAST: Stage.FAST_TTS}  # best tier first in both


STEPS: dict[str, str] = {Stage.FAST_TRANSLATION: Stage.TRANSLATION, Stage.FAST_TTS: Stage.TTS}  # each tier's step


def step_of(stage: str) -> str:
    """The step that `stage` is a tier of (the wire and the metrics name steps, not tiers: a failed fast voice is a
    `tts` failure), else `stage` itself (`timeout`)."""
    return STEPS.get(stage, stage)


def seconds_of(seconds: dict[str, float], stages: dict[TranslatorTier, Stage] | dict[VoiceTier, Stage]) -> float:
    """The time one of the tiered steps took: the best tier's where it ran (a main translator stopped before its
    stand-in spoke: the main one's, as the wire has always reported), else the first other tier's that ran."""
    return next((seconds[stage] for stage in stages.values() if stage in seconds), 0.0)


@dataclass(frozen=True)
class Dub:
    """The engine's answer. `translation` is None when the utterance held no speech (the dub is then silence)."""

    transcript: Transcript
    translation: Translation | None
    slot: Slot | None
    fitted: FittedDub
    seconds: dict[str, float]
    voice: str = ""  # the voice that spoke the dub, `backend:voice` (empty when nothing was said)
    translator: TranslatorTier = TranslatorTier.MAIN
    voice_tier: VoiceTier = VoiceTier.USUAL


class StageFailed(Exception):
    """A stage could not produce its value. `progress` holds what the earlier stages produced."""

    def __init__(self, stage: str, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.stage = stage
        self.retryable = retryable
        self.progress = DubProgress()


class TooLate(StageFailed):
    """The deadline cannot be met: the work stopped before `before_stage` (a dropped fragment, not a fault)."""

    def __init__(self, before_stage: str, message: str) -> None:
        super().__init__("timeout", message, retryable=True)
        self.before_stage = before_stage
