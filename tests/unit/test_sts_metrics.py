"""STS metrics from the answers: how often deadline pressure degraded a dub (fast translator, fast voice)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from livedub.protocol import FragmentMetadata, FragmentProcessed
from livedub.sts.metrics import StsMetrics

pytestmark = pytest.mark.unit


def answer(translator: str | None, voice_tier: str | None) -> FragmentProcessed:
    extras = {k: v for k, v in (("translator", translator), ("voice_tier", voice_tier)) if v is not None}
    return FragmentProcessed(
        fragment_id="f", stream_id="s", sequence_number=0, status="success", metadata=FragmentMetadata(**extras)
    )


def dubs(metrics: StsMetrics) -> dict[tuple[str, str], float]:
    families = text_string_to_metric_families(metrics.render().decode())
    family = next(f for f in families if f.name == "sts_dubs")
    return {(s.labels["translator"], s.labels["voice"]): s.value for s in family.samples if s.name.endswith("_total")}


def test_dubs_are_counted_by_translator_and_voice_tier() -> None:
    metrics = StsMetrics()
    assert set(dubs(metrics).values()) == {0.0} and len(dubs(metrics)) == 4  # every series from the start
    for translator, voice in (("fast", "fast"), ("fast", "fast"), ("main", "usual"), ("fast", "usual")):
        metrics.observe_processed(answer(translator, voice), 1.0)
    metrics.observe_processed(answer(None, None), 1.0)  # no dub (silence, a failure): not counted
    assert dubs(metrics) == {("main", "usual"): 1, ("main", "fast"): 0, ("fast", "usual"): 1, ("fast", "fast"): 2}
