"""Following a stream's outputs beside RTMP while it plays: the HLS presentation and the captions feed.

The HLS presentation keeps a sliding window of segments, so its WebVTT cues are read while the stream plays:
`HlsWatcher` polls the master, every subtitle playlist and each new .vtt segment. `SseCollector` reads the
media-service's captions (or phrases) server-sent events.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')
_CUE_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})\.(\d{3})\s+-->\s+(\d+):(\d{2}):(\d{2})\.(\d{3})")
_TIMESTAMP_MAP = re.compile(r"X-TIMESTAMP-MAP=MPEGTS:(\d+),LOCAL:(\d+):(\d{2}):(\d{2})\.(\d{3})")


def media_entries(master: str) -> list[dict[str, str]]:
    """The `#EXT-X-MEDIA` tags of a master playlist, as attribute dicts (quotes removed)."""
    entries = []
    for line in master.splitlines():
        if line.startswith("#EXT-X-MEDIA:"):
            entries.append({k: v.strip('"') for k, v in _ATTRIBUTE.findall(line.split(":", 1)[1])})
    return entries


def playlist_uris(playlist: str) -> list[str]:
    return [line.strip() for line in playlist.splitlines() if line.strip() and not line.startswith("#")]


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@dataclass(frozen=True)
class VttCue:
    start_s: float  # on the presentation's MPEG-TS clock (seconds), through X-TIMESTAMP-MAP
    end_s: float
    text: str


def parse_vtt(text: str) -> list[VttCue]:
    """Cues of one WebVTT segment, moved onto the MPEG-TS clock by its X-TIMESTAMP-MAP (if any)."""
    offset = 0.0
    mapping = _TIMESTAMP_MAP.search(text)
    if mapping:
        mpegts, *local = mapping.groups()
        offset = int(mpegts) / 90000 - _seconds(*local)
    cues = []
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    for block in blocks:
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            match = _CUE_TIME.search(line)
            if match:
                g = match.groups()
                body = " ".join(lines[i + 1 :]).strip()
                cues.append(VttCue(_seconds(*g[:4]) + offset, _seconds(*g[4:]) + offset, body))
                break
    return cues


@dataclass
class HlsWatcher:
    """Polls `<base>/master.m3u8` and the subtitle renditions until stopped; keeps every cue it saw."""

    base_url: str  # .../hls/<stream id>
    poll_s: float = 1.0
    master: str | None = None
    cues: dict[str, dict[str, VttCue]] = field(default_factory=dict)  # language -> segment/cue key -> cue
    errors: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> HlsWatcher:
        self._thread = threading.Thread(target=self._run, name="hls-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._poll(httpx.Client(timeout=5.0))  # the last window (the presentation has ended)

    def subtitles(self) -> list[dict[str, str]]:
        return [e for e in media_entries(self.master or "") if e.get("TYPE") == "SUBTITLES"]

    def audio(self) -> list[dict[str, str]]:
        return [e for e in media_entries(self.master or "") if e.get("TYPE") == "AUDIO"]

    def cue_list(self, language: str) -> list[VttCue]:
        return sorted(self.cues.get(language, {}).values(), key=lambda c: c.start_s)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._stop.wait(self.poll_s):
                self._poll(client)

    def _poll(self, client: httpx.Client) -> None:
        try:
            response = client.get(f"{self.base_url}/master.m3u8")
            if response.status_code != 200:
                return
            self.master = response.text
            for entry in self.subtitles():
                self._read_subtitles(client, entry["LANGUAGE"], entry["URI"])
        except httpx.HTTPError as exc:
            self.errors.append(repr(exc))

    def _read_subtitles(self, client: httpx.Client, language: str, uri: str) -> None:
        playlist = client.get(f"{self.base_url}/{uri}")
        if playlist.status_code != 200:
            return
        for segment in playlist_uris(playlist.text):
            if segment in self._seen:
                continue
            response = client.get(f"{self.base_url}/{segment}")
            if response.status_code != 200:
                continue
            self._seen.add(segment)
            for cue in parse_vtt(response.text):
                # A cue that spans two segments is repeated in both: keep it once.
                self.cues.setdefault(language, {})[f"{cue.start_s:.2f}|{cue.text}"] = cue


@dataclass
class SseCollector:
    """Reads `data:` JSON lines of a server-sent events endpoint on a thread until the feed ends."""

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SseCollector:
        self._thread = threading.Thread(target=self._run, name="sse", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait_s: float = 15.0) -> None:
        """Wait for the feed to end (the stream's end closes it), then give up."""
        if self._thread is not None:
            self._thread.join(timeout=wait_s)
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with (
                    # No read timeout: the feed ends by itself once the stream has ended.
                    httpx.Client(timeout=httpx.Timeout(5.0, read=None)) as client,
                    client.stream("GET", self.url) as response,
                ):
                    if response.status_code != 200:
                        self._stop.wait(0.5)
                        continue
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            self.events.append(json.loads(line[5:].strip()))
                    return  # the feed ended: the stream is over
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                self.errors.append(repr(exc))
                self._stop.wait(0.3)
