"""ErrorSimulator (config:error_simulation of the echo pipeline): which fragments each rule chooses."""

from __future__ import annotations

import time

import pytest

from livedub.deadline import Deadline
from livedub.protocol import AudioFormat, AudioPayload, ErrorCode, ErrorSimulation, FragmentData
from livedub.sts.error_simulation import ErrorSimulator

pytestmark = pytest.mark.unit

AUDIO = AudioPayload.from_bytes(
    b"\x00\x00" * 16, format=AudioFormat.PCM_S16LE, sample_rate_hz=16000, channels=1, duration_ms=1
)


def fragment(seq: int, stream_id: str = "s") -> FragmentData:
    return FragmentData(fragment_id=f"{stream_id}-{seq}", stream_id=stream_id, sequence_number=seq, audio=AUDIO)


def codes(simulator: ErrorSimulator, stream_id: str = "s", n: int = 6) -> list[str | None]:
    chosen = [simulator.match(fragment(seq, stream_id)) for seq in range(n)]
    return [None if r is None else (r.error_code.value if r.error_code else "delay") for r in chosen]


def test_rules_in_order_with_count_and_every_nth() -> None:
    simulator = ErrorSimulator()
    config = ErrorSimulation.model_validate(
        {
            "enabled": True,
            "rules": [
                {"trigger": "fragment_id", "value": "s-1", "error_code": "MODEL_ERROR"},
                {"trigger": "nth_fragment", "value": 2, "error_code": "TIMEOUT", "count": 1},
                {"trigger": "sequence_number", "value": 5, "delay_ms": 10},
            ],
        }
    )
    assert simulator.configure("s", config) == 3
    assert codes(simulator) == [
        None,
        "MODEL_ERROR",
        None,
        "TIMEOUT",
        None,
        "delay",
    ]  # 2nd: rule 1 first; 6th: rule 2 used up
    assert codes(simulator, "other") == [None] * 6  # rules are per stream


def test_disabled_or_empty_clears_and_probability_zero_never_fires() -> None:
    simulator = ErrorSimulator()
    rule = {"error_code": "GPU_OOM", "probability": 0.0}
    assert simulator.configure("s", ErrorSimulation.model_validate({"enabled": True, "rules": [rule]})) == 1
    assert codes(simulator) == [None] * 6
    simulator.configure("s", ErrorSimulation.model_validate({"enabled": True, "rules": [{"error_code": "GPU_OOM"}]}))
    assert codes(simulator, n=2) == ["GPU_OOM", "GPU_OOM"]
    assert simulator.configure("s", ErrorSimulation.model_validate({"enabled": False, "rules": [rule]})) == 0
    assert codes(simulator, n=2) == [None, None]
    assert ErrorCode.GPU_OOM.value == "GPU_OOM"


def test_a_delay_does_not_outlast_the_deadline() -> None:
    rule = ErrorSimulation.model_validate({"enabled": True, "rules": [{"delay_ms": 5000}]}).rules[0]
    started = time.monotonic()
    ErrorSimulator.hold(rule, Deadline.after(0.1))
    assert time.monotonic() - started < 1.0
