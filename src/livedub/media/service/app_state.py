"""What the media-service's routes share, declared once: one `MediaAppState` stored on `app.state.media` by
`create_app`, read by every router through `media_state(request)` (no attribute probing on Starlette's free-form
`app.state`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import FastAPI, Request

from livedub.media.service.manager import WorkerManager
from livedub.media.settings import MediaSettings
from livedub.media.sts_link.sts_pool import StsPoolMonitor
from livedub.media.sts_link.sts_probe import StsProbe


@dataclass
class StsWatch:
    """STS readiness and the time of its last change (the page says "STS down since ...")."""

    ready: bool | None = None
    since: float = field(default_factory=time.time)

    def update(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready, self.since = ready, time.time()


@dataclass
class OperatorState:
    """What the operator did that the worker manager does not remember."""

    stopped: dict[str, float] = field(default_factory=dict)  # stream id -> when the operator stopped its worker
    sts: StsWatch = field(default_factory=StsWatch)
    probe: StsProbe | None = None


@dataclass
class MediaAppState:
    """The service's settings, its workers, the STS endpoints it watches and the operator's own memory."""

    settings: MediaSettings
    manager: WorkerManager
    sts_pool: StsPoolMonitor
    operator: OperatorState = field(default_factory=OperatorState)


class AppStateMissingError(RuntimeError):
    """A router of the media-service was mounted on an app that `create_app` did not build."""


def install_state(app: FastAPI, state: MediaAppState) -> None:
    app.state.media = state


def app_media_state(app: FastAPI) -> MediaAppState:
    try:
        state = app.state.media
    except AttributeError:  # Starlette's State raises it for a name never set
        state = None
    if not isinstance(state, MediaAppState):
        raise AppStateMissingError("the app has no MediaAppState: build it with livedub.media.service.app.create_app")
    return state


def media_state(request: Request) -> MediaAppState:
    return app_media_state(request.app)
