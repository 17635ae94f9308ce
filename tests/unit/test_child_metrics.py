"""ChildMetrics: the parent's registry merged with the worker processes' expositions, one value per series."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from livedub.media.metrics import WorkerMetrics
from livedub.media.service.worker_process import ChildMetrics

pytestmark = pytest.mark.unit


def child_exposition(stream_id: str, segments: int, state: str = "running") -> str:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.segments_processed.labels(stream_id=stream_id).inc(segments)
    metrics.sts_round_trip_seconds.labels(stream_id=stream_id).observe(1.2)
    metrics.set_state(stream_id, state)
    return generate_latest(metrics.registry).decode()


def series(view: ChildMetrics) -> Counter[tuple[str, tuple[tuple[str, str], ...]]]:
    text = generate_latest(view).decode()  # type: ignore[arg-type]
    return Counter(
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def test_children_and_parent_are_merged_into_one_valid_exposition() -> None:
    parent = WorkerMetrics(CollectorRegistry())
    parent.errors.labels(stream_id="c", type="stream_limit").inc()
    view = ChildMetrics(parent.registry)
    view.update("a", child_exposition("a", 3))
    view.update("b", child_exposition("b", 5))
    assert view.get_sample_value("media_service_worker_segments_processed_total", {"stream_id": "a"}) == 3
    assert view.get_sample_value("media_service_worker_segments_processed_total", {"stream_id": "b"}) == 5
    assert view.get_sample_value("media_service_worker_sts_round_trip_seconds_count", {"stream_id": "b"}) == 1
    assert view.get_sample_value("media_service_worker_errors_total", {"stream_id": "c", "type": "stream_limit"}) == 1
    counts = series(view)
    assert counts and max(counts.values()) == 1  # no series twice


def test_a_series_the_parent_also_has_is_the_parents() -> None:
    parent = WorkerMetrics(CollectorRegistry())
    parent.set_state("a", "failed")  # the manager saw the worker crash
    view = ChildMetrics(parent.registry)
    view.update("a", child_exposition("a", 1, state="running"))  # the child's last report
    labels = {"stream_id": "a", "state": "failed"}
    assert view.get_sample_value("media_service_worker_pipeline_state", labels) == 1
    assert view.get_sample_value("media_service_worker_pipeline_state", {**labels, "state": "running"}) == 0
    assert max(series(view).values()) == 1


def test_a_new_report_replaces_the_old_and_ended_workers_are_kept_up_to_a_limit() -> None:
    view = ChildMetrics(CollectorRegistry(), keep_ended=1)
    view.update("a", child_exposition("a", 1))
    view.update("a", child_exposition("a", 4))
    assert view.get_sample_value("media_service_worker_segments_processed_total", {"stream_id": "a"}) == 4
    view.update("b", child_exposition("b", 2))
    view.ended("a")
    assert view.get_sample_value("media_service_worker_segments_processed_total", {"stream_id": "a"}) == 4
    view.ended("b")  # only one ended worker is kept: the oldest goes
    assert view.get_sample_value("media_service_worker_segments_processed_total", {"stream_id": "a"}) is None
    assert view.get_sample_value("media_service_worker_segments_processed_total", {"stream_id": "b"}) == 2
