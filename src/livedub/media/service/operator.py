"""The operator's page: `/ui/` (static HTML/CSS/JS, no build step) and the JSON and controls it uses.

- `GET /ui/`: the page; `GET /ui/vendor/hls.min.js`: hls.js from the npm registry, installed by the setup under
  `.cache/npm/node_modules/hls.js/dist/` (never copied into the repository).
- `GET /v1/operator/overview`: every stream (workers, inputs the media server has without a worker, streams the
  operator stopped), STS health and since when, the publish URL, whether controls are on.
- `POST /v1/streams/<id>/stop`, `POST /v1/streams/<id>/start`, `PUT /v1/streams/<id>/config`
  (`{"target_languages": [...]}`, applied at the next start): need `Authorization: Bearer MONITOR_TOKEN`.
  Without MONITOR_TOKEN the controls are off (the page is read-only) and the page is served to loopback only.

Players, captions and the phrase timeline use the HLS presentation and the SSE endpoints of outputs_http.py.
The data endpoints sit behind the service's access guard (media/service/access.py) like `/v1/streams`.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, field_validator

from livedub.languages import LANGUAGES
from livedub.media.pipeline.plan import LANGUAGE_CODE_PATTERN
from livedub.media.service.access import AccessDecision, control_access, is_loopback, page_access
from livedub.media.service.app_state import MediaAppState, OperatorState, media_state
from livedub.media.service.hooks import STREAM_ID_RE
from livedub.media.service.manager import WorkerManager
from livedub.media.service.worker_process import ChildMetrics
from livedub.media.settings import MediaSettings
from livedub.media.sts_link.sts_probe import StsProbe
from livedub.mediaserver.stat import RtmpStream, parse_rtmp_stat
from livedub.paths import livedub_home

log = logging.getLogger(__name__)

UI_DIR = Path(__file__).parent / "ui"
HLSJS_RELATIVE = Path("node_modules/hls.js/dist/hls.min.js")
# `npm install --prefix .cache/npm hls.js@1` in the repository (scripts/setup.sh; the source tree's root is 4 up),
# or in the working directory, or `--prefix $LIVEDUB_HOME/npm` (an installed package, a container image).
NPM_PREFIXES = (Path(__file__).resolve().parents[4] / ".cache" / "npm", Path.cwd() / ".cache" / "npm")
LANGUAGE_CODE_RE = re.compile(LANGUAGE_CODE_PATTERN)
STAT_TIMEOUT_S = 1.0

router = APIRouter()


# ---------------------------------------------------------------------------------------------------- state


def _state(request: Request) -> OperatorState:
    return media_state(request).operator


def _settings(request: Request) -> MediaSettings:
    return media_state(request).settings


def _manager(request: Request) -> WorkerManager:
    return media_state(request).manager


def monitor_token(settings: MediaSettings) -> str:
    """MONITOR_TOKEN; empty: controls off."""
    return settings.monitor_token


def _refusal(verdict: AccessDecision) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if verdict.status_code == 401 else None
    return JSONResponse({"detail": verdict.reason}, status_code=verdict.status_code, headers=headers)


# ---------------------------------------------------------------------------------------------------- the page


def hlsjs_path() -> Path | None:
    for prefix in (*NPM_PREFIXES, livedub_home() / "npm"):
        candidate = prefix / HLSJS_RELATIVE
        if candidate.is_file():
            return candidate
    return None


def _client_host(request: Request) -> str:
    return request.client.host if request.client else ""


@router.get("/ui", include_in_schema=False)
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/", include_in_schema=False)
async def ui_index(request: Request) -> Response:
    return _static(request, "index.html")


@router.get("/ui/vendor/hls.min.js", include_in_schema=False)
async def ui_hlsjs(request: Request) -> Response:
    verdict = page_access(_client_host(request), monitor_token(_settings(request)))
    if not verdict.allowed:
        return _refusal(verdict)
    path = hlsjs_path()
    if path is None:
        detail = "hls.js is not installed: run `npm install --prefix .cache/npm hls.js@1` (scripts/setup.sh does)"
        return JSONResponse({"detail": detail}, status_code=404)
    return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=3600"})


@router.get("/ui/{name}", include_in_schema=False)
async def ui_file(request: Request, name: str) -> Response:
    return _static(request, name)


_MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


def _static(request: Request, name: str) -> Response:
    verdict = page_access(_client_host(request), monitor_token(_settings(request)))
    if not verdict.allowed:
        return _refusal(verdict)
    files = {p.name: p for p in UI_DIR.iterdir() if p.is_file() and p.suffix in _MEDIA_TYPES}
    path = files.get(name)  # only the page's own files: no path from the request reaches the file system
    if path is None:
        return JSONResponse({"detail": f"no such file: {name}"}, status_code=404)
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------------------------------------------- overview


def publish_url(settings: MediaSettings, request_host: str | None) -> str:
    """Where to publish a new stream: RTMP_BASE_URL + `/<stream id>/in`; a loopback host is replaced by the host the
    operator reached the page on (what another machine can use)."""
    parts = urlsplit(str(settings.rtmp_base_url).rstrip("/"))
    host = parts.hostname or "127.0.0.1"
    if request_host and is_loopback(host) and not is_loopback(request_host) and request_host != "localhost":
        host = request_host
    netloc = f"{host}:{parts.port}" if parts.port else host
    url = urlunsplit((parts.scheme, netloc, parts.path, "", "")) + "/<stream id>/in"
    return url + ("?key=<PUBLISH_KEY>" if settings.publish_key else "")


def _language_names() -> dict[str, str]:
    return {code: lang.native_name for code, lang in LANGUAGES.items()}


def default_targets(settings: MediaSettings) -> list[str]:
    """WORKER_TARGET_LANGUAGES (MediaSettings.targets), else WORKER_TARGET_LANGUAGE."""
    return list(settings.targets)


def outputs_ready(settings: MediaSettings, stream_id: str) -> bool:
    """Whether the worker has made the stream's output directory (its phrase and caption logs) yet."""
    return settings.stream_dir(stream_id).is_dir()


