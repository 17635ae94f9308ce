"""deploy/mediamtx.yml, executed: its runOnReady / runOnNotReady commands (split like MediaMTX does, with
MediaMTX's environment variables) start and stop a worker in the media-service, and its authHTTPAddress is an
endpoint of the app."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from media_testkit import fresh_metrics, media_settings, process_fake_client, process_fake_runner, serve_asgi

from livedub.media.app import create_app
from livedub.media.manager import WorkerManager
from livedub.stack import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("curl") is None or shutil.which("sh") is None, reason="needs sh and curl"),
]

MEDIAMTX_YML = Path(__file__).resolve().parents[2] / "deploy" / "mediamtx.yml"
SERVICE_URL = "http://media-service:8080"


def input_path_config() -> dict[str, Any]:
    config = yaml.safe_load(MEDIAMTX_YML.read_text())
    [hooked] = [cfg for cfg in config["paths"].values() if cfg and "runOnReady" in cfg]
    return hooked


async def run_hook(command: str, base_url: str, path: str) -> int:
    argv = shlex.split(command.replace(SERVICE_URL, base_url))
    env = {
        **os.environ,
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
    manager = WorkerManager(
        media_settings(),
        fresh_metrics(),
        runner_factory=process_fake_runner,
        client_factory=process_fake_client,
        isolation="thread",
    )
    async with serve_asgi(create_app(manager.settings, manager), free_port()) as base_url:
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
    excluded = {rule["action"] for rule in config["authHTTPExclude"]}
    assert "publish" not in excluded
    manager = WorkerManager(media_settings(PUBLISH_KEY="abc"), fresh_metrics(), isolation="thread")
    async with serve_asgi(create_app(manager.settings, manager), free_port()) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            body = {"action": "publish", "path": "live/cam7/in", "ip": "172.18.0.9", "protocol": "rtmp", "id": "x"}
            assert (await http.post("/v1/mediamtx/auth", json={**body, "query": "key=abc"})).status_code == 200
            assert (await http.post("/v1/mediamtx/auth", json={**body, "query": ""})).status_code == 403
    await manager.shutdown()
