"""WorkerManager with fake runners: one worker per stream, the stream limit, crash isolation, stop, shutdown."""

from __future__ import annotations

import asyncio

import pytest
from media_fakes import FakeFleet, make_manager, wait_running

from livedub.media.service.manager import WorkerManager

pytestmark = pytest.mark.unit


async def wait_until_done(manager: WorkerManager, stream_id: str) -> None:
    handle = manager.get(stream_id)
    assert handle is not None and handle.task is not None
    await asyncio.wait_for(asyncio.shield(handle.task), 2)


def error_count(manager: WorkerManager, stream_id: str, kind: str) -> float:
    value = manager.metrics.registry.get_sample_value(
        "media_service_worker_errors_total", {"stream_id": stream_id, "type": kind}
    )
    return value or 0.0


async def test_one_worker_per_stream_and_repeated_start_is_a_no_op() -> None:
    fleet = FakeFleet()
    manager = make_manager(fleet)
    assert (await manager.start_stream("a")).accepted
    await wait_running(fleet.runners["a"])
    first = fleet.runners["a"]
    again = await manager.start_stream("a")
    assert again.accepted and "already" in again.reason
    assert fleet.runners["a"] is first
    assert fleet.clients["a"].started
    listed = manager.list_streams()
    assert [s["stream_id"] for s in listed] == ["a"]
    assert listed[0]["state"] == "running" and listed[0]["lag_s"] == 1.5 and listed[0]["fragments"] == 7
    await manager.shutdown()


async def test_stream_limit_refuses_the_excess_with_a_reason_and_frees_slots_on_stop() -> None:
    fleet = FakeFleet()
    manager = make_manager(fleet, MAX_CONCURRENT_STREAMS=2)
    assert (await manager.start_stream("a")).accepted
    assert (await manager.start_stream("b")).accepted
    refused = await manager.start_stream("c")
    assert not refused.accepted
    assert "limit" in refused.reason and "2" in refused.reason
    assert "c" not in fleet.runners
    assert error_count(manager, "c", "stream_limit") == 1

    assert await manager.stop_stream("a")
    await wait_until_done(manager, "a")
    assert (await manager.start_stream("c")).accepted
    await manager.shutdown()


async def test_a_crashing_worker_is_isolated_marked_failed_and_counted() -> None:
    fleet = FakeFleet(crash={"bad"})
    manager = make_manager(fleet, MAX_CONCURRENT_STREAMS=2)
    assert (await manager.start_stream("good")).accepted
    assert (await manager.start_stream("bad")).accepted
    await wait_until_done(manager, "bad")

    states = {s["stream_id"]: s for s in manager.list_streams()}
    assert states["bad"]["state"] == "failed"
    assert "exploded" in states["bad"]["error"]
    assert states["good"]["state"] == "running"
    assert fleet.clients["bad"].closed
    assert error_count(manager, "bad", "worker_crash") == 1
    assert manager.active_count() == 1
    # The failed worker holds no slot: another stream still fits under the limit of 2.
    assert (await manager.start_stream("third")).accepted
    # Unpublishing the failed stream forgets it; the good one is untouched.
    assert await manager.stop_stream("bad")
    assert manager.get("bad") is None
    assert fleet.runners["good"].stop_calls == 0
    await manager.shutdown()


async def test_a_worker_that_ends_failed_stays_listed_as_failed_until_unpublished() -> None:
    fleet = FakeFleet(gives_up={"nocodec"})
    manager = make_manager(fleet)
    await manager.start_stream("nocodec")
    await wait_until_done(manager, "nocodec")
    [entry] = manager.list_streams()
    assert entry["state"] == "failed" and entry["error"]
    assert manager.active_count() == 0
    assert await manager.stop_stream("nocodec")
    assert manager.list_streams() == []


async def test_stop_stream_stops_the_runner_closes_the_client_and_forgets_the_worker() -> None:
    fleet = FakeFleet()
    manager = make_manager(fleet)
    await manager.start_stream("a")
    handle = manager.get("a")
    assert await manager.stop_stream("a")
    await wait_until_done(manager, "a")
    assert fleet.runners["a"].stop_calls == 1
    assert fleet.clients["a"].closed
    assert manager.get("a") is None
    assert handle is not None and handle.state == "stopped"
    assert not await manager.stop_stream("a")


async def test_republish_while_the_old_worker_still_drains_starts_at_once_and_publishes_after_it() -> None:
    fleet = FakeFleet(stubborn={"a"})
    manager = make_manager(fleet)
    await manager.start_stream("a")
    old_handle = manager.get("a")
    old = fleet.runners["a"]
    await manager.stop_stream("a")
    fleet.stubborn.clear()
    decision = await manager.start_stream("a")  # answered at once: the media server waits for this hook
    assert decision.accepted and "after" in decision.reason
    assert fleet.runners["a"] is not old
    new_handle = manager.get("a")
    assert new_handle is not None and new_handle.predecessor is old_handle and new_handle.active
    assert old_handle is not None and old_handle.active  # still playing out: not cut short
    # the old one ignores stop(): cancelled after stop_timeout_s, then the new one has the output
    await asyncio.sleep(0.8)
    assert not old_handle.active and new_handle.predecessor is None
    assert manager.active_count() == 1
    await manager.shutdown()


async def test_a_factory_error_refuses_the_stream_without_breaking_the_manager() -> None:
    fleet = FakeFleet()

    def broken_runner(*args: object) -> object:
        raise ValueError("no codec")

    manager = make_manager(fleet)
    manager._runner_factory = broken_runner  # type: ignore[assignment]
    decision = await manager.start_stream("x")
    assert not decision.accepted and "no codec" in decision.reason
    manager._runner_factory = fleet.runner
    assert (await manager.start_stream("y")).accepted
    await manager.shutdown()


async def test_shutdown_stops_every_worker_even_one_that_ignores_stop() -> None:
    fleet = FakeFleet(stubborn={"stuck"})
    manager = make_manager(fleet)
    await manager.start_stream("a")
    await manager.start_stream("stuck")
    await wait_running(fleet.runners["stuck"])
    await manager.shutdown()
    assert manager.active_count() == 0
    assert fleet.clients["a"].closed and fleet.clients["stuck"].closed
    assert not (await manager.start_stream("late")).accepted
