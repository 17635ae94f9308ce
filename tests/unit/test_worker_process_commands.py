"""The worker process's command thread: a parent's command that comes after the run ended is dropped quietly."""

from __future__ import annotations

import asyncio

import pytest

from livedub.media.service.worker_process import _call_on

pytestmark = pytest.mark.unit


def test_a_command_runs_on_an_open_loop_and_one_for_a_closed_loop_is_refused_without_raising() -> None:
    loop = asyncio.new_event_loop()
    ran: list[str] = []
    try:
        assert _call_on(loop, lambda: ran.append("stop"))
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == ["stop"]
    finally:
        loop.close()
    assert not _call_on(loop, lambda: ran.append("late stop"))  # the run ended: "Event loop is closed" is not raised
    assert ran == ["stop"]
