"""Backpressure thresholds (the seed's: 1-3 none, 4-6 slow_down, 7-10 pause, more rejected) and when events go out."""

from __future__ import annotations

from typing import Any

import pytest

from livedub.protocol import (
    AudioFormat,
    AudioPayload,
    BackpressureAction,
    BackpressureSeverity,
    FragmentData,
    FragmentProcessed,
    StreamConfig,
)
from livedub.sts.metrics import StsMetrics
from livedub.sts.session import StreamSession, backpressure_level

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("inflight", "severity", "action"),
    [
        (0, BackpressureSeverity.LOW, BackpressureAction.NONE),
        (1, BackpressureSeverity.LOW, BackpressureAction.NONE),
        (3, BackpressureSeverity.LOW, BackpressureAction.NONE),
        (4, BackpressureSeverity.MEDIUM, BackpressureAction.SLOW_DOWN),
        (6, BackpressureSeverity.MEDIUM, BackpressureAction.SLOW_DOWN),
        (7, BackpressureSeverity.HIGH, BackpressureAction.PAUSE),
        (10, BackpressureSeverity.HIGH, BackpressureAction.PAUSE),
    ],
)
def test_thresholds(inflight: int, severity: BackpressureSeverity, action: BackpressureAction) -> None:
    level = backpressure_level(inflight)
    assert level is not None
    assert (level.severity, level.action) == (severity, action)
    assert (level.recommended_delay_ms is None) == (severity is BackpressureSeverity.LOW)


@pytest.mark.parametrize("inflight", [11, 12, 100])
def test_over_the_limit_is_rejected(inflight: int) -> None:
    assert backpressure_level(inflight) is None


def _fragment(seq: int) -> FragmentData:
    audio = AudioPayload.from_bytes(
        b"\0\0", format=AudioFormat.PCM_S16LE, sample_rate_hz=16000, channels=1, duration_ms=0.0625
    )
    return FragmentData(fragment_id=f"f{seq}", stream_id="s", sequence_number=seq, audio=audio)


async def test_events_on_rise_while_raised_and_on_relief() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    async def emit(event: str, payload: dict[str, Any]) -> None:
        sent.append((event, payload))

    session = StreamSession(
        stream_id="s", worker_id="w", sid="x", config=StreamConfig(max_inflight=3), emit=emit, metrics=StsMetrics()
    )
    raised: list[tuple[int, str] | None] = []
    for seq in range(8):
        session.accept(_fragment(seq))
        event = session.backpressure_after_accept()
        raised.append(None if event is None else (event.current_inflight, event.action.value))
    assert raised == [
        None,
        None,
        None,
        (4, "slow_down"),
        (5, "slow_down"),
        (6, "slow_down"),
        (7, "pause"),
        (8, "pause"),
    ]

    for seq in range(8):
        await session.complete(
            FragmentProcessed(fragment_id=f"f{seq}", stream_id="s", sequence_number=seq, status="success")
        )
    relief = [(p["current_inflight"], p["action"]) for e, p in sent if e == "backpressure"]
    # Only level changes on the way down: high -> medium at 6, medium -> low at 3.
    assert relief == [(6, "slow_down"), (3, "none")]
    assert all(p["max_inflight"] == 3 for e, p in sent if e == "backpressure")
