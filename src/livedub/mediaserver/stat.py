"""nginx-rtmp's /stat XML: the streams of an application, who publishes and who plays them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from livedub.mediaserver.urls import WORKER_FLASHVER_TAG


@dataclass
class RtmpStream:
    name: str
    publishing: bool
    clients: int
    time_ms: int
    video_codec: str | None
    audio_codec: str | None
    width: int | None
    height: int | None
    audio_sample_rate: int | None
    players: int = 0  # clients that play (not publish) the stream
    worker_players: int = 0  # of those, livedub workers (by their RTMP flashver)


def parse_rtmp_stat(xml_text: str, application: str = "live") -> dict[str, RtmpStream]:
    """Streams of `application` in nginx-rtmp's /stat XML, by stream name (e.g. `abc/in`).

    Raises xml.etree.ElementTree.ParseError when the text is not XML.
    """
    result: dict[str, RtmpStream] = {}
    if not xml_text.strip():
        return result
    root = ET.fromstring(xml_text)

    def text(node: ET.Element | None, path: str) -> str | None:
        if node is None:
            return None
        found = node.find(path)
        return found.text.strip() if found is not None and found.text else None

    def number(value: str | None) -> int | None:
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    for app in root.iter("application"):
        if text(app, "name") != application:
            continue
        for stream in app.iter("stream"):
            name = text(stream, "name") or ""
            clients = stream.findall("client")
            meta = stream.find("meta")
            video = meta.find("video") if meta is not None else None
            audio = meta.find("audio") if meta is not None else None
            result[name] = RtmpStream(
                name=name,
                publishing=any(c.find("publishing") is not None for c in clients),
                clients=len(clients),
                players=sum(c.find("publishing") is None for c in clients),
                worker_players=sum(
                    c.find("publishing") is None and WORKER_FLASHVER_TAG in (text(c, "flashver") or "") for c in clients
                ),
                time_ms=number(text(stream, "time")) or 0,
                video_codec=text(video, "codec"),
                audio_codec=text(audio, "codec"),
                width=number(text(video, "width")),
                height=number(text(video, "height")),
                audio_sample_rate=number(text(audio, "sample_rate")),
            )
    return result
