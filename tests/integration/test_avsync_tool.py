"""The A/V sync tool (livedub.analysis.measure_av_sync) on real generated pattern files, with the installed PyAV."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from livedub.analysis import PatternSpec, measure_av_sync, write_pattern

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (make setup)"),
]

SPEC = PatternSpec(duration_s=12.0, period_s=2.0, first_marker_s=1.0)  # markers at 1, 3, 5, 7, 9, 11 s


def _markers_s(flashes: list[float]) -> list[float]:
    """Marker times from the first one: FLV has no edit list, so x264's B-frame delay (2 frames) shifts them all."""
    return [round(f - flashes[0] + 1.0, 3) for f in flashes]


@pytest.fixture(scope="module")
def pattern(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pattern(tmp_path_factory.mktemp("avsync") / "pattern.flv", SPEC)


def test_whole_file_measures_every_marker_in_sync(pattern: Path) -> None:
    report = measure_av_sync(pattern)
    assert _markers_s(report.flashes_s) == pytest.approx([1, 3, 5, 7, 9, 11], abs=0.05)
    assert 1.0 <= report.flashes_s[0] <= 1.1
    assert len(report.offsets_ms) == 6
    assert report.max_abs_offset_ms <= 2.0  # FLV rounds timestamps to 1 ms


def test_max_seconds_stops_reading_early(pattern: Path) -> None:
    report = measure_av_sync(pattern, max_seconds=6.0)
    assert _markers_s(report.flashes_s) == pytest.approx([1, 3, 5], abs=0.05)
    assert len(report.offsets_ms) == 3
    assert report.max_abs_offset_ms <= 2.0


def test_max_seconds_on_an_mp4_with_b_frames(tmp_path: Path) -> None:
    path = write_pattern(tmp_path / "pattern.mp4", PatternSpec(duration_s=8.0, bframes=2))
    report = measure_av_sync(path, max_seconds=4.0)
    assert report.flashes_s == pytest.approx([1, 3], abs=0.05)
    assert report.max_abs_offset_ms <= 2.0
