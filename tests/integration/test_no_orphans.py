"""Nothing outlives its parent: `livedub up` and a pytest session holding a stack, stopped by SIGTERM (what `timeout`
and CI runners send) or killed by SIGKILL, leave no process of their tree behind (media server and its nginx, STS,
media-service and its stream worker, ffmpeg). Processes are found in /proc: the tree is recorded while it runs (an
orphan is re-parented, so it could no longer be found from its old parent) and each recorded process (pid and start
time) must be gone within a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from livedub.analysis import PatternSpec, write_pattern
from livedub.stack import FilePublisher, free_ports, wait_for_stream

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
Proc = tuple[int, str]  # pid, start time (a reused pid is another process)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()  # state ppid pgrp session ... starttime (index 19)


def descendants(root: int) -> set[Proc]:
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            starts[int(entry.name)] = fields[19]
    found: set[Proc] = set()
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.add((pid, starts[pid]))
        todo += children.get(pid, [])
    return found


def still_alive(procs: set[Proc]) -> set[Proc]:
    alive = set()
    for pid, start in procs:
        fields = _stat_fields(pid)
        if fields and fields[0] != "Z" and fields[19] == start:
            alive.add((pid, start))
    return alive


def wait_gone(procs: set[Proc], within_s: float) -> set[Proc]:
    deadline = time.monotonic() + within_s
    while still_alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return still_alive(procs)


def cmdlines(procs: set[Proc]) -> list[str]:
    lines = []
    for pid, _ in sorted(procs):
        try:
            lines.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
        except OSError:
            lines.append(f"{pid}: ?")
    return lines


def wait_for_line(proc: subprocess.Popen[str], marker: str, within_s: float) -> list[str]:
    """Lines of `proc`'s stdout up to the one holding `marker` (a reader thread keeps draining it after)."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if marker in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(within_s), f"{marker!r} not printed within {within_s}s:\n{''.join(seen)[-3000:]}"
    return seen


def test_a_spawned_child_dies_with_its_parent_even_when_the_spawning_thread_has_ended() -> None:
    """PR_SET_PDEATHSIG follows the forking thread: `spawn` forks from a thread that lives as long as the process."""
    script = textwrap.dedent(
        """
        import threading, time
        from livedub.lifetime import spawn
        children = []
        thread = threading.Thread(target=lambda: children.append(spawn(["sleep", "600"])))
        thread.start(); thread.join()
        print(children[0].pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    procs = descendants(parent.pid)
    assert child in {pid for pid, _ in procs}, "the child died with the thread that started it"
    parent.kill()
    parent.wait()
    assert not wait_gone(procs, 3), cmdlines(procs)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_livedub_up_leaves_nothing_behind(sig: signal.Signals, tmp_path: Path) -> None:
    rtmp, stat, sts, media = free_ports(4)
    argv = [sys.executable, "-m", "livedub.cli", "up", "--echo", "--delay-ms", "2000"]
    argv += ["--rtmp-port", str(rtmp), "--stat-port", str(stat), "--sts-port", str(sts), "--media-port", str(media)]
    env = {**os.environ, "LIVEDUB_HOME": str(tmp_path / "home"), "MEDIA_HLS_DIR": str(tmp_path / "hls")}
    up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    publisher = None
    try:
        wait_for_line(up, "livedub is up", within_s=120)
        # A stream in flight, so the media-service has a worker process and nginx has clients.
        source = write_pattern(tmp_path / "av.flv", PatternSpec(duration_s=10.0))
        url = f"rtmp://127.0.0.1:{rtmp}/live/orphans/in"
        publisher = FilePublisher(source, url, tmp_path / "publisher.log", loop=True).start()
        assert wait_for_stream(f"http://127.0.0.1:{stat}/stat", "orphans/out", timeout=60) is not None
        tree = descendants(up.pid)
        names = " ".join(cmdlines(tree))
        assert "nginx" in names and "media-server" in names and "spawn_main" in names, names  # spawn_main: worker
        up.send_signal(sig)
        up.wait(timeout=30)
        left = wait_gone(tree, 10)
        assert not left, f"left behind after {sig.name}: {cmdlines(left)}"
    finally:
        if up.poll() is None:
            up.kill()
        if publisher is not None:
            publisher.stop()


TINY_SESSION = """
import time
from pathlib import Path

import pytest

from livedub.stack import Stack, StackConfig

MARKS = Path(__file__).parent


@pytest.fixture
def stack(tmp_path):
    with Stack(StackConfig.with_free_ports(sts_pipeline="echo", log_dir=tmp_path / "logs")) as running:
        yield running
    (MARKS / "torn-down").write_text("yes")


def test_holds_a_stack(stack):
    (MARKS / "ready").write_text("yes")
    time.sleep(600)
"""


def test_a_pytest_session_holding_a_stack_tears_it_down_on_sigterm(tmp_path: Path) -> None:
    """The E2E conftest's plugin (loaded with -p) makes SIGTERM a clean stop: fixtures are torn down."""
    (tmp_path / "test_tiny.py").write_text(TINY_SESSION)
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "LIVEDUB_HOME": str(tmp_path / "home")}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "e2e.conftest", "-p", "no:cacheprovider", str(tmp_path)]
    argv += ["--basetemp", str(tmp_path / "inner")]  # not the outer session's numbered temp dirs
    session = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "ready").exists():
            assert session.poll() is None and time.monotonic() < deadline, session.communicate()[0][-3000:]
            time.sleep(0.2)
        tree = descendants(session.pid)
        assert len(tree) >= 4, cmdlines(tree)  # media server, nginx, STS, media-service
        session.send_signal(signal.SIGTERM)
        output = session.communicate(timeout=30)[0]
        assert (tmp_path / "torn-down").exists(), f"the stack fixture was not torn down:\n{output[-3000:]}"
        left = wait_gone(tree, 5)
        assert not left, f"left behind: {cmdlines(left)}"
    finally:
        if session.poll() is None:
            session.kill()
