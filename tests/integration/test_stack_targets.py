"""`livedub up --targets es,fr --echo` as a user runs it: the whole stack as child processes (nginx-rtmp with its
hooks, the echo STS, the media-service with worker processes). While a pattern plays: /v1/streams lists both
languages and the outputs; `out`, `out/es`, `out/fr` are published (the output publishes pass the hooks and start no
worker); the HLS presentation is served over HTTP and ffprobe reads the original and both targets from its master;
the captions feed answers as server-sent events."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from livedub.analysis import PatternSpec, write_pattern
from livedub.stack import FilePublisher, Stack, StackConfig, wait_for_stream

pytestmark = pytest.mark.integration


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def probe_hls(url: str, within_s: float) -> list[str]:
    """The audio languages ffprobe reads from the presentation, once its playlists have segments."""
    deadline = time.monotonic() + within_s
    languages: list[str] = []
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", url], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            streams = json.loads(probe.stdout).get("streams", [])
            languages = [s.get("tags", {}).get("language", "") for s in streams if s["codec_type"] == "audio"]
            if len(languages) >= 3 and any(s["codec_type"] == "video" for s in streams):
                return languages
        time.sleep(1)
    return languages


def test_up_with_two_targets_serves_every_output(tmp_path: Path) -> None:
    source = write_pattern(tmp_path / "av.flv", PatternSpec(duration_s=20.0))
    cfg = StackConfig.with_free_ports(
        target_languages=["es", "fr"], sts_pipeline="echo", output_delay_ms=2000, log_dir=tmp_path / "logs",
        media_env={"MEDIA_HLS_DIR": str(tmp_path / "hls")},
    )  # fmt: skip
    sid = "multi"
    with Stack(cfg) as stack:
        publisher = FilePublisher(source, stack.input_url(sid), tmp_path / "publisher.log").start()
        try:
            for name in (f"{sid}/out", f"{sid}/out/es", f"{sid}/out/fr"):
                assert wait_for_stream(stack.stat_url, name, timeout=30) is not None, name
            streams = get_json(f"{stack.media_url}/v1/streams")["streams"]
            assert [s["stream_id"] for s in streams] == [sid]  # the output publishes started no worker
            entry = streams[0]
            assert entry["target_languages"] == ["es", "fr"] and set(entry["languages"]) == {"es", "fr"}
            assert entry["outputs"]["rtmp"]["fr"].endswith(f"/{sid}/out/fr")
            languages = probe_hls(stack.hls_url(sid), within_s=30)
            assert {"en", "es", "fr"} <= set(languages), languages
            with urllib.request.urlopen(stack.captions_url(sid), timeout=5) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.readline().startswith(b":")  # the stream is open (the echo has no transcripts)
        finally:
            publisher.stop()
