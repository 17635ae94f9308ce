"""The dubbing engine: typed stages from source audio to a fitted dub, with no knowledge of the wire.

    Utterance → Recognise → Transcript → Translate → Translation → Synthesise → Speech → Fit → FittedDub

The STS server (through `livedub.sts.pipeline`), `livedub dub-file` and `bench/sts_bench.py` all run it.
"""

from livedub.dubbing.costs import StageCosts
from livedub.dubbing.engine import STAGES, DubEngine, TargetDub
from livedub.dubbing.models import load_engine
from livedub.dubbing.pacing import SpeakingPace, choose_speed
from livedub.dubbing.stages import Fit, Place, Recognise, Synthesise, Translate, fit_target
from livedub.dubbing.values import (
    Dub,
    DubProgress,
    FitStatus,
    FittedDub,
    Slot,
    Speech,
    StageFailed,
    TooLate,
    Transcript,
    Translation,
    Utterance,
)

__all__ = [
    "STAGES",
    "Dub",
    "DubEngine",
    "DubProgress",
    "Fit",
    "FitStatus",
    "FittedDub",
    "Place",
    "Recognise",
    "Slot",
    "SpeakingPace",
    "Speech",
    "StageCosts",
    "StageFailed",
    "Synthesise",
    "TargetDub",
    "TooLate",
    "Transcript",
    "Translate",
    "Translation",
    "Utterance",
    "choose_speed",
    "fit_target",
    "load_engine",
]
