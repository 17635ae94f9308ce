"""STS pool: placement, stickiness, failover decisions, the media-service monitor (health over httpx transports)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from livedub.media.sts_link.sts_pool import (
    EndpointHealth,
    EndpointState,
    FixedEndpoint,
    PooledEndpoint,
    StsPoolMonitor,
    StsPoolSettings,
    check_health,
    choose,
    expand,
    stream_endpoint,
)

A, B, C = "http://sts-a:3000", "http://sts-b:3000", "http://sts-c:3000"


class FakeFleet:
    """/health answers per host: a dict body (200 when status ok, else 503), or an exception to raise."""

    def __init__(self, **bodies: Any) -> None:
        self.bodies: dict[str, Any] = {f"http://{k.replace('_', '-')}:3000": v for k, v in bodies.items()}
        self.calls: list[str] = []

    def set(self, url: str, body: Any) -> None:
        self.bodies[url] = body

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        self.calls.append(url)
        body = self.bodies.get(url, httpx.ConnectError("refused"))
        if isinstance(body, Exception):
            raise body
        return httpx.Response(200 if body.get("status") == "ok" else 503, json=body)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def ok(sessions: int = 0, inflight: int = 0) -> dict[str, Any]:
    return {"status": "ok", "active_sessions": sessions, "fragments_inflight": inflight, "worker_threads": 2}


def fast_settings(**overrides: Any) -> StsPoolSettings:
    values = {"health_interval_ms": 100, "health_timeout_ms": 200, "down_after": 2, "avoid_ms": 30000} | overrides
    return StsPoolSettings.model_validate({"STS_POOL_" + k.upper(): v for k, v in values.items()})


def test_urls_from_the_list_or_the_single_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_SERVICE_URLS", f" {A}/, {B},{A} ,")
    assert StsPoolSettings().urls("http://x:1") == [A, B]
    monkeypatch.setenv("STS_SERVICE_URLS", "")
    assert StsPoolSettings().urls("http://x:1/") == ["http://x:1"]
    assert isinstance(stream_endpoint("s", "http://x:1"), FixedEndpoint)
    monkeypatch.setenv("STS_SERVICE_URLS", f"{A},{B}")
    assert isinstance(stream_endpoint("s", "http://x:1"), PooledEndpoint)


async def test_health_states() -> None:
    fleet = FakeFleet(sts_a=ok(3, 2), sts_b={"status": "loading"}, sts_c={"status": "failed", "error": "boom"})
    async with fleet.client() as client:
        a, b, c = [await check_health(client, u) for u in (A, B, C)]
        missing = await check_health(client, "http://nowhere:3000")
    assert (a.state, a.sessions, a.inflight) == (EndpointState.HEALTHY, 3, 2)
    assert b.state is EndpointState.LOADING
    assert c.state is EndpointState.DOWN and c.error == "boom"
    assert missing.state is EndpointState.DOWN and "ConnectError" in (missing.error or "")


def test_choose_least_loaded_healthy_avoiding_failed() -> None:
    health = [
        EndpointHealth(A, EndpointState.HEALTHY, sessions=2),
        EndpointHealth(B, EndpointState.HEALTHY, sessions=1, inflight=3),
        EndpointHealth(C, EndpointState.LOADING),
    ]
    assert choose("s", health).url == B  # type: ignore[union-attr]
    assert choose("s", health, avoid={B}).url == A  # type: ignore[union-attr]
    assert choose("s", health, avoid={A, B}).url in {A, B}  # avoided, but better than none
    assert choose("s", [EndpointHealth(C, EndpointState.LOADING)]) is None


def test_ties_spread_streams_over_endpoints() -> None:
    health = [EndpointHealth(A, EndpointState.HEALTHY), EndpointHealth(B, EndpointState.HEALTHY)]
    chosen = {choose(f"stream-{i}", health).url for i in range(20)}  # type: ignore[union-attr]
    assert chosen == {A, B}
    assert choose("x", health) == choose("x", list(reversed(health)))  # the same answer in every process


async def test_sticky_until_a_failure_then_moved_and_back_after_avoid() -> None:
    fleet = FakeFleet(sts_a=ok(0), sts_b=ok(1))
    now = [100.0]
    registry = CollectorRegistry()
    endpoint = PooledEndpoint(
        "s1", [A, B], fast_settings(avoid_ms=5000), registry, http=fleet.client(), clock=lambda: now[0]
    )
    assert await endpoint.url() == A
    fleet.set(A, ok(5))  # more load later does not move a placed stream
    assert await endpoint.url() == A
    endpoint.report_failure("disconnected")
    assert await endpoint.url() == B
    value = registry.get_sample_value
    assert (
        value(
            "media_service_worker_sts_endpoint_failures_total",
            {"stream_id": "s1", "endpoint": A, "reason": "disconnected"},
        )
        == 1
    )
    assert value("media_service_worker_sts_endpoint_current", {"stream_id": "s1", "endpoint": B}) == 1
    assert value("media_service_worker_sts_endpoint_current", {"stream_id": "s1", "endpoint": A}) == 0
    # B fails too while A is still avoided: A is healthy and B is not, so A it is.
    fleet.set(B, httpx.ConnectError("refused"))
    endpoint.report_failure("connect")
    assert await endpoint.url() == A
    assert endpoint.placements == [A, B, A]
    await endpoint.close()


async def test_none_healthy_rotates_through_endpoints() -> None:
    fleet = FakeFleet()  # every /health refused
    endpoint = PooledEndpoint("s", [A, B], fast_settings(), http=fleet.client())
    first = await endpoint.url()
    endpoint.report_failure("connect")
    second = await endpoint.url()
    assert {first, second} == {A, B}
    await endpoint.close()


async def test_a_hung_endpoint_is_left_when_another_is_healthy() -> None:
    fleet = FakeFleet(sts_a=ok(0), sts_b=ok(1))
    endpoint = PooledEndpoint("s", [A, B], fast_settings(), http=fleet.client())
    assert await endpoint.url() == A
    endpoint.report_ready()
    fleet.set(A, httpx.ReadTimeout("no answer"))
    await asyncio.wait_for(endpoint.wait_lost(), 2.0)  # 2 failed checks at 100 ms
    assert await endpoint.url() == B
    await endpoint.close()


async def test_a_hung_endpoint_is_kept_when_no_other_is_healthy() -> None:
    fleet = FakeFleet(sts_a=ok(0), sts_b={"status": "loading"})
    endpoint = PooledEndpoint("s", [A, B], fast_settings(), http=fleet.client())
    assert await endpoint.url() == A
    endpoint.report_ready()
    fleet.set(A, httpx.ReadTimeout("no answer"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(endpoint.wait_lost(), 0.6)
    await endpoint.close()


async def test_fixed_endpoint_is_never_lost() -> None:
    endpoint = FixedEndpoint(A)
    endpoint.report_failure("connect")
    assert await endpoint.url() == A
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(endpoint.wait_lost(), 0.05)


async def test_monitor_metrics_and_snapshot() -> None:
    fleet = FakeFleet(sts_a=ok(2, 1), sts_b={"status": "loading"})
    registry = CollectorRegistry()
    monitor = StsPoolMonitor([A, B, C], registry, fast_settings())
    async with fleet.client() as client:
        await monitor.poll_once(client)
    streams = [
        {"stream_id": "x", "sts": {"endpoint": A}},
        {"stream_id": "y", "sts": {"endpoint": A}},
        {"stream_id": "z", "sts": None},
    ]
    rows = {row["url"]: row for row in monitor.snapshot(streams)}
    assert rows[A]["state"] == "healthy" and rows[A]["streams"] == ["x", "y"] and rows[A]["sessions"] == 2
    assert rows[B]["state"] == "loading" and rows[C]["state"] == "down" and rows[C]["health_failures"] == 1
    value = registry.get_sample_value
    assert value("media_service_sts_endpoint_state", {"endpoint": A}) == EndpointState.HEALTHY
    assert value("media_service_sts_endpoint_state", {"endpoint": C}) == EndpointState.DOWN
    assert value("media_service_sts_endpoint_streams", {"endpoint": A}) == 2
    assert value("media_service_sts_endpoint_inflight", {"endpoint": A}) == 1
    assert value("media_service_sts_endpoint_health_failures_total", {"endpoint": C}) == 1


async def test_dns_names_expand_to_every_address() -> None:
    urls = await expand(["dns+http://localhost:3000", A])
    assert "http://127.0.0.1:3000" in urls and urls[-1] == A
    assert await expand(["dns+http://no-such-host.invalid:3000"]) == []
    assert isinstance(stream_endpoint("s", "dns+http://localhost:3000"), PooledEndpoint)


async def test_monitor_follows_dns_and_forgets_gone_endpoints() -> None:
    registry = CollectorRegistry()
    monitor = StsPoolMonitor(["dns+http://localhost:3000"], registry, fast_settings())
    async with FakeFleet().client() as client:
        await monitor.poll_once(client)
    assert "http://127.0.0.1:3000" in [row["url"] for row in monitor.snapshot()]
    monitor.urls = [A]
    async with FakeFleet(sts_a=ok()).client() as client:
        await monitor.poll_once(client)
    assert [row["url"] for row in monitor.snapshot()] == [A] and monitor.healthy()
    assert registry.get_sample_value("media_service_sts_endpoint_state", {"endpoint": "http://127.0.0.1:3000"}) is None


async def test_monitor_start_once_and_stop() -> None:
    monitor = StsPoolMonitor([A], CollectorRegistry(), fast_settings())
    assert await monitor.start() is True
    assert await monitor.start() is False
    await monitor.stop()
    assert await monitor.start() is True
    await monitor.stop()
