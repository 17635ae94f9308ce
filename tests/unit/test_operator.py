"""The operator page's router (media/service/operator.py): page access, the overview, the token-guarded controls.

A real WorkerManager with fake runners (thread isolation); no media server (its /stat is unreachable), no STS.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from media_fakes import FakeFleet, make_manager

from livedub.media.service import operator
from livedub.media.service.app import create_app
from livedub.media.service.app_state import app_media_state
from livedub.mediaserver.stat import RtmpStream

LOOPBACK = ("127.0.0.1", 40000)
REMOTE = ("203.0.113.9", 40000)
TOKEN = "op-secret"


def operator_app(fleet: FakeFleet, monitor_token: str = "", api_token: str = "") -> FastAPI:
    manager = make_manager(
        fleet,
        MEDIA_SERVER_STAT_URL="http://127.0.0.1:9/stat",
        STS_SERVICE_URL="http://127.0.0.1:9",
        MEDIA_API_TOKEN=api_token,
    )
    settings = manager.settings.model_copy(update={"monitor_token": monitor_token})
    app = create_app(settings, manager)
    if not any(getattr(route, "path", "") == "/v1/operator/overview" for route in app.routes):
        app.include_router(operator.router)  # until media/service/app.py includes it
    return app


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


@pytest.fixture
def client(fleet: FakeFleet) -> Iterator[TestClient]:
    with TestClient(operator_app(fleet, monitor_token=TOKEN), client=LOOPBACK) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_page_and_its_files_are_served_on_loopback(client: TestClient) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for name in ("operator.js", "api.js", "player.js", "plot.js", "timeline.js", "operator.css"):
        assert f"/ui/{name}" in page.text or name in {"api.js", "player.js", "plot.js", "timeline.js"}
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, name
    assert client.get("/ui/../app.py").status_code == 404
    assert client.get("/ui/nothing.js").status_code == 404
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"


def test_hlsjs_is_served_from_the_npm_install_or_says_how_to_install_it(client: TestClient) -> None:
    response = client.get("/ui/vendor/hls.min.js")
    if operator.hlsjs_path() is None:
        assert response.status_code == 404 and "npm install" in response.json()["detail"]
    else:
        assert response.status_code == 200 and "javascript" in response.headers["content-type"]
        assert len(response.content) > 100_000


def test_page_is_closed_to_other_machines_without_a_monitor_token() -> None:
    verdict = operator.page_access("203.0.113.9", "")
    assert not verdict.allowed and verdict.status_code == 403
    assert operator.page_access("127.0.0.1", "").allowed
    assert operator.page_access("::1", "").allowed
    assert operator.page_access("203.0.113.9", TOKEN).allowed
    with TestClient(operator_app(FakeFleet()), client=REMOTE) as remote:
        assert remote.get("/ui/").status_code == 403
        assert remote.get("/ui/vendor/hls.min.js").status_code == 403
        assert remote.get("/v1/operator/overview").status_code == 401


def test_other_machines_use_the_page_with_the_monitor_token(fleet: FakeFleet) -> None:
    with TestClient(operator_app(fleet, monitor_token=TOKEN), client=REMOTE) as remote:
        assert remote.get("/ui/").status_code == 200  # the page holds no data
        assert remote.get("/v1/operator/overview").status_code == 401
        assert remote.get("/v1/operator/overview", headers=bearer(TOKEN)).status_code == 200
        assert remote.post("/v1/streams/abc/start").status_code == 401
        assert remote.post("/v1/streams/abc/start", headers=bearer(TOKEN)).json()["accepted"] is True


def test_controls_are_refused_without_a_configured_token_even_on_loopback(fleet: FakeFleet) -> None:
    with TestClient(operator_app(fleet, monitor_token=""), client=LOOPBACK) as read_only:
        assert read_only.post("/v1/streams/abc/start").status_code == 403
        refused = read_only.post("/v1/streams/abc/stop", headers=bearer("anything"))
        assert refused.status_code == 403 and "MONITOR_TOKEN" in refused.json()["detail"]
        overview = read_only.get("/v1/operator/overview").json()
        assert overview["controls"] == {"enabled": False, "reason": refused.json()["detail"]}
    assert fleet.runners == {}


def test_controls_need_the_bearer_token(client: TestClient, fleet: FakeFleet) -> None:
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}):
        response = client.post("/v1/streams/abc/start", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert client.put("/v1/streams/abc/config", json={"target_languages": ["fr"]}).status_code == 401
    assert fleet.runners == {}


def test_stop_and_start_a_worker_and_the_list_keeps_a_stopped_stream(client: TestClient, fleet: FakeFleet) -> None:
    started = client.post("/v1/streams/abc/start", headers=bearer(TOKEN))
    assert started.status_code == 200 and started.json()["accepted"] is True
    rows = client.get("/v1/operator/overview").json()["streams"]
    assert [(r["stream_id"], r["state"]) for r in rows] == [("abc", "running")]

    stopped = client.post("/v1/streams/abc/stop", headers=bearer(TOKEN))
    assert stopped.json() == {"stream_id": "abc", "stopped": True}
    assert fleet.runners["abc"].stop_calls == 1
    for _ in range(100):  # the worker drains on its own thread
        row = client.get("/v1/operator/overview").json()["streams"][0]
        if row["state"] == "stopped":
            break
    assert row["state"] == "stopped" and row["stopped_by_operator_at"]

    again = client.post("/v1/streams/abc/start", headers=bearer(TOKEN))
    assert again.json()["accepted"] is True
    row = client.get("/v1/operator/overview").json()["streams"][0]
    assert row["state"] == "running" and row["stopped_by_operator_at"] is None
    assert client.post("/v1/streams/nope/stop", headers=bearer(TOKEN)).status_code == 404
    assert client.post("/v1/streams/bad%20id/start", headers=bearer(TOKEN)).status_code == 400


def test_config_sets_the_next_start_languages_when_the_manager_can(client: TestClient) -> None:
    manager = app_media_state(client.app).manager  # type: ignore[arg-type]
    calls: list[tuple[str, Any]] = []
    if not hasattr(manager, "set_next_targets"):
        response = client.put("/v1/streams/abc/config", json={"target_languages": ["fr"]}, headers=bearer(TOKEN))
        assert response.status_code == 501
        manager.set_next_targets = lambda stream_id, targets: calls.append((stream_id, targets))
    response = client.put(
        "/v1/streams/abc/config", json={"target_languages": ["FR", "it", "fr"]}, headers=bearer(TOKEN)
    )
    assert response.status_code == 200 and response.json()["target_languages"] == ["fr", "it"]
    if calls:
        assert calls == [("abc", ["fr", "it"])]
    else:
        assert manager.next_targets("abc") == ["fr", "it"]
    bad = client.put("/v1/streams/abc/config", json={"target_languages": ["xx-yy"]}, headers=bearer(TOKEN))
    assert bad.status_code == 422


def test_overview_says_sts_is_down_and_since_when(client: TestClient) -> None:
    overview = client.get("/v1/operator/overview").json()
    assert overview["sts"]["reachable"] is False and overview["sts"]["ready"] is False
    assert overview["sts"]["since"] and overview["sts"]["for_s"] >= 0
    assert overview["streams"] == []
    assert overview["publish_url"] == "rtmp://testserver:1935/live/<stream id>/in"  # the host the page was reached on
    assert overview["controls"]["enabled"] is True
    assert overview["defaults"]["source_language"] == "en"


def test_publish_url_names_the_host_the_operator_used_and_the_key_placeholder(client: TestClient) -> None:
    settings = app_media_state(client.app).settings  # type: ignore[arg-type]
    keyed = settings.model_copy(update={"publish_key": "k", "rtmp_base_url": "rtmp://127.0.0.1:1935/live"})
    assert (
        operator.publish_url(keyed, "media.example")
        == "rtmp://media.example:1935/live/<stream id>/in?key=<PUBLISH_KEY>"
    )
    assert operator.publish_url(keyed, "localhost").startswith("rtmp://127.0.0.1:1935/")


def rtmp(video: str | None = "H264", audio: str | None = "AAC") -> RtmpStream:
    return RtmpStream("abc/in", True, 2, 5000, video, audio, 1280, 720, 48000, players=1, worker_players=1)


def codes(problems: list[dict[str, str]]) -> list[str]:
    return [p["code"] for p in problems]


def test_unhappy_states_are_named() -> None:
    none = {"no_audio": 0.0, "unsupported_codec": 0.0, "no_streams": 0.0}
    running = {"state": "running", "sts": {"ready": True}}
    assert operator.stream_problems(running, rtmp(), none) == []
    assert codes(operator.stream_problems(running, rtmp(audio=None), none)) == ["no_audio"]
    assert codes(operator.stream_problems(running, None, {**none, "no_audio": 1.0})) == ["no_audio"]
    assert codes(operator.stream_problems({"state": "failed", "error": "x"}, rtmp(video="HEVC"), none)) == [
        "unsupported_codec",
        "failed",
    ]
    assert codes(operator.stream_problems({"state": "running", "sts": {"ready": False}}, rtmp(), none)) == ["sts"]


def test_players_and_phrases_wait_for_the_live_outputs(tmp_path: Any) -> None:
    from livedub.media.settings import MediaSettings

    settings = MediaSettings(_env_file=None, MEDIA_HLS_DIR=str(tmp_path))  # type: ignore[call-arg]
    assert not operator.outputs_ready(settings, "s1") and not operator.hls_ready(settings, "s1")
    directory = tmp_path / "s1"
    directory.mkdir()
    assert operator.outputs_ready(settings, "s1") and not operator.hls_ready(settings, "s1")
    (directory / "master.m3u8").write_text("#EXTM3U\n")
    assert operator.hls_ready(settings, "s1")
    (directory / "ended").touch()  # the last worker's presentation: a restarted worker writes a new one
    assert not operator.hls_ready(settings, "s1") and operator.outputs_ended(settings, "s1")
    assert not operator.hls_ready(settings.model_copy(update={"hls_enabled": False}), "s1")
