"""Which stream a media server hook's name means (who may publish it: `access.PublishPolicy`).

Names: nginx-rtmp reports `<stream_id>/in` (application `live` separately), MediaMTX reports the path
`live/<stream_id>/in`. `/in` is a viewer's input (starts a worker), `/out` and `/out/<lang>` are the media-service's
dubbed outputs (the first target, and each target language): publishing them starts nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs

APPLICATION = "live"
STREAM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")


class StreamRole(StrEnum):
    INPUT = "in"
    OUTPUT = "out"


@dataclass(frozen=True)
class StreamName:
    stream_id: str
    role: StreamRole
    language: str | None = None  # of an output `out/<lang>`; None: `in`, or `out` (the first target)


def parse_stream_name(name: str) -> StreamName | None:
    """`abc/in`, `live/abc/in`, `abc/out/es` (optionally with `?query`) -> StreamName; anything else -> None."""
    parts = name.split("?", 1)[0].strip("/").split("/")
    candidates = [parts[1:], parts] if len(parts) > 2 and parts[0] == APPLICATION else [parts]
    for candidate in candidates:
        parsed = _parse_parts(candidate)
        if parsed is not None:
            return parsed
    return None


def _parse_parts(parts: list[str]) -> StreamName | None:
    if not parts or not STREAM_ID_RE.match(parts[0]):
        return None
    if len(parts) == 3 and parts[1] == StreamRole.OUTPUT and LANGUAGE_RE.match(parts[2]):
        return StreamName(parts[0], StreamRole.OUTPUT, parts[2])  # a target language's output, `out/<lang>`
    if len(parts) != 2:
        return None
    try:
        return StreamName(parts[0], StreamRole(parts[1]))
    except ValueError:
        return None


def key_from_query(query: str) -> str | None:
    """The `key` parameter of a query string such as `key=secret&x=1` (a leading `?` is fine)."""
    values = parse_qs(query.lstrip("?")).get("key")
    return values[0] if values else None
