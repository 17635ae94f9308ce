"""The soak benchmark's verdicts (bench/soak_bench.py) on made-up samples: growth, bounds, gaps and roles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from soak_bench import judge, slope_per_hour, verdicts

pytestmark = pytest.mark.unit


def samples(**series: object) -> list[dict]:
    """Twelve samples 10 s apart; each keyword is a function of t (s) giving that series' value."""
    return [{"t s": float(t), **{k.replace("_", " "): f(t) for k, f in series.items()}} for t in range(10, 130, 10)]


def by_name(found: list) -> dict:
    return {v.series: v for v in found}


def test_slope_per_hour_of_a_line() -> None:
    assert slope_per_hour([(0.0, 10.0), (1800.0, 15.0), (3600.0, 20.0)]) == pytest.approx(10.0)
    assert slope_per_hour([(0.0, 1.0)]) != slope_per_hour([(0.0, 1.0)])  # NaN with one point


def test_rss_that_climbs_grows_and_flat_rss_is_flat() -> None:
    found = by_name(verdicts(samples(**{"rss media:worker": lambda t: 100 + t, "rss sts:main": lambda t: 2000.0}), 20))
    assert found["rss media:worker"].verdict == "GROWS"
    assert found["rss media:worker"].failed
    assert found["rss sts:main"].verdict == "flat"


def test_hls_directory_that_refills_its_window_is_bounded() -> None:
    sawtooth = samples(hls_MiB=lambda t: 5.0 + (t % 40) / 10)
    assert by_name(verdicts(sawtooth, 20))["hls MiB"].verdict == "bounded"
    climbing = samples(hls_MiB=lambda t: t / 5)
    assert by_name(verdicts(climbing, 20))["hls MiB"].verdict == "GROWS"


def test_lag_may_not_move_either_way() -> None:
    assert judge("lag p50 s", [(30.0, 6.0), (60.0, 4.0), (120.0, 4.0)], 20.0, 120.0).verdict == "MOVES"
    assert judge("lag p50 s", [(30.0, 6.0), (60.0, 6.2), (120.0, 6.1)], 20.0, 120.0).verdict == "flat"


def test_a_role_missing_during_the_drop_is_judged_on_the_samples_it_has() -> None:
    rows = samples(**{"fds media:worker": lambda t: 20.0})
    for row in rows[5:7]:
        del row["fds media:worker"]  # the worker is gone while the publisher is
    assert by_name(verdicts(rows, 20))["fds media:worker"].verdict == "flat"


def test_series_without_a_tolerance_get_no_verdict_and_warmup_is_left_out() -> None:
    rows = samples(**{"dubbed %": lambda t: 100.0, "fds media:main": lambda t: 50.0 if t < 20 else 12.0})
    found = by_name(verdicts(rows, 20))
    assert "dubbed %" not in found
    assert found["fds media:main"].verdict == "flat"
    assert judge("fds x", [], 20.0, 120.0).verdict == "no data"


def test_processes_left_between_calls_are_judged_by_their_floor() -> None:
    # A per-call pipeline seen in some samples only: its floor stays at the STS's own processes.
    busy = samples(procs_sts_floor=lambda t: 2.0 + (12.0 if t % 30 == 0 else 0.0))
    assert by_name(verdicts(busy, warmup_s=0))["procs sts floor"].verdict == "flat"
    # One process more left behind every few calls: the floor rises.
    leaking = samples(procs_sts_floor=lambda t: 2.0 + t // 40)
    assert by_name(verdicts(leaking, warmup_s=0))["procs sts floor"].verdict == "GROWS"
