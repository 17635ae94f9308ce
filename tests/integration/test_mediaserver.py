"""The embedded media server: nginx-rtmp started with a generated config accepts and relays a stream."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import av
import pytest

from livedub.mediaserver import NginxRtmpServer, RtmpServerConfig
from livedub.mediaserver.urls import ffmpeg_rtmp_args, rtmp_options
from livedub.stack import free_port

pytestmark = pytest.mark.integration


def test_publish_and_play_through_nginx_rtmp(tmp_path: Path) -> None:
    cfg = RtmpServerConfig(rtmp_port=free_port(), http_port=free_port(), bind="127.0.0.1", workdir=tmp_path)
    with NginxRtmpServer(cfg) as server:
        url = f"{server.rtmp_url}/cam1/in"
        publisher = subprocess.Popen(
            ["ffmpeg", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
             "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac",
             "-f", "flv", *ffmpeg_rtmp_args(url), url],
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 5
            while "<name>cam1/in</name>" not in server.stat_xml():
                assert time.monotonic() < deadline, "stream never appeared in /stat"
                time.sleep(0.2)
            with av.open(url, options=rtmp_options(url), timeout=(5, 5)) as player:
                codecs = sorted(stream.codec_context.name for stream in player.streams)
                packets = 0
                for packet in player.demux():
                    packets += packet.size > 0
                    if packets >= 50:
                        break
            assert codecs == ["aac", "h264"]
            assert packets >= 50
        finally:
            publisher.kill()
            publisher.wait()
    assert server.process is None


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = NginxRtmpServer(RtmpServerConfig(rtmp_port=port, http_port=free_port(), workdir=tmp_path))
        with pytest.raises(RuntimeError, match="already in use"):
            server.start()
