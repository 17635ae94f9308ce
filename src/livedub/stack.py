"""Run the whole livedub stack as real child processes: media server, STS service, media-service.

`livedub up` starts the stack and waits for your own stream (OBS or ffmpeg); `livedub demo` and the E2E suite use
the same `Stack` class to start it on chosen (or free) ports, wait for every health endpoint, and stop it cleanly.

Every service runs in its own session (process group), so stopping it also stops anything it spawned, and
`Stack.orphans()` can prove that nothing is left behind.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from livedub.lifetime import spawn
from livedub.mediaserver.nginx import port_open
from livedub.mediaserver.stat import RtmpStream, parse_rtmp_stat
from livedub.mediaserver.urls import ffmpeg_rtmp_args
from livedub.paths import runtime_dir

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports, in ascending order."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, ""


# ---------------------------------------------------------------------------------------------------- processes


def _session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is `sid`."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may contain spaces/parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 4 and int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


_STARTED_SESSIONS: set[int] = set()  # every session a ManagedProcess of this Python process started


def _session_processes(sids: Iterable[int]) -> list[str]:
    """`pid: command line` of every live process in the sessions `sids`."""
    left: list[str] = []
    for sid in sids:
        for pid in _session_members(sid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = "?"
            left.append(f"{pid}: {cmd.strip()}")
    return left


def _stop_started_sessions() -> None:
    """At exit: whatever a ManagedProcess started and nobody stopped goes too (TERM, then KILL)."""
    if os.getpid() != _OWNER_PID:  # a forked copy inherits this hook but owns none of the sessions
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [sid for sid in _STARTED_SESSIONS if _session_members(sid)]
        for sid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(sid, sig)
        deadline = time.monotonic() + 3
        while alive and any(_session_members(sid) for sid in alive) and time.monotonic() < deadline:
            time.sleep(0.1)


_OWNER_PID = os.getpid()
atexit.register(_stop_started_sessions)


def leftover_processes() -> list[str]:
    """Processes still alive in any session a `ManagedProcess` of this process started (stack, ffmpeg, ...)."""
    return _session_processes(sorted(_STARTED_SESSIONS))


class ManagedProcess:
    """A child process in its own session, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.sid: int | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            # Tied to this process: the kernel stops it if we die without stopping it (SIGKILL, a crash).
            self.process = spawn(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.sid = self.process.pid
        _STARTED_SESSIONS.add(self.sid)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return self.process.poll() if self.process else None

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def members(self) -> list[int]:
        return _session_members(self.sid) if self.sid else []

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Ask politely (`sig` to the leader), then TERM the whole session, then KILL it."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_session(signal.SIGTERM)
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    self._signal_session(signal.SIGKILL)
                    proc.wait(timeout=5)
        # Whatever the leader left behind in its session goes too.
        deadline = time.monotonic() + 3
        while self.members() and time.monotonic() < deadline:
            self._signal_session(signal.SIGTERM)
            time.sleep(0.1)
        if self.members():
            self._signal_session(signal.SIGKILL)
            time.sleep(0.2)

    def _signal_session(self, sig: int) -> None:
        if self.sid is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.sid, sig)


class ServiceError(RuntimeError):
    """A service did not start or became unhealthy; carries the tail of its log."""


# ---------------------------------------------------------------------------------------------------- the stack


