"""media/outputs_http: HLS files (content types, no caching of playlists, nothing outside the stream's directory) and
the captions / phrases server-sent events following the worker's JSONL files; access as /v1/streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from livedub.media.outputs.captions import CueLog
from livedub.media.service import outputs_http
from livedub.media.service.app import create_app
from livedub.media.settings import MediaSettings

pytestmark = pytest.mark.unit

LOOPBACK = ("127.0.0.1", 50000)


def settings(tmp_path: Path, **extra: object) -> MediaSettings:
    return MediaSettings(_env_file=None, MEDIA_HLS_DIR=str(tmp_path), **extra)  # type: ignore[call-arg]


def app_for(s: MediaSettings) -> FastAPI:
    app = create_app(s)
    if not any(getattr(route, "path", "") == "/hls/{stream_id}/{name}" for route in app.routes):
        app.include_router(outputs_http.router)  # until media/service/app.py includes it
    return app


@pytest.fixture
def stream_dir(tmp_path: Path) -> Path:
    d = tmp_path / "abc"
    d.mkdir()
    (d / "master.m3u8").write_text("#EXTM3U\n")
    (d / "video_3.ts").write_bytes(b"\x47" * 188)
    (d / "subs_es_1.vtt").write_text("WEBVTT\n")
    (tmp_path / "secret.m3u8").write_text("#EXTM3U\nnot yours\n")
    return d


def test_hls_files_with_their_types_and_playlists_never_cached(tmp_path: Path, stream_dir: Path) -> None:
    client = TestClient(app_for(settings(tmp_path)), client=LOOPBACK)
    master = client.get("/hls/abc/master.m3u8")
    assert master.status_code == 200 and master.text == "#EXTM3U\n"
    assert master.headers["content-type"] == "application/vnd.apple.mpegurl"
    assert "no-cache" in master.headers["cache-control"]
    segment = client.get("/hls/abc/video_3.ts")
    assert segment.headers["content-type"] == "video/mp2t" and segment.content == b"\x47" * 188
    assert "no-cache" not in segment.headers["cache-control"]
    assert client.get("/hls/abc/subs_es_1.vtt").headers["content-type"].startswith("text/vtt")


@pytest.mark.parametrize(
    "path",
    ["/hls/abc/missing.m3u8", "/hls/abc/..%2Fsecret.m3u8", "/hls/abc/.hidden.m3u8", "/hls/abc/captions.jsonl",
     "/hls/..%2F/secret.m3u8", "/hls/abc/%2e%2e/secret.m3u8", "/hls/a%20b/master.m3u8"],
)  # fmt: skip
def test_nothing_outside_the_presentation(tmp_path: Path, stream_dir: Path, path: str) -> None:
    response = TestClient(app_for(settings(tmp_path)), client=LOOPBACK).get(path)
    assert response.status_code == 404 and "not yours" not in response.text


def test_remote_clients_need_the_token(tmp_path: Path, stream_dir: Path) -> None:
    app = app_for(settings(tmp_path, MEDIA_API_TOKEN="t0k"))
    remote = TestClient(app, client=("192.0.2.7", 5000))
    assert remote.get("/hls/abc/master.m3u8").status_code == 401
    assert remote.get("/v1/streams/abc/captions").status_code == 401
    ok = remote.get("/hls/abc/master.m3u8", headers={"Authorization": "Bearer t0k"})
    assert ok.status_code == 200


def test_captions_and_phrases_as_server_sent_events(tmp_path: Path) -> None:
    log = CueLog(tmp_path / "abc")
    log.cue(sequence=0, language="en", kind="source", start_s=1.2, end_s=1.8, text="hello")
    log.cue(sequence=0, language="es", kind="translation", start_s=1.3, end_s=1.9, text="hola")
    log.phrase({"sequence": 0, "language": "es", "status": "dubbed"})
    log.close()  # the stream ended: the events end after the last line
    client = TestClient(app_for(settings(tmp_path)), client=LOOPBACK)
    response = client.get("/v1/streams/abc/captions")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")]
    assert [(e["language"], e["text"]) for e in events] == [("en", "hello"), ("es", "hola")]
    only_es = client.get("/v1/streams/abc/captions", params={"language": "es"}).text
    assert "hola" in only_es and "hello" not in only_es
    phrases = client.get("/v1/streams/abc/phrases").text
    assert json.loads(phrases.split("data: ", 1)[1])["status"] == "dubbed"
    assert client.get("/v1/streams/nope/captions").status_code == 404


def test_a_reconnecting_client_resumes_after_its_last_event(tmp_path: Path) -> None:
    log = CueLog(tmp_path / "abc")
    for seq in range(4):
        log.cue(sequence=seq, language="es", kind="translation", start_s=seq, end_s=seq + 0.5, text=f"t{seq}")
    log.close()
    client = TestClient(app_for(settings(tmp_path)), client=LOOPBACK)
    first = client.get("/v1/streams/abc/captions").text
    assert [line for line in first.splitlines() if line.startswith("id: ")] == ["id: 0", "id: 1", "id: 2", "id: 3"]
    resumed = client.get("/v1/streams/abc/captions", headers={"Last-Event-ID": "1"}).text
    events = [json.loads(line[6:]) for line in resumed.splitlines() if line.startswith("data: ")]
    assert [e["text"] for e in events] == ["t2", "t3"]


async def test_silence_is_kept_alive_and_the_follower_ends_with_the_client(tmp_path: Path) -> None:
    directory = tmp_path / "abc"
    log = CueLog(directory)  # a live stream: no `ended` yet
    events = outputs_http._events(directory / "captions.jsonl", None, True, keepalive_s=0.05)
    assert await anext(events) == ": livedub\n\n"
    assert await anext(events) == ": keepalive\n\n"
    log.cue(sequence=0, language="en", kind="source", start_s=1.0, end_s=2.0, text="hi")
    got = await anext(events)
    while got.startswith(":"):
        got = await anext(events)
    assert got.startswith("id: 0\ndata: ") and '"hi"' in got
    await events.aclose()  # the client left while the follower waited
    log.close()
