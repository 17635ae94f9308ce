"""The one builder of `fragment:processed`: a processor's answer (success, partial or failed) addressed to its
fragment and target, or the failed answer the server gives itself (a deadline passed, the processor raised, a
target left unanswered)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from livedub.protocol import (
    ErrorCode,
    FragmentData,
    FragmentError,
    FragmentMetadata,
    FragmentProcessed,
    FragmentStatus,
)


@dataclass(frozen=True)
class Failure:
    """Why the server answers a fragment `failed` on its own (the processor's own failures are answers)."""

    stage: str
    code: ErrorCode
    message: str
    retryable: bool
    processing_time_ms: float = 0.0

    @classmethod
    def timeout(cls, message: str, started: float) -> Failure:
        """The fragment's deadline passed (retryable: the next fragment may be in time)."""
        return cls("timeout", ErrorCode.TIMEOUT, message, retryable=True, processing_time_ms=_since_ms(started))

    @classmethod
    def crash(cls, exc: BaseException, started: float) -> Failure:
        """The processor raised (it should not): the fragment fails, not the server."""
        message = f"{type(exc).__name__}: {exc}"
        return cls("pipeline", ErrorCode.INTERNAL_ERROR, message, False, _since_ms(started))

    @classmethod
    def unanswered(cls, target: str) -> Failure:
        """The processor ended without an answer for `target`."""
        return cls("pipeline", ErrorCode.INTERNAL_ERROR, f"no answer for target {target}", retryable=False)


Answer = FragmentProcessed | Failure
"""What a target of a fragment gets: the processor's answer, or the server's failure."""


def reply(fragment: FragmentData, answer: Answer, target: str | None = None) -> FragmentProcessed:
    """The `fragment:processed` of `fragment` for `target` (None: the answer's own target)."""
    if isinstance(answer, Failure):
        return FragmentProcessed(
            fragment_id=fragment.fragment_id,
            stream_id=fragment.stream_id,
            sequence_number=fragment.sequence_number,
            status=FragmentStatus.FAILED,
            processing_time_ms=answer.processing_time_ms,
            error=FragmentError.model_validate(
                {"stage": answer.stage, "code": answer.code, "message": answer.message, "retryable": answer.retryable}
            ),
            metadata=FragmentMetadata(original_duration_ms=fragment.audio.duration_ms),
            target_language=target,
        )
    identity = {
        "fragment_id": fragment.fragment_id,
        "stream_id": fragment.stream_id,
        "sequence_number": fragment.sequence_number,
        "target_language": target or answer.target_language,
    }
    return answer.model_copy(update=identity)


def failed_result(
    fragment: FragmentData, stage: str, code: ErrorCode, message: str, *, retryable: bool, processing_time_ms: float
) -> FragmentProcessed:
    """A `failed` fragment:processed produced by the server itself (timeout, crash of the processor)."""
    return reply(fragment, Failure(stage, code, message, retryable, processing_time_ms))


def _since_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0
