"""STS monitor-room client: records the server->client events of one stream (see docs/protocol.md)."""

from __future__ import annotations

import base64
from typing import Any

from livedub.observe import ObservedEvent, StsMonitor

__all__ = ["ObservedEvent", "StsMonitor", "dubbed_audio_bytes"]


def dubbed_audio_bytes(processed: dict[str, Any]) -> bytes:
    """The decoded `dubbed_audio` of a fragment:processed payload (b'' when absent)."""
    audio = processed.get("dubbed_audio") or {}
    data = audio.get("data_base64") or ""
    return base64.b64decode(data) if data else b""
