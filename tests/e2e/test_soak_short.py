"""The soak benchmark, shortened: two minutes of the looped soak cycle on the E2E stack (real models).

bench/soak_bench.py runs the chain for 30 minutes and more; this runs the same sampler on the session's main stack
(its STS is warm already) for `SHORT_MINUTES`, the publisher gone for 8 s in the middle and back, and asserts that
nothing grows from the first third to the last: RSS within its tolerance, descriptors flat, the HLS directory bounded
by its window, the output's lag steady. It asserts on growth, never on speed: a busy machine dubs less, it does not
leak more.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from e2e import config
from e2e.helpers.services_manager import ServicesManager

sys.path.insert(0, str(config.REPO_ROOT / "bench"))

from soak_bench import SoakPlan, run_soak, samples_table, verdict_table, verdicts
from soak_input import ensure_soak_input

pytestmark = pytest.mark.e2e

SHORT_MINUTES = 2.0
INTERVAL_S = 10.0
WARMUP_S = 20.0  # the first samples fill the queues, the delay line and the HLS window: left out of the verdicts


def test_short_soak_grows_nothing(e2e_services: ServicesManager, e2e_log_dir: Path) -> None:
    stack = e2e_services.main
    plan = SoakPlan(SHORT_MINUTES, INTERVAL_S, drop_s=8.0, warmup_s=WARMUP_S, language=config.TARGET_LANGUAGE)
    samples = run_soak(stack, "soakshort", ensure_soak_input(), plan, e2e_log_dir / "soak", print)
    print(samples_table(samples))
    found = verdicts(samples, plan.warmup_s)
    print(verdict_table(found))

    states = [s["publisher"] for s in samples]
    assert {"off", "dropped"} & set(states), f"the publisher was not dropped: {states}"
    assert samples[-1]["publisher"] == "on", "the publisher did not come back"
    judged = {v.series: v for v in found}
    for prefix in ("rss media:", "rss sts:", "rss media-server:", "fds ", "hls MiB"):
        series = [v for name, v in judged.items() if name.startswith(prefix)]
        assert series, f"no {prefix!r} series sampled"
        grown = [v for v in series if v.failed]
        assert not grown, f"grew beyond tolerance: {grown}"
    # The output came back after the drop: the last third has lag samples from the new worker.
    assert judged["lag p50 s"].verdict != "no data", "no output video matched the input in the first or last third"
    assert not judged["lag p50 s"].failed, judged["lag p50 s"]
