"""Issue 9, hardening items 1 and 2, with real peers on another host (a network namespace joined by a veth pair):

1. The media-service binds loopback by default; with `--public` it is reachable, but a forged hook from another
   host is refused (on_publish would start phantom workers, on_publish_done stop a live stream) unless it carries
   MEDIA_HOOK_SECRET, and /v1/streams and /metrics need MEDIA_API_TOKEN. Loopback hooks (the embedded nginx-rtmp)
   need nothing.
2. Without PUBLISH_KEY only loopback may publish (the RTMP port is open to all: nginx-rtmp's on_publish hook decides
   from the publisher's address); with one, a publisher on another host gets in with `?key=`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from netns_kit import TwoHosts, two_hosts

from livedub.mediaserver.nginx import RTMP_MODULE
from livedub.stack import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl"),
]


@pytest.fixture
def hosts() -> Iterator[TwoHosts]:
    yield from two_hosts()


MEDIA_PORT = 8080  # a fresh namespace: every port is free
HOOK_SECRET, API_TOKEN = "hook-s3cret", "api-t0ken"
ACCESS_SETTINGS = {"MEDIA_HOST", "PUBLISH_KEY", "MEDIA_HOOK_SECRET", "MEDIA_API_TOKEN"}


@contextmanager
def in_namespace(hosts: TwoHosts, ns: str, argv: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    # The caller's access settings must not leak in: each test says which it runs with.
    base = {k: v for k, v in os.environ.items() if k not in ACCESS_SETTINGS}
    with log.open("ab") as out:
        process = subprocess.Popen(hosts.argv(ns, argv), env={**base, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_http(hosts: TwoHosts, url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if hosts.curl(hosts.server_ns, url)[0] == 200:
            return
        time.sleep(0.2)
    pytest.fail(f"{url} did not come up within {timeout_s} s")


def media_service(hosts: TwoHosts, tmp_path: Path, *args: str, **env: str) -> Iterator[None]:
    settings = {
        "MEDIA_PORT": str(MEDIA_PORT),
        "STS_SERVICE_URL": "http://127.0.0.1:9",  # no STS: workers pass the original audio through
        "PUBLISH_JOIN_WAIT_MS": "0",
        **env,
    }
    argv = [sys.executable, "-m", "livedub.cli", "media", *args]
    return in_namespace(hosts, hosts.server_ns, argv, settings, tmp_path / "media.log")


def streams(hosts: TwoHosts) -> list[str]:
    code, body = hosts.curl(hosts.server_ns, f"http://127.0.0.1:{MEDIA_PORT}/v1/streams")
    assert code == 200, body
    return [s["stream_id"] for s in json.loads(body)["streams"]]


def test_media_service_binds_loopback_unless_public(hosts: TwoHosts, tmp_path: Path) -> None:
    with media_service(hosts, tmp_path):
        wait_http(hosts, f"http://127.0.0.1:{MEDIA_PORT}/health")
        code, _ = hosts.curl(hosts.other_ns, f"http://{hosts.server_ip}:{MEDIA_PORT}/health")
        assert code == 0  # nothing listens on the host's network address


def test_hooks_and_control_from_another_host(hosts: TwoHosts, tmp_path: Path) -> None:
    remote = f"http://{hosts.server_ip}:{MEDIA_PORT}"
    local = f"http://127.0.0.1:{MEDIA_PORT}"
    form = ["-d", "call=publish", "-d", "app=live", "-d", "addr=127.0.0.1", "-d", "type=live"]
    ready = ["-H", "Content-Type: application/json", "-d", '{"path": "live/cam/in"}']
    env = {"MEDIA_HOOK_SECRET": HOOK_SECRET, "MEDIA_API_TOKEN": API_TOKEN, "MAX_CONCURRENT_STREAMS": "2"}
    with media_service(hosts, tmp_path, "--public", **env):
        wait_http(hosts, f"{local}/health")
        assert hosts.curl(hosts.other_ns, f"{remote}/health")[0] == 200  # public, and /health is open

        # Forged hooks from the other host: refused, nothing starts.
        for name in ("p1/in", "p2/in", "p3/in"):
            code, body = hosts.curl(hosts.other_ns, f"{remote}/v1/nginx/on_publish", *form, "-d", f"name={name}")
            assert code == 403, body
        assert hosts.curl(hosts.other_ns, f"{remote}/v1/mediamtx/events/ready", *ready)[0] == 403
        assert streams(hosts) == []

        # Control endpoints: a token from the other host, nothing on loopback.
        assert hosts.curl(hosts.other_ns, f"{remote}/v1/streams")[0] == 401
        assert hosts.curl(hosts.other_ns, f"{remote}/metrics")[0] == 401
        bearer = ["-H", f"Authorization: Bearer {API_TOKEN}"]
        assert hosts.curl(hosts.other_ns, f"{remote}/v1/streams", *bearer)[0] == 200

        # The media server's hooks: loopback (embedded nginx-rtmp) or the secret (MediaMTX on another host).
        code, body = hosts.curl(hosts.server_ns, f"{local}/v1/nginx/on_publish", *form, "-d", "name=live1/in")
        assert code == 200, body
        secret = ["-H", f"X-Livedub-Hook-Secret: {HOOK_SECRET}"]
        assert hosts.curl(hosts.other_ns, f"{remote}/v1/mediamtx/events/ready", *ready, *secret)[0] == 200
        assert sorted(streams(hosts)) == ["cam", "live1"]

        # A forged on_publish_done cannot stop a live stream; the media server's can.
        done = ["-d", "call=publish_done", "-d", "app=live", "-d", "name=live1/in"]
        assert hosts.curl(hosts.other_ns, f"{remote}/v1/nginx/on_publish_done", *done)[0] == 403
        assert "live1" in streams(hosts)
        code, body = hosts.curl(hosts.other_ns, f"{remote}/v1/nginx/on_publish_done?hook_secret={HOOK_SECRET}", *done)
        assert code == 200 and json.loads(body)["stopped"], body


# ------------------------------------------------------------------ publishing (item 2)

needs_nginx = pytest.mark.skipif(
    not RTMP_MODULE.exists() or shutil.which("nginx") is None or shutil.which("ffmpeg") is None,
    reason="needs nginx with libnginx-mod-rtmp and ffmpeg",
)


def publish_from(hosts: TwoHosts, ns: str, host: str, rtmp_port: int, playpath: str) -> int:
    """Publish 2 s of test picture and tone; ffmpeg's exit status (non-zero when the server refuses)."""
    argv = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:d=2",
            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:d=2",
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac",
            "-f", "flv", "-rtmp_app", "live", "-rtmp_playpath", playpath,
            f"rtmp://{host}:{rtmp_port}/live"]  # fmt: skip
    return hosts.run(ns, argv, timeout=60).returncode