@dataclass
class StackConfig:
    host: str = "127.0.0.1"  # where the stack's URLs point (the services bind as their settings say)
    rtmp_port: int = 1935
    rtmp_http_port: int = 8089
    sts_port: int = 3000
    media_port: int = 8080
    source_language: str = "en"
    target_language: str = "es"
    # Several targets at once (WORKER_TARGET_LANGUAGES); None: `target_language` alone. The first is on `out`.
    target_languages: list[str] | None = None
    # None = the media-service's defaults (phrase streaming, its delay line): `livedub up`, the demo and the E2E
    # run what a user gets.
    segment_policy: str | None = None
    segment_duration_ms: int | None = None
    output_delay_ms: int | None = None
    sts_pipeline: str = "dub"  # dub | echo
    start_sts: bool = True  # False: use `sts_url` (an STS that runs elsewhere)
    sts_url: str | None = None
    sts_env: dict[str, str] = field(default_factory=dict)
    media_env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    sts_health_timeout_s: float = 300.0
    health_timeout_s: float = 30.0
    # True: RTMP and the media-service on 0.0.0.0; other machines publish with PUBLISH_KEY and reach /v1/streams and
    # /metrics with MEDIA_API_TOKEN (each generated when the environment has none).
    bind_public: bool = False
    # UDP port of the SRT gateway (publish and read, MediaMTX's stream ids); None: the stack offers no SRT.
    srt_port: int | None = None

    @classmethod
    def with_free_ports(cls, **kwargs: object) -> StackConfig:
        rtmp, stat, sts, media, srt = free_ports(5)
        defaults: dict[str, object] = {
            "rtmp_port": rtmp, "rtmp_http_port": stat, "sts_port": sts, "media_port": media, "srt_port": srt,
        }  # fmt: skip
        defaults.update(kwargs)
        return cls(**defaults)  # type: ignore[arg-type]


