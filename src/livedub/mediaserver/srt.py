"""SRT in and out for the embedded media server: one SRT listener (libsrt through ctypes) that relays each publisher
into the local RTMP ingest and serves each RTMP path to SRT readers, with MediaMTX's stream ids, so a URL works on
both servers:

* publish: ``srt://HOST:8890?streamid=publish:live/<id>/in&passphrase=KEY`` (or ``streamid=<id>``), MPEG-TS;
* read:    ``srt://HOST:8890?streamid=read:live/<id>/out/<lang>`` (or ``.../out``).

The passphrase (when one is set) is asked of publishers only, as the stream key is on RTMP: a caller without it or
with a wrong one is refused in the handshake (libsrt's enforced encryption). Each connection runs one ffmpeg (MPEG-TS
<-> FLV, streams copied, never re-encoded) tied to this process. PyAV's bundled FFmpeg has no SRT; libsrt is the one
Debian's ffmpeg links.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import re
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

from livedub.lifetime import spawn
from livedub.mediaserver.urls import ffmpeg_rtmp_args

log = logging.getLogger(__name__)

LIBSRT = "libsrt-gnutls.so.1.5"
SRTO_RCVSYN, SRTO_PASSPHRASE, SRTO_STREAMID, SRTO_PEERIDLETIMEO = 2, 26, 46, 55
SRT_REJX_BAD_REQUEST = 1400
SRTS_CONNECTED = 5  # SRT_SOCKSTATUS
# A played RTMP path that sends nothing this long has ended (or is not published yet).
RTMP_IDLE_TIMEOUT_S = 3.0
TS_CHUNK = 7 * 188  # 1316 bytes: SRT's live payload, whole MPEG-TS packets
PASSPHRASE_LENGTH = (10, 79)  # libsrt's bounds
_STREAM_ID = r"[A-Za-z0-9_-]{1,64}"
_PUBLISH_PATH = re.compile(rf"live/({_STREAM_ID})/in")
_READ_PATH = re.compile(rf"live/{_STREAM_ID}/(in|out(/[a-z]{{2,3}})?)")

_LISTEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)


@dataclass(frozen=True)
class SrtRoute:
    mode: str  # publish | read
    path: str  # the RTMP path: live/<id>/in, live/<id>/out[/<lang>]


@dataclass(frozen=True)
class SrtRefusal:
    reason: str


def parse_stream_id(raw: str) -> SrtRoute | SrtRefusal:
    """MediaMTX's forms (`publish:PATH[:USER:PASS]`, `read:PATH`), SRT's access-control form
    (`#!::r=PATH,m=publish`), or a bare stream id (publish to `live/<id>/in`)."""
    mode, path = _split_stream_id(raw.strip())
    if mode == "publish" and re.fullmatch(_STREAM_ID, path):
        path = f"live/{path}/in"
    if mode == "publish" and _PUBLISH_PATH.fullmatch(path):
        return SrtRoute("publish", path)
    if mode == "read" and _READ_PATH.fullmatch(path):
        return SrtRoute("read", path)
    return SrtRefusal(f"stream id {raw!r}: expected publish:live/<id>/in or read:live/<id>/in|out[/<lang>]")


def _split_stream_id(raw: str) -> tuple[str, str]:
    if raw.startswith("#!::"):
        fields = dict(item.partition("=")[::2] for item in raw[4:].split(","))
        return fields.get("m", "request").replace("request", "read"), fields.get("r", "")
    mode, sep, rest = raw.partition(":")
    # MediaMTX's `publish:PATH:USER:PASS[:QUERY]`: its auth hook checks the password; here the passphrase does.
    return (mode, rest.partition(":")[0]) if sep else ("publish", raw)


def check_passphrase(passphrase: str) -> str | None:
    """The reason `passphrase` cannot be an SRT passphrase, or None when it can."""
    low, high = PASSPHRASE_LENGTH
    if passphrase and not low <= len(passphrase) <= high:
        return f"an SRT passphrase has {low} to {high} characters (this one {len(passphrase)}): set a longer key"
    return None


class _Lib:
    """The few libsrt calls the gateway makes."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(LIBSRT)
        lib.srt_getlasterror_str.restype = ctypes.c_char_p
        lib.srt_startup()
        self.lib = lib

    def error(self) -> str:
        return (self.lib.srt_getlasterror_str() or b"?").decode(errors="replace")

    def set_int(self, sock: int, option: int, value: int) -> None:
        number = ctypes.c_int(value)
        self.lib.srt_setsockflag(sock, option, ctypes.byref(number), ctypes.sizeof(number))

    def set_text(self, sock: int, option: int, value: str) -> None:
        data = value.encode()
        self.lib.srt_setsockflag(sock, option, ctypes.c_char_p(data), len(data))

    def stream_id(self, sock: int) -> str:
        buf, size = ctypes.create_string_buffer(600), ctypes.c_int(600)
        self.lib.srt_getsockflag(sock, SRTO_STREAMID, buf, ctypes.byref(size))
        return buf.raw[: size.value].decode(errors="replace")