@needs_nginx
def test_without_a_publish_key_only_loopback_may_publish(hosts: TwoHosts, tmp_path: Path) -> None:
    rtmp_port, stat_port = free_port(), free_port()  # distinct nginx work directories from any other run
    server = [sys.executable, "-m", "livedub.cli", "media-server", "--rtmp-port", str(rtmp_port),
              "--http-port", str(stat_port), "--bind", "0.0.0.0",
              "--hooks-url", f"http://127.0.0.1:{MEDIA_PORT}"]  # fmt: skip
    media_env = {"RTMP_BASE_URL": f"rtmp://127.0.0.1:{rtmp_port}/live",
                 "MEDIA_SERVER_STAT_URL": f"http://127.0.0.1:{stat_port}/stat"}  # fmt: skip
    with in_namespace(hosts, hosts.server_ns, server, {}, tmp_path / "nginx.log"):
        wait_http(hosts, f"http://127.0.0.1:{stat_port}/health")
        with media_service(hosts, tmp_path, **media_env):
            wait_http(hosts, f"http://127.0.0.1:{MEDIA_PORT}/health")
            # The RTMP port is open to the other host, but with no PUBLISH_KEY its publisher is refused.
            assert publish_from(hosts, hosts.other_ns, hosts.server_ip, rtmp_port, "far/in") != 0
            assert publish_from(hosts, hosts.other_ns, hosts.server_ip, rtmp_port, "far/in?key=") != 0
            assert "far" not in streams(hosts)
            # A loopback publisher needs no key.
            assert publish_from(hosts, hosts.server_ns, "127.0.0.1", rtmp_port, "near/in") == 0
        with media_service(hosts, tmp_path, PUBLISH_KEY="k3y", **media_env):
            wait_http(hosts, f"http://127.0.0.1:{MEDIA_PORT}/health")
            assert publish_from(hosts, hosts.other_ns, hosts.server_ip, rtmp_port, "far/in?key=wrong") != 0
            assert publish_from(hosts, hosts.other_ns, hosts.server_ip, rtmp_port, "far/in?key=k3y") == 0
