"""deploy/mediamtx.yml, executed: its runOnReady / runOnNotReady commands (split like MediaMTX does, with
MediaMTX's environment variables) start and stop a worker in the media-service, and its authHTTPAddress is an
endpoint of the app.

MediaMTX runs in its own container: to the media-service its hooks come from another host, so they must carry
MEDIA_HOOK_SECRET (issue 9, item 1). The app is served behind `FromHost`, which makes every request come from a
container address, as it would in the compose network."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from media_testkit import fresh_metrics, media_settings, process_fake_client, process_fake_runner, serve_asgi

from livedub.media.service.app import create_app
from livedub.media.service.manager import WorkerManager
from livedub.stack import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None or shutil.which("sh") is None, reason="needs sh and curl"),
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MEDIAMTX_YML = DEPLOY / "mediamtx.yml"
COMPOSE_MEDIA = DEPLOY / "docker-compose.media.yml"
SERVICE_URL = "http://media-service:8080"
CONTAINER_PEER = "172.18.0.3"  # the mediamtx container, as the media-service sees it
SECRET = "0123abcd"


class FromHost:
    """ASGI wrapper: every request's peer address is `host` (what uvicorn reports for a caller on another host)."""

    def __init__(self, app: Any, host: str) -> None:
        self.app, self.host = app, host

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "client": (self.host, 40000)}
        await self.app(scope, receive, send)


def compose_env(service: str) -> dict[str, str]:
    """The environment docker-compose.media.yml gives `service`, with ${VAR...} filled from MEDIA_HOOK_SECRET."""
    environment = yaml.safe_load(COMPOSE_MEDIA.read_text())["services"][service]["environment"]
    filled = {}
    for name, value in environment.items():
        filled[name] = re.sub(r"\$\{MEDIA_HOOK_SECRET[^}]*\}", SECRET, str(value))
    return filled


def input_path_config() -> dict[str, Any]:
    config = yaml.safe_load(MEDIAMTX_YML.read_text())
    [hooked] = [cfg for cfg in config["paths"].values() if cfg and "runOnReady" in cfg]
    return hooked


async def run_hook(command: str, base_url: str, path: str, secret: str = SECRET) -> int:
    argv = shlex.split(command.replace(SERVICE_URL, base_url))
    env = {
        **os.environ,
        "MEDIA_HOOK_SECRET": secret,  # the mediamtx container's environment (compose)
        "MTX_PATH": path,
        "MTX_QUERY": "key=abc",
        "MTX_SOURCE_TYPE": "rtmpConn",
        "MTX_SOURCE_ID": "7f1c",
        "RTSP_PORT": "8554",
    }
    process = await asyncio.create_subprocess_exec(*argv, env=env)
    return await process.wait()


async def test_mediamtx_hooks_start_and_stop_a_worker() -> None:
    hooked = input_path_config()
    assert SERVICE_URL + "/v1/mediamtx/events/ready" in hooked["runOnReady"]
    assert SERVICE_URL + "/v1/mediamtx/events/not-ready" in hooked["runOnNotReady"]
    assert compose_env("mediamtx")["MEDIA_HOOK_SECRET"] == SECRET
    assert compose_env("media-service")["MEDIA_HOOK_SECRET"] == SECRET
    manager = WorkerManager(
        media_settings(MEDIA_HOOK_SECRET=SECRET),
        fresh_metrics(),
        runner_factory=process_fake_runner,
        client_factory=process_fake_client,
        isolation="thread",
    )
    async with serve_asgi(FromHost(create_app(manager.settings, manager), CONTAINER_PEER), free_port()) as base_url:
        # Without the secret (or with a wrong one) the hook is refused: curl -f fails, no worker starts.
        assert await run_hook(hooked["runOnReady"], base_url, "live/cam7/in", secret="") != 0
        assert await run_hook(hooked["runOnReady"], base_url, "live/cam7/in", secret="guess") != 0
        assert manager.get("cam7") is None
        assert await run_hook(hooked["runOnReady"], base_url, "live/cam7/in") == 0
        handle = manager.get("cam7")
        assert handle is not None and handle.active and handle.source == "mediamtx:rtmpConn"
        assert await run_hook(hooked["runOnNotReady"], base_url, "live/cam7/in") == 0
        assert handle.task is not None
        await asyncio.wait_for(asyncio.shield(handle.task), 10)
        assert manager.get("cam7") is None
        # curl -f makes MediaMTX log a refused hook: an unknown path is answered 400.
        assert await run_hook(hooked["runOnReady"], base_url, "live/a/b/in") != 0
    await manager.shutdown()


async def test_mediamtx_auth_address_is_the_apps_auth_endpoint() -> None:
    config = yaml.safe_load(MEDIAMTX_YML.read_text())
    assert config["authMethod"] == "http"
    assert config["authHTTPAddress"] == SERVICE_URL + "/v1/mediamtx/auth"
    # compose overrides it (MTX_AUTHHTTPADDRESS) with the address that carries the hook secret.
    auth_url = compose_env("mediamtx")["MTX_AUTHHTTPADDRESS"]
    assert auth_url == f"{SERVICE_URL}/v1/mediamtx/auth?hook_secret={SECRET}"
    excluded = {rule["action"] for rule in config["authHTTPExclude"]}
    assert "publish" not in excluded
    settings = media_settings(PUBLISH_KEY="abc", MEDIA_HOOK_SECRET=SECRET)
    manager = WorkerManager(settings, fresh_metrics(), isolation="thread")
    async with serve_asgi(FromHost(create_app(manager.settings, manager), CONTAINER_PEER), free_port()) as base_url:
        async with httpx.AsyncClient() as http:
            url = auth_url.replace(SERVICE_URL, base_url)
            body = {"action": "publish", "path": "live/cam7/in", "ip": "172.18.0.9", "protocol": "rtmp", "id": "x"}
            assert (await http.post(url, json={**body, "query": "key=abc"})).status_code == 200
            assert (await http.post(url, json={**body, "query": ""})).status_code == 403
            # The auth address without its secret: every publish is refused.
            bare = f"{base_url}/v1/mediamtx/auth"
            response = await http.post(bare, json={**body, "query": "key=abc"})
            assert response.status_code == 403 and "hook" in response.json()["detail"]
    await manager.shutdown()
