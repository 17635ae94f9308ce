"""What an STS answer says about the STS's health, for the circuit breaker.

The breaker guards against a failing STS, not against a busy one: work dropped because it could no longer be on
time (TIMEOUT at its deadline, load shedding) is normal under load and must not open it, or one slow fragment
would stop dubbing for a whole cooldown.
"""

from __future__ import annotations

from enum import StrEnum

from livedub.protocol import ErrorCode, FragmentProcessed, FragmentStatus


class StsVerdict(StrEnum):
    HEALTHY = "healthy"  # the STS did its job (a refusal of bad input included)
    LATE = "late"  # dropped as too late (or shed under load): says nothing about the STS's health
    FAULT = "fault"  # the STS failed: counts toward opening the breaker


_LATE_CODES = {ErrorCode.TIMEOUT, ErrorCode.BACKPRESSURE_EXCEEDED}
# The service or its models broke; other codes name a problem of the request (format, sequence, size, config).
_FAULT_CODES = {
    ErrorCode.INTERNAL_ERROR,
    ErrorCode.ASR_FAILED,
    ErrorCode.TRANSLATION_FAILED,
    ErrorCode.TTS_SYNTHESIS_FAILED,
}


def code_verdict(code: ErrorCode, stage: str | None = None) -> StsVerdict:
    """Verdict on an error `code` (of an `error` event, or of `fragment:processed.error` at `stage`)."""
    if code in _LATE_CODES:
        return StsVerdict.LATE
    if code in _FAULT_CODES and stage != "fit":  # a dub that does not fit its slot is content, not a fault
        return StsVerdict.FAULT
    return StsVerdict.HEALTHY


def processed_verdict(processed: FragmentProcessed) -> StsVerdict:
    """Verdict on a `fragment:processed`: success/partial is healthy; a failure is judged by its error."""
    if processed.status is not FragmentStatus.FAILED:
        return StsVerdict.HEALTHY
    if processed.error is None:
        return StsVerdict.FAULT  # failed without saying why
    return code_verdict(processed.error.code, processed.error.stage)