def outputs_ended(settings: MediaSettings, stream_id: str) -> bool:
    """Whether the outputs there are a finished run's (the `ended` marker; a new worker removes it)."""
    return (settings.stream_dir(stream_id) / "ended").exists()


def hls_ready(settings: MediaSettings, stream_id: str) -> bool:
    """Whether the stream's live HLS presentation has its master playlist (the page starts its player then); not
    while the last worker's ended presentation is still there (a restarted worker replaces it)."""
    if not settings.hls_enabled:
        return False
    directory = settings.stream_dir(stream_id)
    return (directory / "master.m3u8").is_file() and not (directory / "ended").exists()


def _error_count(metrics_view: ChildMetrics, stream_id: str, kind: str) -> float:
    labels = {"stream_id": stream_id, "type": kind}
    return float(metrics_view.get_sample_value("media_service_worker_errors_total", labels) or 0.0)


PROBLEMS = {
    "no_audio": "The input has no audio: its video passes through, there is nothing to dub.",
    "unsupported_codec": "The input's video codec is not supported (H.264 only): the stream was refused.",
    "no_streams": "The input has neither audio nor video.",
}


def stream_problems(entry: dict[str, Any], rtmp: RtmpStream | None, errors: dict[str, float]) -> list[dict[str, str]]:
    """Unhappy states of one stream, as {code, message}, for the page to show in words."""
    problems = [{"code": code, "message": PROBLEMS[code]} for code, count in errors.items() if count > 0]
    codes = {p["code"] for p in problems}
    if rtmp is not None and rtmp.publishing and rtmp.video_codec and not rtmp.audio_codec and "no_audio" not in codes:
        problems.append({"code": "no_audio", "message": PROBLEMS["no_audio"]})
    if rtmp is not None and rtmp.video_codec and rtmp.video_codec.upper() not in {"H264", "AVC"}:
        if "unsupported_codec" not in codes:
            problems.append({"code": "unsupported_codec", "message": PROBLEMS["unsupported_codec"]})
    if entry.get("state") == "failed":
        problems.append({"code": "failed", "message": entry.get("error") or "the worker failed (see its log)"})
    sts = entry.get("sts") or {}
    if entry.get("state") == "running" and sts and not sts.get("ready"):
        problems.append({"code": "sts", "message": "not connected to STS: the original audio passes through"})
    return problems


