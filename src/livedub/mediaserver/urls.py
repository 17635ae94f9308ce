"""RTMP URL helpers.

livedub names streams ``live/<stream_id>/in``, ``live/<stream_id>/out`` (the first target language) and
``live/<stream_id>/out/<lang>`` (each target language): application ``live``, stream name ``<stream_id>/in``.
FFmpeg's RTMP client would read ``rtmp://host/live/abc/in`` as application ``live/abc``, which nginx-rtmp does not
know, so every FFmpeg/PyAV open passes the application and play path explicitly. OBS needs nothing special: server
``rtmp://host/live``, stream key ``<stream_id>/in``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Flash version string the media-service's ingest sends at RTMP connect: /stat shows it, so the on_publish hook can
# tell the worker's player from any other player of the same input.
WORKER_FLASHVER_TAG = "livedub-worker"
WORKER_FLASHVER = f"LNX 9,0,124,2 {WORKER_FLASHVER_TAG}"


def rtmp_options(url: str, application: str = "live") -> dict[str, str]:
    """FFmpeg/PyAV options (`rtmp_app`, `rtmp_playpath`) that open `url` on nginx-rtmp as intended."""
    parts = urlsplit(url)
    if parts.scheme not in {"rtmp", "rtmps"}:
        return {}
    path = parts.path.lstrip("/")
    app, _, name = path.partition("/")
    if not name:
        return {}
    if app != application and "/" in name:
        return {}
    playpath = name + (f"?{parts.query}" if parts.query else "")
    return {"rtmp_app": app, "rtmp_playpath": playpath}


def ffmpeg_rtmp_args(url: str) -> list[str]:
    """The same options as command-line arguments for the ffmpeg/ffprobe CLI (place before the URL)."""
    args: list[str] = []
    for key, value in rtmp_options(url).items():
        args += [f"-{key}", value]
    return args
