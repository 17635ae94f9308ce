"""E2E fixtures: the services as real processes, the test fixture published over RTMP, the STS monitor room.

* `e2e_services` (session): `ServicesManager` -- media server, STS (real models) and media-service on free ports,
  plus a second stack whose STS runs in echo mode for the flash/beep check. Waits for every /health, stops
  everything at the end and fails the session if any process is left behind.
* `test_fixture` (session): the 60 s speech-over-music fixture (built once into the cache by
  `livedub.fixture_music`), with its timeline of prompts and pauses.
* `stream_id`: a fresh stream id per test.
* `sts_monitor`: a Socket.IO client in the STS monitor room of `stream_id`, connected before publishing.
* `output_recorder`: ffmpeg recording `live/<stream_id>/out` from before it exists until it ends.
* `publish_test_fixture`: ffmpeg publishing the fixture in real time (`-re`) to `live/<stream_id>/in`.

When a test fails, the tail of every service's log is attached to its report.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import config
from e2e.helpers.services_manager import ServicesManager
from e2e.helpers.socketio_monitor import StsMonitor
from e2e.helpers.stream_publisher import Publication, StreamRecorder, publish_file
from livedub.lifetime import interrupt_on_termination
from livedub.paths import runtime_dir
from livedub.stack import ServiceError, leftover_processes
from livedub.testing.fixture_music import MusicFixture, ensure_music_fixture

SESSION_STARTED = time.monotonic()
_SERVICES: list[ServicesManager] = []


def pytest_configure() -> None:
    # pytest dies of SIGTERM (what `timeout` and CI runners send) without tearing fixtures down: as KeyboardInterrupt
    # it stops the session cleanly, and `e2e_services` stops both stacks. (A SIGKILL is covered by PR_SET_PDEATHSIG.)
    interrupt_on_termination()


@pytest.fixture(scope="session")
def e2e_log_dir() -> Path:
    """Logs and recordings of this run, kept for debugging in `$LIVEDUB_HOME/run/e2e-<time>` (last 3 runs)."""
    root = runtime_dir()
    old_runs = sorted(root.glob("e2e-2*"))
    for old in old_runs[: max(0, len(old_runs) - 2)]:
        shutil.rmtree(old, ignore_errors=True)
    path = root / f"e2e-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    path.mkdir(parents=True)
    print(f"E2E logs and recordings: {path}", flush=True)
    return path


@pytest.fixture(scope="session")
def test_fixture() -> MusicFixture:
    return ensure_music_fixture()


@pytest.fixture(scope="session")
def e2e_services(e2e_log_dir: Path) -> Iterator[ServicesManager]:
    manager = ServicesManager(e2e_log_dir)
    _SERVICES.append(manager)
    try:
        manager.start()
    except ServiceError as exc:
        pytest.fail(f"services did not start: {exc}", pytrace=False)
    except KeyboardInterrupt:  # stopped (Ctrl-C, SIGTERM) while the models warm up
        manager.stop()
        raise
    yield manager
    manager.stop()
    left = manager.orphans()
    assert not left, f"processes left behind after stopping the services: {left}"
    # Publishers and recorders (ffmpeg) of every test are gone too.
    stray = leftover_processes()
    assert not stray, f"processes left behind by the E2E tests: {stray}"


@pytest.fixture
def stream_id() -> str:
    return f"e2e{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sts_monitor(e2e_services: ServicesManager, stream_id: str) -> Iterator[StsMonitor]:
    monitor = StsMonitor(e2e_services.main.sts_url, stream_id).start()
    assert monitor.subscribed and monitor.subscribed.get("subscribed"), monitor.subscribed
    yield monitor
    monitor.stop()


@pytest.fixture
def output_recorder(e2e_services: ServicesManager, stream_id: str, e2e_log_dir: Path) -> Iterator[StreamRecorder]:
    stack = e2e_services.main
    recorder = StreamRecorder(
        stack.output_url(stream_id),
        e2e_log_dir / f"{stream_id}-out.flv",
        e2e_log_dir / f"recorder-{stream_id}.log",
        stat_url=stack.stat_url,
    ).start()
    yield recorder
    recorder.stop()


@pytest.fixture
def publish_test_fixture(
    e2e_services: ServicesManager,
    test_fixture: MusicFixture,
    stream_id: str,
    sts_monitor: StsMonitor,
    output_recorder: StreamRecorder,
    e2e_log_dir: Path,
) -> Iterator[Publication]:
    """Publishes once the monitor and the recorder are in place (they are fixtures it depends on)."""
    publication = publish_file(e2e_services.main, stream_id, test_fixture.path, e2e_log_dir)
    yield publication
    publication.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _SERVICES:
        manager = _SERVICES[-1]
        report.sections.append(("e2e timeline", "\n".join(manager.notes)))
        for name, text in manager.logs(lines=60).items():
            report.sections.append((f"log: {name}", text))


def session_elapsed_s() -> float:
    return time.monotonic() - SESSION_STARTED


__all__ = ["config", "session_elapsed_s"]