def _input_info(rtmp: RtmpStream | None) -> dict[str, Any] | None:
    if rtmp is None:
        return None
    return {
        "publishing": rtmp.publishing,
        "video_codec": rtmp.video_codec,
        "audio_codec": rtmp.audio_codec,
        "width": rtmp.width,
        "height": rtmp.height,
        "time_s": round(rtmp.time_ms / 1000, 1),
    }


def stream_row(
    stream_id: str,
    entry: dict[str, Any] | None,
    rtmp: RtmpStream | None,
    errors: dict[str, float],
    settings: MediaSettings,
    state: OperatorState,
    next_targets: list[str] | None = None,
) -> dict[str, Any]:
    """One line of the stream list: the worker's status (if any) with what the page needs, named plainly;
    `next_targets`: the languages the operator chose for the stream's next start (the manager keeps them)."""
    entry = dict(entry or {})
    if not entry:
        entry["state"] = "stopped" if stream_id in state.stopped else "no worker"
    targets = entry.get("target_languages") or default_targets(settings)
    return {
        **entry,
        "stream_id": stream_id,
        "source_language": entry.get("source_language") or settings.source_language,
        "target_languages": list(targets),
        "next_target_languages": next_targets,
        "lag_s": entry.get("output_lag_s"),
        "dubbed_ratio_1m": entry.get("speech_dubbed_ratio_1m"),
        "dubs_dropped": entry.get("dubs_dropped"),
        "stopped_by_operator_at": _iso(state.stopped[stream_id]) if stream_id in state.stopped else None,
        "input": _input_info(rtmp),
        "problems": stream_problems(entry, rtmp, errors),
        "hls_url": f"/hls/{stream_id}/master.m3u8",
        "hls_ready": hls_ready(settings, stream_id),
        "logs_ready": outputs_ready(settings, stream_id),
        "outputs_ended": outputs_ended(settings, stream_id),
        "phrases_url": f"/v1/streams/{stream_id}/phrases",
        "captions_url": f"/v1/streams/{stream_id}/captions",
    }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


async def rtmp_inputs(stat_url: str) -> dict[str, RtmpStream]:
    """Inputs (`<id>/in`) the media server has, by stream id; {} when it has no /stat (MediaMTX) or is down."""
    if not stat_url:
        return {}
    try:
        async with httpx.AsyncClient(timeout=STAT_TIMEOUT_S) as client:
            response = await client.get(stat_url)
        streams = parse_rtmp_stat(response.text) if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError, SyntaxError):  # ElementTree.ParseError is a SyntaxError
        return {}
    return {name[: -len("/in")]: s for name, s in streams.items() if name.endswith("/in")}


async def sts_health(request: Request, state: OperatorState) -> dict[str, Any]:
    if state.probe is None:
        state.probe = StsProbe(_settings(request).sts_service_url, cache_s=2.0)
    health = dict(await state.probe.check())
    state.sts.update(bool(health.get("ready")))
    return {**health, "since": _iso(state.sts.since), "for_s": round(time.time() - state.sts.since, 1)}


def _stream_rows(app: MediaAppState, workers: dict[str, dict[str, Any]], inputs: dict[str, RtmpStream]) -> list[Any]:
    """One row per stream the page shows: workers, inputs being published without one, streams the operator
    stopped."""
    settings, manager, state = app.settings, app.manager, app.operator
    ids = sorted(set(workers) | {i for i, s in inputs.items() if s.publishing} | set(state.stopped))
    return [
        stream_row(
            stream_id,
            workers.get(stream_id),
            inputs.get(stream_id),
            {kind: _error_count(manager.metrics_view, stream_id, kind) for kind in PROBLEMS},
            settings,
            state,
            manager.next_targets(stream_id),
        )
        for stream_id in ids
    ]


