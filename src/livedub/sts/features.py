"""What a processor offers beyond `FragmentProcessor`, declared as protocols and read once when it is built.

The server calls `ProcessorFeatures`, never the processor's attributes by name: a feature a processor lacks is a
no-op (or None where its absence changes what the server does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from livedub.sts.error_simulation import ErrorSimulator


@runtime_checkable
class PreparesPairs(Protocol):
    """Warms up the language pairs a new stream needs (blocking: seconds per pair not warm yet)."""

    def prepare(self, source: str, targets: list[str]) -> None: ...


@runtime_checkable
class KnowsUsualTime(Protocol):
    """Knows what a fragment of `audio_s` usually takes: one that cannot start that long before its deadline is
    left to expire in the queue."""

    def usual_time_s(self, audio_s: float) -> float: ...


@runtime_checkable
class ForgetsStreams(Protocol):
    """Keeps per-stream state (the translation context) that a stream's end frees."""

    def end_stream(self, stream_id: str) -> None: ...


@runtime_checkable
class SimulatesErrors(Protocol):
    """Offers `config:error_simulation` (the echo pipeline)."""

    @property
    def error_simulation(self) -> ErrorSimulator: ...


@runtime_checkable
class MirrorsAudio(Protocol):
    """Sends each fragment's payload back as it is: the server does not check the audio bytes for it."""

    mirrors_audio: bool


def _no_preparation(_source: str, _targets: list[str]) -> None:
    return None


def _nothing_to_forget(_stream_id: str) -> None:
    return None


@dataclass(frozen=True)
class ProcessorFeatures:
    prepare: Callable[[str, list[str]], None] = _no_preparation
    end_stream: Callable[[str], None] = _nothing_to_forget
    usual_time_s: Callable[[float], float] | None = None  # None: every fragment is worth starting
    error_simulator: ErrorSimulator | None = None  # None: `config:error_simulation` is refused
    mirrors_audio: bool = False

    @classmethod
    def of(cls, processor: object) -> ProcessorFeatures:
        return cls(
            prepare=processor.prepare if isinstance(processor, PreparesPairs) else _no_preparation,
            end_stream=processor.end_stream if isinstance(processor, ForgetsStreams) else _nothing_to_forget,
            usual_time_s=processor.usual_time_s if isinstance(processor, KnowsUsualTime) else None,
            error_simulator=processor.error_simulation if isinstance(processor, SimulatesErrors) else None,
            mirrors_audio=isinstance(processor, MirrorsAudio) and processor.mirrors_audio is True,
        )


NO_FEATURES = ProcessorFeatures()