class Stack:
    """Media server + STS + media-service, as child processes. Context manager: `with Stack(cfg) as stack: ...`."""

    def __init__(self, cfg: StackConfig | None = None, progress: Progress = _quiet) -> None:
        self.cfg = cfg or StackConfig()
        self.progress = progress
        self.log_dir = self.cfg.log_dir or runtime_dir() / f"stack-{os.getpid()}-{self.cfg.media_port}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.services: dict[str, ManagedProcess] = {}
        self._sessions: list[int] = []
        # Secrets of a public stack: without a publish key nobody but loopback could publish.
        self.publish_key = os.environ.get("PUBLISH_KEY") or secrets.token_urlsafe(12)
        self.api_token = os.environ.get("MEDIA_API_TOKEN") or secrets.token_urlsafe(24)
        # SRT publishers give the publish key as passphrase when one is set (public, or PUBLISH_KEY given).
        self.srt_passphrase = self.publish_key if self.cfg.bind_public or os.environ.get("PUBLISH_KEY") else ""

    # URLs ---------------------------------------------------------------------------------------------------
    @property
    def rtmp_base(self) -> str:
        return f"rtmp://{self.cfg.host}:{self.cfg.rtmp_port}/live"

    def input_url(self, stream_id: str) -> str:
        return f"{self.rtmp_base}/{stream_id}/in"

    def output_url(self, stream_id: str, language: str | None = None) -> str:
        """`out` (the first target), or `out/<language>`."""
        return f"{self.rtmp_base}/{stream_id}/out" + (f"/{language}" if language else "")

    def srt_url(self, mode: str, path: str) -> str:
        """`srt://host:port?streamid=<mode>:live/<path>`, the passphrase added for publishers when one is set."""
        url = f"srt://{self.cfg.host}:{self.cfg.srt_port}?streamid={mode}:live/{path}"
        return url + (f"&passphrase={self.srt_passphrase}" if mode == "publish" and self.srt_passphrase else "")

    def srt_input_url(self, stream_id: str) -> str:
        return self.srt_url("publish", f"{stream_id}/in")

    def srt_output_url(self, stream_id: str, language: str | None = None) -> str:
        return self.srt_url("read", f"{stream_id}/out" + (f"/{language}" if language else ""))

    @property
    def targets(self) -> list[str]:
        return list(self.cfg.target_languages or [self.cfg.target_language])

    def hls_url(self, stream_id: str) -> str:
        """The stream's HLS presentation (original + every target, captions), served by the media-service."""
        return f"http://{self.cfg.host}:{self.cfg.media_port}/hls/{stream_id}/master.m3u8"

    def captions_url(self, stream_id: str) -> str:
        return f"http://{self.cfg.host}:{self.cfg.media_port}/v1/streams/{stream_id}/captions"

    @property
    def stat_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.rtmp_http_port}/stat"

    @property
    def sts_url(self) -> str:
        if not self.cfg.start_sts and self.cfg.sts_url:
            return self.cfg.sts_url.rstrip("/")
        return f"http://127.0.0.1:{self.cfg.sts_port}"

    @property
    def media_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.media_port}"

    # processes ---------------------------------------------------------------------------------------------
    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(extra)
        return env

    def _livedub(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "livedub.cli", *args]

    def _spec(self) -> list[tuple[str, list[str], dict[str, str], str, float]]:
        cfg = self.cfg
        specs: list[tuple[str, list[str], dict[str, str], str, float]] = []
        bind = "0.0.0.0" if cfg.bind_public else "127.0.0.1"
        specs.append(
            (
                "media-server",
                self._livedub(
                    "media-server",
                    "--rtmp-port",
                    str(cfg.rtmp_port),
                    "--http-port",
                    str(cfg.rtmp_http_port),
                    "--bind",
                    bind,
                    "--hooks-url",
                    self.media_url,
                    *(["--srt-port", str(cfg.srt_port)] if cfg.srt_port else []),
                ),
                self._env({"SRT_PASSPHRASE": self.srt_passphrase}),
                f"http://127.0.0.1:{cfg.rtmp_http_port}/health",
                cfg.health_timeout_s,
            )
        )
        if cfg.start_sts:
            sts_env = {"STS_HOST": "127.0.0.1", "STS_PORT": str(cfg.sts_port), "STS_PIPELINE": cfg.sts_pipeline}
            sts_env.update(cfg.sts_env)
            specs.append(
                ("sts", self._livedub("sts"), self._env(sts_env), f"{self.sts_url}/health", cfg.sts_health_timeout_s)
            )
        media_env = {
            "MEDIA_HOST": "127.0.0.1",
            "MEDIA_PORT": str(cfg.media_port),
            "RTMP_BASE_URL": f"rtmp://127.0.0.1:{cfg.rtmp_port}/live",
            "MEDIA_SERVER_STAT_URL": f"http://127.0.0.1:{cfg.rtmp_http_port}/stat",
            "STS_SERVICE_URL": self.sts_url,
            "WORKER_SOURCE_LANGUAGE": cfg.source_language,
            "WORKER_TARGET_LANGUAGE": self.targets[0],
            "WORKER_TARGET_LANGUAGES": ",".join(self.targets),
        }
        if cfg.bind_public:
            media_env.update(
                {"MEDIA_HOST": "0.0.0.0", "PUBLISH_KEY": self.publish_key, "MEDIA_API_TOKEN": self.api_token}
            )
        for name, value in (
            ("SEGMENT_POLICY", cfg.segment_policy),
            ("SEGMENT_DURATION_MS", cfg.segment_duration_ms),
            ("OUTPUT_DELAY_MS", cfg.output_delay_ms),
        ):
            if value is not None:
                media_env[name] = str(value)
        media_env.update(cfg.media_env)
        specs.append(
            ("media", self._livedub("media"), self._env(media_env), f"{self.media_url}/health", cfg.health_timeout_s)
        )
        return specs

    def start(self) -> Stack:
        """Start every service and wait until all are healthy. Raises ServiceError (after stopping) on failure."""
        specs = self._spec()
        busy = [p for p in self._ports() if port_open(p)]
        if busy:
            raise ServiceError(f"port(s) {busy} already in use; pick others (see --help)")
        try:
            for name, argv, env, _, _ in specs:
                self.progress(f"starting {name}")
                proc = ManagedProcess(name, argv, self.log_dir / f"{name}.log", env=env).start()
                self.services[name] = proc
                if proc.sid is not None:
                    self._sessions.append(proc.sid)
            for name, _, _, health, timeout in specs:
                self._wait_healthy(name, health, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ports(self) -> list[int]:
        ports = [self.cfg.rtmp_port, self.cfg.rtmp_http_port, self.cfg.media_port]
        if self.cfg.start_sts:
            ports.append(self.cfg.sts_port)
        return ports

    def _wait_healthy(self, name: str, url: str, timeout: float) -> None:
        proc = self.services[name]
        start = time.monotonic()
        last_note = start
        while True:
            if not proc.running():
                raise ServiceError(f"{name} exited with code {proc.returncode()}:\n{proc.tail(40)}")
            status, _ = http_get(url, timeout=2)
            if status == 200:
                self.progress(f"{name} healthy after {time.monotonic() - start:.1f}s")
                return
            now = time.monotonic()
            if now - start > timeout:
                raise ServiceError(f"{name} not healthy at {url} after {timeout:.0f}s:\n{proc.tail(40)}")
            if now - last_note > 15:
                self.progress(f"waiting for {name} ({url} -> {status or 'no answer'}, {now - start:.0f}s)")
                last_note = now
            time.sleep(0.25)

    def check_alive(self) -> None:
        """Raise ServiceError if a service has died."""
        for name, proc in self.services.items():
            if not proc.running():
                raise ServiceError(f"{name} died with code {proc.returncode()}:\n{proc.tail(40)}")

    def stop(self) -> None:
        """Stop in reverse order: media-service (ends its workers), STS, media server."""
        for name in ("media", "sts", "media-server"):
            proc = self.services.get(name)
            if proc is not None:
                self.progress(f"stopping {name}")
                proc.stop(timeout=10)

    def orphans(self) -> list[str]:
        """Processes still alive in any session this stack started (should be none after stop())."""
        return _session_processes(self._sessions)

    def logs(self, lines: int = 80) -> dict[str, str]:
        return {name: proc.tail(lines) for name, proc in self.services.items()}

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------- RTMP stat


def rtmp_streams(stat_url: str) -> dict[str, RtmpStream]:
    status, body = http_get(stat_url)
    return parse_rtmp_stat(body) if status == 200 else {}


def wait_for_stream(
    stat_url: str, name: str, timeout: float, publishing: bool = True, poll: float = 0.1, with_codecs: bool = True
) -> RtmpStream | None:
    """Wait until `name` is (or, publishing=False, is no longer) published; the stream, or None on timeout.

    With `with_codecs`, a published stream counts once the server knows its codecs (its metadata arrived).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stream = rtmp_streams(stat_url).get(name)
        is_published = stream is not None and stream.publishing
        no_codecs = stream is not None and not (stream.video_codec or stream.audio_codec)
        if publishing and with_codecs and no_codecs:
            is_published = False
        if is_published == publishing:
            return stream if publishing else (stream or RtmpStream(name, False, 0, 0, None, None, None, None, None))
        time.sleep(poll)
    return None


# ---------------------------------------------------------------------------------------------------- ffmpeg


def publish_argv(path: Path, url: str, realtime: bool = True, loop: bool = False) -> list[str]:
    """ffmpeg publishing `path` to the RTMP `url`, streams copied; `realtime`: at the file's pace (`-re`)."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning"]
    if realtime:
        argv.append("-re")
    if loop:
        argv += ["-stream_loop", "-1"]
    return [*argv, "-i", str(path), "-c", "copy", "-f", "flv", *ffmpeg_rtmp_args(url), url]


class FilePublisher:
    """Publish a file over RTMP with ffmpeg, in real time (`-re`), copying its packets."""

    def __init__(self, path: Path, url: str, log_path: Path, realtime: bool = True, loop: bool = False) -> None:
        self.path = path
        self.url = url
        self.proc = ManagedProcess("publisher", publish_argv(path, url, realtime, loop), log_path)
        self.started_at: float | None = None

    def start(self) -> FilePublisher:
        self.proc.start()
        self.started_at = time.monotonic()
        return self

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc.process is not None
        return self.proc.process.wait(timeout=timeout)

    def running(self) -> bool:
        return self.proc.running()

    def stop(self) -> None:
        self.proc.stop(timeout=3, sig=signal.SIGINT)


def remux(src: Path, dst: Path) -> None:
    """Copy `src` into `dst` (container change only)."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-map", "0", "-c", "copy"]
        + (["-movflags", "+faststart"] if dst.suffix == ".mp4" else [])
        + [str(dst)],
        check=True,
    )


# ---------------------------------------------------------------------------------------------------- signals


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[threading.Event]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt (main thread), so one cleanup path handles all of them."""
    stopped = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stopped.set()
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield stopped
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------------------- livedub up


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--rtmp-port", type=int, default=int(env("RTMP_PORT", "1935")))
    parser.add_argument("--stat-port", type=int, default=int(env("RTMP_STAT_PORT", "8089")))
    parser.add_argument("--sts-port", type=int, default=int(env("STS_PORT", "3000")))
    parser.add_argument("--media-port", type=int, default=int(env("MEDIA_PORT", "8080")))
    parser.add_argument("--from", dest="source", default=env("WORKER_SOURCE_LANGUAGE", "en"), help="source language")
    parser.add_argument("--to", dest="target", default=env("WORKER_TARGET_LANGUAGE", "es"), help="target language")
    parser.add_argument(
        "--targets",
        default=env("WORKER_TARGET_LANGUAGES") or None,
        help="several target languages at once, comma-separated (es,fr): RTMP out/<lang> each, out = the first,"
        " one HLS presentation with all (WORKER_TARGET_LANGUAGES; default: --to alone)",
    )
    parser.add_argument(
        "--policy",
        choices=["fixed", "speech"],
        default=env("SEGMENT_POLICY"),
        help="segmentation policy (SEGMENT_POLICY; default: the media-service's, phrase streaming)",
    )
    parser.add_argument("--segment-ms", type=int, default=None, help="fragment length of the fixed policy")
    parser.add_argument(
        "--sts-url", default=None, help="use an STS service that runs elsewhere instead of starting one"
    )
    parser.add_argument("--echo", action="store_true", help="STS returns the original audio (no models; A/V tests)")
    delay = env("OUTPUT_DELAY_MS")
    parser.add_argument(
        "--delay-ms",
        type=int,
        default=int(delay) if delay else None,
        help="output delay line in ms (OUTPUT_DELAY_MS; default: the media-service's)",
    )


def config_from_args(args: argparse.Namespace, **extra: object) -> StackConfig:
    return StackConfig(
        rtmp_port=args.rtmp_port,
        rtmp_http_port=args.stat_port,
        sts_port=args.sts_port,
        media_port=args.media_port,
        source_language=args.source,
        target_language=targets_from_args(args)[0],
        target_languages=targets_from_args(args),
        segment_policy=args.policy,
        segment_duration_ms=args.segment_ms,
        output_delay_ms=args.delay_ms,
        sts_pipeline="echo" if args.echo else "dub",
        start_sts=args.sts_url is None,
        sts_url=args.sts_url,
        **extra,  # type: ignore[arg-type]
    )


def targets_from_args(args: argparse.Namespace) -> list[str]:
    """`--targets es,fr`, else `--to`."""
    listed = [code.strip().lower() for code in (getattr(args, "targets", None) or "").split(",") if code.strip()]
    return list(dict.fromkeys(listed)) or [args.target]


def output_lines(stack: Stack, stream_id: str, rtmp_host: str = "127.0.0.1") -> str:
    """How to watch each output: RTMP per language, the HLS presentation, the live captions."""
    urls = [("out", stack.output_url(stream_id))]
    urls += [(language, stack.output_url(stream_id, language)) for language in stack.targets]
    lines = []
    for name, url in urls:
        url = url.replace(f"//{stack.cfg.host}:", f"//{rtmp_host}:", 1)
        lines.append(f"  {name + ':':<6} ffplay {' '.join(ffmpeg_rtmp_args(url))} {url}")
    if stack.cfg.srt_port:
        srt_urls = [("out", stack.srt_output_url(stream_id))]
        srt_urls += [(language, stack.srt_output_url(stream_id, language)) for language in stack.targets]
        for name, url in srt_urls:
            url = url.replace(f"//{stack.cfg.host}:", f"//{rtmp_host}:", 1)
            lines.append(f"  {name + ':':<6} ffplay '{url}'  (SRT)")
    lines.append(f"  HLS (original + {', '.join(stack.targets)}, captions): ffplay {stack.hls_url(stream_id)}")
    lines.append(f"  live captions (server-sent events): curl -N {stack.captions_url(stream_id)}")
    lines.append(f"  operator page: {stack.media_url}/ui/")
    return "\n".join(lines)


def srt_publish_lines(stack: Stack, stream_id: str, host: str) -> str:
    """How to publish over SRT (MPEG-TS): ffmpeg and OBS (the whole URL as OBS's server, no stream key)."""
    if not stack.cfg.srt_port:
        return ""
    url = stack.srt_input_url(stream_id).replace(f"//{stack.cfg.host}:", f"//{host}:", 1)
    return (
        f"  SRT:     ffmpeg -re -i YOUR_FILE.mp4 -c:v libx264 -preset veryfast -g 60 -c:a aac -ar 48000 -f mpegts \\\n"
        f"             '{url}&pkt_size=1316'\n"
        f"           OBS: Server '{url}', Stream Key empty\n"
    )


def lan_address() -> str:
    """This machine's address as other machines on the LAN would use it (best effort)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            return str(sock.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="livedub up", description="Run the whole stack and wait for your own stream (OBS or ffmpeg)."
    )
    add_stack_arguments(parser)
    parser.add_argument("--stream-id", default="mystream", help="stream id used in the printed URLs")
    parser.add_argument("--public", action="store_true", help="accept RTMP from other machines (stream key checked)")
    parser.add_argument(
        "--srt-port",
        type=int,
        default=int(os.environ.get("SRT_PORT", "8890")),
        help="UDP port for SRT publishers and readers (SRT_PORT; 0: no SRT); passphrase = the publish key when set",
    )
    args = parser.parse_args(argv)

    def say(msg: str) -> None:
        print(f"[livedub] {msg}", flush=True)

    stack = Stack(config_from_args(args, bind_public=args.public, srt_port=args.srt_port or None), progress=say)
    with terminate_on_signals():
        try:
            stack.start()
            host = lan_address() if args.public else "127.0.0.1"
            sid = args.stream_id
            in_url = f"rtmp://{host}:{args.rtmp_port}/live/{sid}/in"
            key_q = f"?key={stack.publish_key}" if args.public else ""
            pub_url = in_url + key_q
            token_note = (
                f"\n  (from other machines: http://{host}:{args.media_port}/..., header"
                f" 'Authorization: Bearer {stack.api_token}')"
                if args.public
                else ""
            )
            print(
                f"""
livedub is up ({args.source} -> {",".join(stack.targets)}, {args.policy or "phrase"} segments). Logs: {stack.log_dir}

Publish your stream (any <stream_id>; '{sid}' below):
  ffmpeg:  ffmpeg -re -i YOUR_FILE.mp4 -c:v libx264 -preset veryfast -g 60 -c:a aac -ar 48000 -f flv \\
             {" ".join(ffmpeg_rtmp_args(pub_url))} '{pub_url}'
  OBS:     Settings > Stream > Service: Custom
             Server:     rtmp://{host}:{args.rtmp_port}/live
             Stream Key: {sid}/in{key_q}
{srt_publish_lines(stack, sid, host)}
Watch the dubbed outputs (start a few seconds after you publish; `out` is {stack.targets[0]}):
{output_lines(stack, sid)}

Streams: {stack.media_url}/v1/streams   Metrics: {stack.media_url}/metrics, {stack.sts_url}/metrics{token_note}
Press Ctrl-C to stop.
""",
                flush=True,
            )
            while True:
                stack.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            say("stopping")
            return 0
        except ServiceError as exc:
            say(f"error: {exc}")
            return 1
        finally:
            stack.stop()
            left = stack.orphans()
            if left:
                say(f"warning: processes left behind: {left}")


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
