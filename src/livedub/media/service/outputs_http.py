"""HTTP outputs of the media-service: each stream's HLS presentation and its live captions and phrase log.

- `GET /hls/<stream_id>/<file>`: the files `hls.HlsPresentation` writes in `<MEDIA_HLS_DIR>/<stream_id>/`
  (master.m3u8, media playlists, .ts / .m4s segments, .vtt). One plain file name per request (no sub-directories, no
  dot-files); playlists are never cached (a live playlist changes every segment), segments may be.
- `GET /v1/streams/<stream_id>/captions`: server-sent events, one JSON cue per event
  (`{"sequence", "language", "kind", "start_s", "end_s", "text"}`), following `captions.jsonl` from its start
  (`?from_start=false`: only new cues; `?language=es,en`: those languages only). Each event's `id` is its line
  number: a reconnecting EventSource resumes after the last one it got (Last-Event-ID).
- `GET /v1/streams/<stream_id>/phrases`: the same over `phrases.jsonl` (one event per phrase and language decided).

The worker (a child process) writes those files; these endpoints only read them. Access is the media-service's rule
for everything but hooks and /health (`access.py`): loopback, or `Authorization: Bearer MEDIA_API_TOKEN`, the same as
`/v1/streams`. The app includes the router: `app.include_router(outputs_http.router)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse

from livedub.media.outputs.captions import CAPTIONS_FILE, PHRASES_FILE, follow, sse_event
from livedub.media.service.app_state import media_state
from livedub.media.service.hooks import STREAM_ID_RE
from livedub.media.settings import MediaSettings

router = APIRouter()

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".aac": "audio/aac",
    ".vtt": "text/vtt; charset=utf-8",
}
FILE_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")
NO_CACHE = "no-cache, no-store"
SEGMENT_CACHE = "public, max-age=60"  # a segment's name is never reused within a run
SSE_HEADERS = {"Cache-Control": NO_CACHE, "X-Accel-Buffering": "no"}


def _settings(request: Request) -> MediaSettings:
    return media_state(request).settings


def stream_directory(settings: MediaSettings, stream_id: str) -> Path:
    if not STREAM_ID_RE.match(stream_id):
        raise HTTPException(404, "unknown stream")
    return settings.stream_dir(stream_id)


def presentation_file(directory: Path, name: str) -> Path:
    """The file `name` of a presentation directory, or 404: a plain name with a served suffix, inside it."""
    suffix = Path(name).suffix.lower()
    if not FILE_RE.match(name) or ".." in name or suffix not in CONTENT_TYPES:
        raise HTTPException(404, "not an HLS file")
    path = directory / name
    if path.resolve().parent != directory.resolve() or not path.is_file():
        raise HTTPException(404, "no such file (the stream may not have started, or the segment left the window)")
    return path


@router.get("/hls/{stream_id}/{name}")
async def hls_file(stream_id: str, name: str, request: Request) -> FileResponse:
    path = presentation_file(stream_directory(_settings(request), stream_id), name)
    suffix = path.suffix.lower()
    cache = NO_CACHE if suffix == ".m3u8" else SEGMENT_CACHE
    return FileResponse(path, media_type=CONTENT_TYPES[suffix], headers={"Cache-Control": cache})


async def _events(
    path: Path, languages: set[str] | None, from_start: bool, after_id: int = -1, keepalive_s: float = 15.0
) -> AsyncIterator[str]:
    """The file's records as server-sent events, each with its line number as `id` (a reconnecting EventSource
    sends it back as Last-Event-ID: records up to it are skipped), and a comment every `keepalive_s` of silence so
    that proxies keep the connection."""
    yield ": livedub\n\n"  # a comment first: the client sees the stream open before the first cue
    records = aiter(follow(path, from_start=from_start))
    index = -1
    next_record: asyncio.Future[dict[str, Any]] | None = None
    try:
        while True:
            next_record = next_record or asyncio.ensure_future(anext(records))
            done, _ = await asyncio.wait({next_record}, timeout=keepalive_s)
            if not done:
                yield ": keepalive\n\n"
                continue
            try:
                obj = next_record.result()
            except StopAsyncIteration:
                return
            next_record = None
            index += 1
            if index > after_id and (languages is None or obj.get("language") in languages):
                yield f"id: {index}\n" + sse_event(obj)
    finally:
        if next_record is not None:  # the client left while a record was awaited: end the follower first
            next_record.cancel()
            with contextlib.suppress(BaseException):
                await next_record
        await records.aclose()  # type: ignore[attr-defined]


def _sse(request: Request, stream_id: str, file: str, language: str | None, from_start: bool) -> StreamingResponse:
    directory = stream_directory(_settings(request), stream_id)
    if not directory.is_dir():
        raise HTTPException(404, f"no outputs of stream {stream_id} (not started yet?)")
    languages = {code.strip() for code in language.split(",") if code.strip()} if language else None
    last_id = request.headers.get("last-event-id", "")
    after_id = int(last_id) if last_id.isdigit() else -1
    return StreamingResponse(
        _events(directory / file, languages, from_start or after_id >= 0, after_id),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@router.get("/v1/streams/{stream_id}/captions")
async def captions(
    stream_id: str, request: Request, language: str | None = None, from_start: bool = True
) -> StreamingResponse:
    """Live captions (server-sent events): one JSON cue per event, times on the output timestamp clock."""
    return _sse(request, stream_id, CAPTIONS_FILE, language, from_start)


@router.get("/v1/streams/{stream_id}/phrases")
async def phrases(
    stream_id: str, request: Request, language: str | None = None, from_start: bool = True
) -> StreamingResponse:
    """The phrase log (server-sent events): per phrase and language, what played and why, with stage times."""
    return _sse(request, stream_id, PHRASES_FILE, language, from_start)
