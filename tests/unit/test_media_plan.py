"""A stream's plan: its targets, outputs and delay line, decided once from the settings."""

from __future__ import annotations

import dataclasses

import pytest

from livedub.media.pipeline.plan import RtmpOutput, StreamPlan
from livedub.media.settings import MediaSettings

pytestmark = pytest.mark.unit


def settings(**values: object) -> MediaSettings:
    return MediaSettings(_env_file=None, RTMP_BASE_URL="rtmp://h/live", **values)  # type: ignore[call-arg, arg-type]


def test_the_first_target_is_on_out_and_every_target_on_its_own_output() -> None:
    chosen = settings(WORKER_TARGET_LANGUAGES="fr,it", OUTPUT_DELAY_MS=4000, MEDIA_HLS=False)
    plan = StreamPlan.for_stream("abc", chosen)
    assert plan.targets == ("fr", "it") and plan.delay_s == 4.0 and not plan.hls
    assert plan.outputs_of("fr") == [
        RtmpOutput("fr", "out", "rtmp://h/live/abc/out"),
        RtmpOutput("fr", "fr", "rtmp://h/live/abc/out/fr"),
    ]
    assert plan.outputs_of("it") == [RtmpOutput("it", "it", "rtmp://h/live/abc/out/it")]
    assert plan.rtmp_urls() == {
        "out": "rtmp://h/live/abc/out",
        "fr": "rtmp://h/live/abc/out/fr",
        "it": "rtmp://h/live/abc/out/it",
    }


def test_one_target_by_default_and_the_plan_cannot_change() -> None:
    plan = StreamPlan.for_stream("abc", settings(WORKER_TARGET_LANGUAGE="de"))
    assert plan.targets == ("de",) and [o.name for o in plan.rtmp] == ["out", "de"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.targets = ("fr",)  # type: ignore[misc]


def test_a_plan_without_targets_or_with_outputs_of_other_languages_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one target"):
        StreamPlan("abc", "en", (), (), hls=False, delay_s=1.0)
    with pytest.raises(ValueError, match="not dubbed"):
        StreamPlan("abc", "en", ("es",), (RtmpOutput("fr", "fr", "rtmp://h/x"),), hls=False, delay_s=1.0)
