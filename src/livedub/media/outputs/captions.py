"""Captions: the cue and phrase logs the worker appends to, their live follower, and WebVTT text.

The worker runs in a child process; it appends one JSON object per line to `<hls dir>/<id>/captions.jsonl` (one per
cue) and `phrases.jsonl` (one per phrase and language when decided). The media-service's SSE endpoints follow those
files (`follow`), like `tail -f`, until the directory says the stream ended (`ended`, written at close) or nothing new
came for a while. Times are on the output timestamp clock (see hls.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

CAPTIONS_FILE = "captions.jsonl"
PHRASES_FILE = "phrases.jsonl"
ENDED_FILE = "ended"
# A stream on air for days must not fill the disk: past this size a log is renamed to `<name>.1` (the one before
# is dropped) and a new one started, so each log keeps at most twice this (about 8 hours of one target per MiB).
LOG_ROTATE_BYTES = 4 << 20

CueKind = Literal["source", "translation"]


def mark_ended(directory: Path) -> None:
    (directory / ENDED_FILE).write_text("ended\n")


class _RotatingLog:
    """One append-only JSON-lines file, renamed to `<name>.1` and started anew past `rotate_bytes`."""

    def __init__(self, path: Path, rotate_bytes: int) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.path.with_name(path.name + ".1").unlink(missing_ok=True)
        self._open()

    def _open(self) -> None:
        # Line-buffered: each record reaches the file (and a follower) as one whole line.
        self._file = open(self.path, "w", buffering=1, encoding="utf-8")
        self._size = 0

    def write(self, line: str) -> None:
        if self._size and self._size + len(line) > self.rotate_bytes:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._open()
        self._file.write(line)
        self._size += len(line.encode("utf-8"))

    def close(self) -> None:
        self._file.close()


class CueLog:
    """Writer of captions.jsonl and phrases.jsonl for one run of a stream (truncated at start, rotated by size)."""

    def __init__(self, directory: Path, rotate_bytes: int = LOG_ROTATE_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / ENDED_FILE).unlink(missing_ok=True)
        self._captions = _RotatingLog(self.directory / CAPTIONS_FILE, rotate_bytes)
        self._phrases = _RotatingLog(self.directory / PHRASES_FILE, rotate_bytes)
        self.closed = False

    def cue(self, *, sequence: int, language: str, kind: CueKind, start_s: float, end_s: float, text: str) -> None:
        record = {
            "sequence": sequence,
            "language": language,
            "kind": kind,
            "start_s": round(start_s, 3),
            "end_s": round(end_s, 3),
            "text": text,
        }
        self._append(self._captions, record)

    def phrase(self, record: Mapping[str, Any] | BaseModel) -> None:
        data = record.model_dump(mode="json") if isinstance(record, BaseModel) else dict(record)
        self._append(self._phrases, data)

    def _append(self, file: _RotatingLog, record: Mapping[str, Any]) -> None:
        if not self.closed:
            file.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._captions.close()
        self._phrases.close()
        mark_ended(self.directory)


async def follow(
    path: Path, *, idle_s: float = 600.0, poll_s: float = 0.25, from_start: bool = True
) -> AsyncIterator[dict[str, Any]]:
    """Yield each JSON line of `path` as it is appended; ends when `ended` sits next to it and everything is read,
    or after `idle_s` without a new line. Waits for the file to appear; a truncated or replaced file (a new run of
    the stream) is read again from its start."""
    path = Path(path)
    ended = path.parent / ENDED_FILE
    reader = _LineReader(path, from_start)
    idle = 0.0
    try:
        while True:
            lines = reader.read()
            for line in lines:
                obj = _parse(line)
                if obj is not None:
                    yield obj
            if lines:
                idle = 0.0
                continue
            if ended.exists() and not reader.read_pending():
                return
            if idle >= idle_s:
                return
            await asyncio.sleep(poll_s)
            idle += poll_s
    finally:
        reader.close()


def _parse(line: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


@dataclass
class _LineReader:
    """Whole lines appended to a file since the last read (a partial last line waits for its newline)."""

    path: Path
    from_start: bool = True

    def __post_init__(self) -> None:
        self._file: Any = None
        self._inode: int | None = None
        self._buffer = ""

    def _reopen_if_needed(self) -> str:
        """Switch to a new file at `path` when it was replaced or truncated; returns what was left unread in a
        replaced file (rotated away with its last lines), so a follower within one rotation loses no record."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return ""
        if self._file is not None and st.st_ino == self._inode and st.st_size >= self._file.tell():
            return ""
        replaced = self._file is not None
        rotated = self._file.read() if replaced and st.st_ino != self._inode else ""
        rest = (self._buffer + rotated) if rotated else ""
        self.close()
        self._file = open(self.path, encoding="utf-8")
        self._inode = st.st_ino
        self._buffer = ""
        if not self.from_start and not replaced:
            self._file.seek(0, os.SEEK_END)
        return rest

    def read(self) -> list[str]:
        rest = self._reopen_if_needed()
        chunk = self._file.read() if self._file is not None else ""
        if not chunk and not rest:
            return []
        # A rotated file's tail holds whole lines (records are written line by line), so it is read to its end.
        lines = [*rest.split("\n")] if rest else []
        *more, self._buffer = (self._buffer + chunk).split("\n")
        return [line for line in [*lines, *more] if line.strip()]

    def read_pending(self) -> bool:
        """True when the file grew past what was read (a last line may still come)."""
        try:
            return self._file is not None and os.stat(self.path).st_size > self._file.tell()
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def sse_event(obj: Mapping[str, Any]) -> str:
    """One server-sent event carrying `obj` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


# ---- WebVTT text --------------------------------------------------------------------------------------------------
def vtt_time(seconds: float) -> str:
    """hh:mm:ss.mmm (hours grow past 99 as needed)."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def vtt_text(text: str) -> str:
    """Cue payload: escaped, no blank line (a blank line ends a cue), no "-->"."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    lines = [line.strip() for line in escaped.splitlines()]
    return "\n".join(line for line in lines if line) or " "


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str

    def vtt(self) -> str:
        return f"{vtt_time(self.start_s)} --> {vtt_time(self.end_s)}\n{vtt_text(self.text)}\n"


MPEGTS_WRAP = 1 << 33  # MPEG-TS timestamps are 33 bits at 90 kHz


def vtt_document(cues: list[Cue], local_s: float) -> str:
    """A WebVTT segment whose cue times are output timestamp seconds: X-TIMESTAMP-MAP maps `local_s` to the same
    instant in MPEG-TS 90 kHz units (wrapped like the TS muxer wraps them)."""
    local_ms = max(0, round(local_s * 1000))
    mpegts = local_ms * 90 % MPEGTS_WRAP
    header = f"WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:{mpegts},LOCAL:{vtt_time(local_ms / 1000)}\n"
    return "\n".join([header, *(cue.vtt() for cue in cues)])
