"""Media server hooks: stream names, publish authorisation, and the FastAPI endpoints with fake workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from media_fakes import FakeFleet, make_manager

from livedub.media.service.access import PublishPolicy, is_loopback
from livedub.media.service.app import create_app, player_joined
from livedub.media.service.hooks import StreamName, StreamRole, key_from_query, parse_stream_name

pytestmark = pytest.mark.unit

REMOTE = "203.0.113.7"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("abc/in", StreamName("abc", StreamRole.INPUT)),
        ("live/abc/out", StreamName("abc", StreamRole.OUTPUT)),
        ("/live/show-1_x/in?key=k", StreamName("show-1_x", StreamRole.INPUT)),
        ("abc", None),
        ("abc/preview", None),
        ("other/abc/in", None),
        ("../x/in", None),
        ("a/b/c/in", None),
    ],
)
def test_parse_stream_name(name: str, expected: StreamName | None) -> None:
    assert parse_stream_name(name) == expected


@pytest.mark.parametrize(
    ("addr", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        (REMOTE, False),
        ("10.0.0.2", False),
        ("", False),
        ("unix:", False),
    ],
)
def test_is_loopback(addr: str, loopback: bool) -> None:
    assert is_loopback(addr) is loopback


def test_key_from_query() -> None:
    assert key_from_query("key=s3cret&x=1") == "s3cret"
    assert key_from_query("?x=1&key=a%2Fb") == "a/b"
    assert key_from_query("x=1") is None
    assert key_from_query("") is None


def test_publish_policy() -> None:
    policy = PublishPolicy("s3cret")
    inp, out = StreamName("a", StreamRole.INPUT), StreamName("a", StreamRole.OUTPUT)
    assert policy.authorize(inp, "127.0.0.1", None, own_worker_active=False).allowed
    assert policy.authorize(inp, REMOTE, "s3cret", own_worker_active=False).allowed
    assert not policy.authorize(inp, REMOTE, None, own_worker_active=False).allowed
    assert not policy.authorize(inp, REMOTE, "wrong", own_worker_active=True).allowed
    assert not policy.authorize(out, REMOTE, None, own_worker_active=False).allowed
    assert policy.authorize(out, REMOTE, None, own_worker_active=True).allowed
    # No PUBLISH_KEY: only loopback may publish, as documented (issue 9, item 2).
    nokey = PublishPolicy("")
    assert nokey.authorize(inp, "127.0.0.1", None, own_worker_active=False).allowed
    assert not nokey.authorize(inp, REMOTE, None, own_worker_active=False).allowed
    assert not nokey.authorize(inp, REMOTE, "", own_worker_active=False).allowed
    assert nokey.authorize(out, "172.18.0.3", None, own_worker_active=True).allowed  # the worker's container


@pytest.fixture
def fleet() -> FakeFleet:
    return FakeFleet()


LOCAL_PEER = ("127.0.0.1", 50000)  # where the embedded nginx-rtmp calls from


@pytest.fixture
def client(fleet: FakeFleet) -> Iterator[TestClient]:
    manager = make_manager(fleet, PUBLISH_KEY="s3cret", MAX_CONCURRENT_STREAMS=2, STS_SERVICE_URL="http://127.0.0.1:9")
    with TestClient(create_app(manager.settings, manager), client=LOCAL_PEER) as test_client:
        yield test_client


def on_publish(client: TestClient, name: str, addr: str = "127.0.0.1", **extra: str) -> int:
    form = {"call": "publish", "app": "live", "name": name, "addr": addr, "type": "live", **extra}
    return client.post("/v1/nginx/on_publish", data=form).status_code


def test_nginx_loopback_publisher_starts_a_worker(client: TestClient, fleet: FakeFleet) -> None:
    assert on_publish(client, "a/in") == 200
    assert "a" in fleet.runners
    streams = client.get("/v1/streams").json()["streams"]
    assert [s["stream_id"] for s in streams] == ["a"]
    assert streams[0]["source"] == "nginx"


def test_nginx_remote_publisher_needs_the_key(client: TestClient, fleet: FakeFleet) -> None:
    assert on_publish(client, "a/in", addr=REMOTE) == 403
    assert on_publish(client, "a/in", addr=REMOTE, key="wrong") == 403
    assert "a" not in fleet.runners
    assert on_publish(client, "a/in", addr=REMOTE, key="s3cret") == 200
    assert "a" in fleet.runners


def test_nginx_output_publisher_is_allowed_and_starts_nothing(client: TestClient, fleet: FakeFleet) -> None:
    assert on_publish(client, "a/out") == 200
    assert fleet.runners == {}
    assert on_publish(client, "b/out", addr=REMOTE) == 403


def test_nginx_refuses_unexpected_names(client: TestClient) -> None:
    assert on_publish(client, "just-a-name") == 403
    assert on_publish(client, "a/in", app="other") == 403


def test_excess_input_gets_403_with_the_limit_reason(client: TestClient, fleet: FakeFleet) -> None:
    assert on_publish(client, "a/in") == 200
    assert on_publish(client, "b/in") == 200
    response = client.post(
        "/v1/nginx/on_publish", data={"call": "publish", "app": "live", "name": "c/in", "addr": "127.0.0.1"}
    )
    assert response.status_code == 403
    assert "limit" in response.json()["reason"]
    assert "c" not in fleet.runners


def test_publish_done_stops_the_worker(client: TestClient, fleet: FakeFleet) -> None:
    assert on_publish(client, "a/in") == 200
    response = client.post("/v1/nginx/on_publish_done", data={"call": "publish_done", "app": "live", "name": "a/in"})
    assert response.status_code == 200 and response.json()["stopped"]
    assert fleet.runners["a"].stop_calls == 1
    # Unpublishing the output stream touches no worker.
    client.post("/v1/nginx/on_publish_done", data={"call": "publish_done", "app": "live", "name": "a/out"})
    assert fleet.runners["a"].stop_calls == 1


def test_mediamtx_ready_and_not_ready(client: TestClient, fleet: FakeFleet) -> None:
    event = {"path": "live/cam1/in", "sourceType": "rtmpConn", "sourceId": "42", "query": ""}
    assert client.post("/v1/mediamtx/events/ready", json=event).status_code == 200
    assert "cam1" in fleet.runners
    assert client.get("/v1/streams").json()["streams"][0]["source"] == "mediamtx:rtmpConn"
    assert client.post("/v1/mediamtx/events/ready", json={"path": "live/cam1/out"}).status_code == 200
    assert set(fleet.runners) == {"cam1"}
    assert client.post("/v1/mediamtx/events/not-ready", json={"path": "live/cam1/in"}).json()["stopped"]
    assert fleet.runners["cam1"].stop_calls == 1
    assert client.post("/v1/mediamtx/events/ready", json={"path": "elsewhere"}).status_code == 400


def test_mediamtx_auth(client: TestClient, fleet: FakeFleet) -> None:
    def auth(**body: str) -> int:
        return client.post("/v1/mediamtx/auth", json={"ip": REMOTE, "protocol": "rtmp", **body}).status_code

    assert auth(action="read", path="live/a/out") == 200
    assert auth(action="publish", path="live/a/in") == 403
    assert auth(action="publish", path="live/a/in", query="key=s3cret") == 200
    assert auth(action="publish", path="live/a/in", password="s3cret") == 200
    assert auth(action="publish", path="live/a/out") == 403
    # Full house: a new input is refused before it publishes.
    assert on_publish(client, "x/in") == 200 and on_publish(client, "y/in") == 200
    assert auth(action="publish", path="live/z/in", query="key=s3cret") == 403
    # The running worker's own output may publish from its container address.
    assert auth(action="publish", path="live/x/out") == 200


def test_health_metrics_and_streams(client: TestClient) -> None:
    on_publish(client, "a/in")
    health = client.get("/health").json()
    assert health["status"] == "degraded"  # nothing listens on the STS port
    assert health["sts"]["reachable"] is False
    assert health["workers"] == {"active": 1, "max": 2, "listed": 1}
    on_publish(client, "b/in")
    assert on_publish(client, "c/in") == 403
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'media_service_worker_errors_total{stream_id="c",type="stream_limit"} 1.0' in metrics.text
    assert client.get("/v1/streams").json()["max_concurrent_streams"] == 2


STAT_XML = """<?xml version="1.0" encoding="utf-8" ?>
<rtmp><server><application><name>live</name><live>
<stream><name>cam/in</name>{clients}</stream>
</live></application></server></rtmp>"""
PUBLISHER = "<client><id>1</id><address>127.0.0.1</address><publishing/><active/></client>"
PLAYER = "<client><id>2</id><address>127.0.0.1</address><flashver>LNX 9,0,124,2 livedub-worker</flashver></client>"
VIEWER = "<client><id>3</id><address>127.0.0.1</address><flashver>LNX 9,0,124,2</flashver></client>"


def test_player_joined_reads_nginx_stat() -> None:
    assert player_joined(STAT_XML.format(clients=PLAYER), "live", "cam/in")
    assert player_joined(STAT_XML.format(clients=PUBLISHER + PLAYER), "live", "cam/in")
    assert not player_joined(STAT_XML.format(clients=PUBLISHER), "live", "cam/in")
    assert not player_joined(STAT_XML.format(clients=PUBLISHER + VIEWER), "live", "cam/in")  # not the worker
    assert not player_joined(STAT_XML.format(clients=PLAYER), "live", "other/in")
    assert not player_joined(STAT_XML.format(clients=PLAYER), "vod", "cam/in")
    assert not player_joined("not xml", "live", "cam/in")


# ------------------------------------------------------------------ who may call the API (issue 9, item 1)

HOOK_SECRET, API_TOKEN = "h00k", "t0ken"


@pytest.fixture
def remote(fleet: FakeFleet) -> Iterator[TestClient]:
    """A caller on another host, against a service that has a hook secret and an API token."""
    manager = make_manager(
        fleet, MEDIA_HOOK_SECRET=HOOK_SECRET, MEDIA_API_TOKEN=API_TOKEN, STS_SERVICE_URL="http://127.0.0.1:9"
    )
    with TestClient(create_app(manager.settings, manager), client=(REMOTE, 40000)) as test_client:
        yield test_client


def test_forged_hooks_from_another_host_are_refused(remote: TestClient, fleet: FakeFleet) -> None:
    form = {"call": "publish", "app": "live", "name": "a/in", "addr": "127.0.0.1"}  # a lie about addr changes nothing
    assert remote.post("/v1/nginx/on_publish", data=form).status_code == 403
    assert remote.post("/v1/nginx/on_publish_done", data=form).status_code == 403
    assert remote.post("/v1/mediamtx/events/ready", json={"path": "live/a/in"}).status_code == 403
    assert remote.post("/v1/mediamtx/events/not-ready", json={"path": "live/a/in"}).status_code == 403
    assert remote.post("/v1/mediamtx/auth", json={"action": "publish", "path": "live/a/in"}).status_code == 403
    wrong = {"X-Livedub-Hook-Secret": "guess"}
    assert remote.post("/v1/mediamtx/events/ready", json={"path": "live/a/in"}, headers=wrong).status_code == 403
    assert fleet.runners == {}


def test_hooks_with_the_secret_are_accepted_from_another_host(remote: TestClient, fleet: FakeFleet) -> None:
    by_header = {"X-Livedub-Hook-Secret": HOOK_SECRET}
    assert remote.post("/v1/mediamtx/events/ready", json={"path": "live/a/in"}, headers=by_header).status_code == 200
    by_query = f"/v1/mediamtx/events/not-ready?hook_secret={HOOK_SECRET}"
    assert remote.post(by_query, json={"path": "live/a/in"}).json()["stopped"]
    assert fleet.runners["a"].stop_calls == 1


def test_control_endpoints_need_the_token_from_another_host(remote: TestClient) -> None:
    for path in ("/v1/streams", "/metrics", "/openapi.json"):
        response = remote.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert remote.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert remote.get(path, headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
    assert remote.get("/health").status_code == 200  # open: it names no stream


def test_without_secrets_only_loopback_may_call_hooks_and_control(fleet: FakeFleet) -> None:
    manager = make_manager(fleet, STS_SERVICE_URL="http://127.0.0.1:9")
    app = create_app(manager.settings, manager)
    with TestClient(app, client=(REMOTE, 40000)) as far, TestClient(app, client=("::1", 40000)) as near:
        assert far.post("/v1/mediamtx/events/ready", json={"path": "live/a/in"}).status_code == 403
        assert far.post("/v1/mediamtx/events/ready?hook_secret=", json={"path": "live/a/in"}).status_code == 403
        assert far.get("/v1/streams", headers={"Authorization": "Bearer "}).status_code == 401
        assert near.post("/v1/mediamtx/events/ready", json={"path": "live/a/in"}).status_code == 200
        assert near.get("/v1/streams").status_code == 200


def test_the_media_service_binds_loopback_by_default() -> None:
    from livedub.media.settings import MediaSettings

    assert MediaSettings(_env_file=None).media_host == "127.0.0.1"  # type: ignore[call-arg]


def test_nginx_hook_urls_carry_the_secret_only_when_set(tmp_path) -> None:
    from livedub.mediaserver.nginx import RtmpServerConfig, render_config

    plain = render_config(RtmpServerConfig(hooks_url="http://127.0.0.1:8080"), tmp_path)
    assert "on_publish http://127.0.0.1:8080/v1/nginx/on_publish;" in plain
    remote_cfg = RtmpServerConfig(hooks_url="http://10.1.2.3:8080", hook_secret="a b;c")
    secret = render_config(remote_cfg, tmp_path)
    assert "on_publish http://10.1.2.3:8080/v1/nginx/on_publish?hook_secret=a+b%3Bc;" in secret
    assert "on_publish_done http://10.1.2.3:8080/v1/nginx/on_publish_done?hook_secret=a+b%3Bc;" in secret