def _sockaddr_in(host: str, port: int) -> bytes:
    """struct sockaddr_in: the family in host order, the port and address in network order."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + bytes(8)


class SrtGateway:
    """SRT listener on `bind:port` in front of the RTMP server at `rtmp_base` (rtmp://127.0.0.1:PORT/live)."""

    def __init__(self, bind: str, port: int, rtmp_base: str, passphrase: str = "") -> None:
        reason = check_passphrase(passphrase)
        if reason is not None:
            raise ValueError(reason)
        self.bind, self.port, self.rtmp_base, self.passphrase = bind, port, rtmp_base.rstrip("/"), passphrase
        self._srt = _Lib()
        self._listener = -1
        self._callback = _LISTEN_CALLBACK(self._on_handshake)  # kept: libsrt calls it from its own thread
        self._sessions: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closing = False

    def start(self) -> SrtGateway:
        lib = self._srt.lib
        sock = lib.srt_create_socket()
        addr = _sockaddr_in(self.bind, self.port)
        if lib.srt_bind(sock, addr, len(addr)) != 0 or lib.srt_listen(sock, 16) != 0:
            raise RuntimeError(f"SRT listener on {self.bind}:{self.port}: {self._srt.error()}")
        lib.srt_listen_callback(sock, self._callback, None)
        self._listener = sock
        threading.Thread(target=self._accept_loop, name="srt-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing = True
        if self._listener >= 0:
            self._srt.lib.srt_close(self._listener)
        with self._lock:
            sessions = list(self._sessions)
        for proc in sessions:
            proc.kill()

    def _on_handshake(self, _opaque: object, sock: int, _version: int, _peer: object, raw: bytes | None) -> int:
        route = parse_stream_id((raw or b"").decode(errors="replace"))
        if isinstance(route, SrtRefusal):
            log.warning("SRT caller refused: %s", route.reason)
            self._srt.lib.srt_setrejectreason(sock, SRT_REJX_BAD_REQUEST)
            return -1
        if route.mode == "publish" and self.passphrase:
            self._srt.set_text(sock, SRTO_PASSPHRASE, self.passphrase)  # a caller without it fails the handshake
        return 0

    def _accept_loop(self) -> None:
        while not self._closing:
            peer, peer_size = ctypes.create_string_buffer(128), ctypes.c_int(128)
            sock = self._srt.lib.srt_accept(self._listener, peer, ctypes.byref(peer_size))
            if sock < 0:
                if not self._closing:
                    log.warning("SRT accept failed: %s", self._srt.error())
                return
            route = parse_stream_id(self._srt.stream_id(sock))
            if isinstance(route, SrtRoute):
                serve = self._relay_publisher if route.mode == "publish" else self._serve_reader
                threading.Thread(target=serve, args=(sock, route), name=f"srt-{route.path}", daemon=True).start()
            else:
                self._srt.lib.srt_close(sock)

    def _ffmpeg(self, argv: list[str], loglevel: str = "warning", **streams: int) -> subprocess.Popen[bytes]:
        proc = spawn(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", loglevel, *argv], stderr=None, **streams)
        with self._lock:
            self._sessions.add(proc)
        return proc

    def _end(self, sock: int, proc: subprocess.Popen[bytes]) -> None:
        self._srt.lib.srt_close(sock)
        self._reap(proc)

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with self._lock:
            self._sessions.discard(proc)

    def _relay_publisher(self, sock: int, route: SrtRoute) -> None:
        """MPEG-TS from the caller -> FLV to live/<id>/in. A caller that goes silent ends after libsrt's peer idle
        timeout (5 s): ffmpeg sees the end of its input and unpublishes, as a dropped RTMP publisher does."""
        url = f"{self.rtmp_base}/{route.path.removeprefix('live/')}"
        relay = ["-fflags", "+genpts", "-f", "mpegts", "-i", "pipe:0", "-map", "0", "-c", "copy", "-f", "flv"]
        proc = self._ffmpeg([*relay, *ffmpeg_rtmp_args(url), url], stdin=subprocess.PIPE)
        log.info("SRT publisher on %s", route.path)
        buf = ctypes.create_string_buffer(1500)
        assert proc.stdin is not None
        try:
            while True:
                size = self._srt.lib.srt_recvmsg(sock, buf, len(buf))
                if size <= 0:
                    break
                proc.stdin.write(buf.raw[:size])
        except (BrokenPipeError, OSError):
            pass  # ffmpeg gone (the RTMP server refused the stream)
        finally:
            with_suppressed_close(proc)
            self._end(sock, proc)
            log.info("SRT publisher on %s ended", route.path)

    def _serve_reader(self, sock: int, route: SrtRoute) -> None:
        """The RTMP path as MPEG-TS to the caller, from the path's next publish to its end. A reader may connect
        before the path is published (a decoder waiting for the show): until then each try ends after the idle
        timeout with nothing sent and is tried again while the caller stays. Once the path has been sent, its end
        (nothing for the idle timeout: nginx-rtmp does not tell players) ends the SRT connection, so the reader sees
        the end of its input and finishes its recording."""
        url = f"{self.rtmp_base}/{route.path.removeprefix('live/')}"
        log.info("SRT reader on %s", route.path)
        try:
            while not self._closing and self._connected(sock):
                if self._pump_reader(sock, url) is not ReaderTry.NOTHING_YET:
                    break
            self._drain(sock)
        finally:
            self._srt.lib.srt_close(sock)
            log.info("SRT reader on %s ended", route.path)

    def _pump_reader(self, sock: int, url: str) -> ReaderTry:
        """One ffmpeg reading `url` into `sock` in 1316-byte messages (7 whole MPEG-TS packets each)."""
        timeout_us = str(int(RTMP_IDLE_TIMEOUT_S * 1_000_000))
        options = ["-rw_timeout", timeout_us, *ffmpeg_rtmp_args(url), "-i", url, "-map", "0", "-c", "copy"]
        options += ["-flush_packets", "1", "-f", "mpegts", "pipe:1"]
        # fatal only: each try before the path is published ends in an I/O error after the idle timeout
        proc = self._ffmpeg(options, loglevel="fatal", stdout=subprocess.PIPE)
        assert proc.stdout is not None
        outcome = ReaderTry.NOTHING_YET
        try:
            while chunk := proc.stdout.read(TS_CHUNK):
                if self._srt.lib.srt_sendmsg(sock, chunk, len(chunk), -1, 1) < 0:
                    return ReaderTry.READER_LEFT
                outcome = ReaderTry.STREAM_ENDED
            return outcome
        finally:
            proc.kill()
            self._reap(proc)

    def _connected(self, sock: int) -> bool:
        return self._srt.lib.srt_getsockstate(sock) == SRTS_CONNECTED

    def _drain(self, sock: int, timeout: float = 2.0) -> None:
        """Wait (a little) until the caller has what was sent: live mode drops unsent data at close."""
        blocks, size = ctypes.c_size_t(0), ctypes.c_size_t(0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._connected(sock):
            if self._srt.lib.srt_getsndbuffer(sock, ctypes.byref(blocks), ctypes.byref(size)) != 0 or not blocks.value:
                return
            time.sleep(0.05)


class ReaderTry(enum.Enum):
    """How one try at serving an SRT reader ended."""

    NOTHING_YET = "the path was not published within the idle timeout"
    STREAM_ENDED = "the path was sent and has ended"
    READER_LEFT = "the caller is gone"


def with_suppressed_close(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
