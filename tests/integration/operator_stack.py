"""The media-service with the operator page, for the browser tests: `python operator_stack.py --port N`.

Settings come from the environment (as `livedub media`). The operator router and the HLS/captions router are
included here when media/app.py does not include them (yet); without media/outputs_http.py a stand-in serves the
HLS files and the phrase/caption logs as the contract describes (/hls/<id>/..., /v1/streams/<id>/phrases|captions).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from livedub.media import operator
from livedub.media.app import create_app
from livedub.media.settings import MediaSettings

CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t", ".vtt": "text/vtt"}


def stand_in_outputs(settings: MediaSettings) -> APIRouter:
    from livedub.media.captions import follow, sse_event

    router = APIRouter()

    @router.get("/hls/{stream_id}/{name}")
    async def hls_file(stream_id: str, name: str) -> Response:
        path = settings.stream_dir(stream_id) / Path(name).name
        if path.suffix not in CONTENT_TYPES or not path.is_file():
            return JSONResponse({"detail": "not found"}, status_code=404)
        return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})

    def sse(stream_id: str, name: str) -> StreamingResponse:
        async def events() -> Any:
            async for obj in follow(settings.stream_dir(stream_id) / name, idle_s=600.0):
                yield sse_event(obj)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.get("/v1/streams/{stream_id}/phrases")
    async def phrases(stream_id: str) -> StreamingResponse:
        return sse(stream_id, "phrases.jsonl")

    @router.get("/v1/streams/{stream_id}/captions")
    async def captions(stream_id: str) -> StreamingResponse:
        return sse(stream_id, "captions.jsonl")

    return router


def routes(app: FastAPI) -> set[str]:
    return {getattr(route, "path", "") for route in app.routes}


def build_app() -> tuple[FastAPI, str]:
    settings = MediaSettings()
    app = create_app(settings)
    if "/v1/operator/overview" not in routes(app):
        app.include_router(operator.router)
    outputs = "app.py"
    if not any(path.startswith("/hls/") for path in routes(app)):
        try:
            from livedub.media import outputs_http  # type: ignore[attr-defined]

            app.include_router(outputs_http.router)
            outputs = "outputs_http"
        except (ImportError, AttributeError):
            app.include_router(stand_in_outputs(settings))
            outputs = "stand-in"
    return app, outputs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app, outputs = build_app()
    print(f"operator stack: outputs from {outputs}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