@router.get("/v1/operator/overview")
async def overview(request: Request) -> dict[str, Any]:
    app = media_state(request)
    settings, manager, state = app.settings, app.manager, app.operator
    inputs = await rtmp_inputs(settings.media_server_stat_url)
    # The workers' snapshot after the last await: a stop that came in meanwhile must not be undone by a stale entry.
    workers = {entry["stream_id"]: entry for entry in manager.list_streams()}
    for stream_id, entry in workers.items():
        if entry.get("state") in {"starting", "running"}:
            state.stopped.pop(stream_id, None)  # running again (a republish or a start), not still draining
    token = monitor_token(settings)
    return {
        "streams": _stream_rows(app, workers, inputs),
        "sts": await sts_health(request, state),
        "sts_endpoints": app.sts_pool.snapshot(workers.values()),
        "workers": {"active": manager.active_count(), "max": manager.max_streams},
        "publish_url": publish_url(settings, request.url.hostname),
        "controls": {"enabled": bool(token), "reason": control_access(None, token).reason if not token else ""},
        "languages": _language_names(),
        "defaults": {"source_language": settings.source_language, "target_languages": default_targets(settings)},
        "server_time": _iso(time.time()),
    }


# ---------------------------------------------------------------------------------------------------- controls


class StreamConfigUpdate(BaseModel):
    """`PUT /v1/streams/<id>/config`: target languages for the stream's next start (null: the settings' own)."""

    target_languages: list[str] | None = Field(None, max_length=8)

    @field_validator("target_languages")
    @classmethod
    def _codes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        codes = list(dict.fromkeys(code.strip().lower() for code in value if code.strip()))
        bad = [code for code in codes if not LANGUAGE_CODE_RE.match(code)]
        known = _language_names()
        unknown = [code for code in codes if known and code not in known]
        if bad or unknown:
            raise ValueError(f"unsupported language code(s): {', '.join(bad + unknown)}")
        return codes or None


def _guard_control(request: Request, stream_id: str) -> JSONResponse | None:
    verdict = control_access(request.headers.get("authorization"), monitor_token(_settings(request)))
    if not verdict.allowed:
        log.warning("operator control %s refused from %s: %s", request.url.path, _client_host(request), verdict.reason)
        return _refusal(verdict)
    if not STREAM_ID_RE.match(stream_id):
        return JSONResponse({"detail": f"not a stream id: {stream_id!r}"}, status_code=400)
    return None


@router.post("/v1/streams/{stream_id}/stop")
async def stop_stream(request: Request, stream_id: str) -> JSONResponse:
    if (refused := _guard_control(request, stream_id)) is not None:
        return refused
    stopped = await _manager(request).stop_stream(stream_id)
    if stopped:
        _state(request).stopped[stream_id] = time.time()
    log.info("operator stopped %s: %s", stream_id, stopped)
    return JSONResponse({"stream_id": stream_id, "stopped": stopped}, status_code=200 if stopped else 404)


@router.post("/v1/streams/{stream_id}/start")
async def start_stream(request: Request, stream_id: str) -> JSONResponse:
    if (refused := _guard_control(request, stream_id)) is not None:
        return refused
    decision = await _manager(request).start_stream(stream_id, source="operator")
    if decision.accepted:
        _state(request).stopped.pop(stream_id, None)
    log.info("operator started %s: %s", stream_id, decision.reason)
    body = {"stream_id": stream_id, "accepted": decision.accepted, "reason": decision.reason}
    return JSONResponse(body, status_code=200 if decision.accepted else 409)


@router.put("/v1/streams/{stream_id}/config")
async def configure_stream(request: Request, stream_id: str, update: StreamConfigUpdate) -> JSONResponse:
    if (refused := _guard_control(request, stream_id)) is not None:
        return refused
    _manager(request).set_next_targets(stream_id, update.target_languages)  # kept there only: rows read them back
    body = {"stream_id": stream_id, "target_languages": update.target_languages, "applies": "at the next start"}
    return JSONResponse(body)
