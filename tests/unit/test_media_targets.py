"""Several target languages: settings (WORKER_TARGET_LANGUAGES, output URLs), output names in the media server's
hooks (an `out/<lang>` publish starts nothing), the manager's per-stream choice for the next start."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from media_fakes import FakeFleet, make_manager

from livedub.media.service.app import create_app
from livedub.media.service.hooks import StreamRole, parse_stream_name
from livedub.media.settings import MediaSettings

pytestmark = pytest.mark.unit


def test_target_languages_fall_back_to_the_one_target() -> None:
    one = MediaSettings(_env_file=None, WORKER_TARGET_LANGUAGE="fr")  # type: ignore[call-arg]
    assert one.targets == ["fr"]
    many = MediaSettings(_env_file=None, WORKER_TARGET_LANGUAGES=" es, FR,es ,")  # type: ignore[call-arg]
    assert many.targets == ["es", "fr"]
    assert many.output_url("x") == "rtmp://127.0.0.1:1935/live/x/out"
    assert many.output_url("x", "fr") == "rtmp://127.0.0.1:1935/live/x/out/fr"


@pytest.mark.parametrize(
    ("name", "stream_id", "role", "language"),
    [("abc/out/es", "abc", StreamRole.OUTPUT, "es"), ("live/abc/out/fr", "abc", StreamRole.OUTPUT, "fr"),
     ("abc/out", "abc", StreamRole.OUTPUT, None), ("live/abc/in", "abc", StreamRole.INPUT, None),
     ("live/out/es", "live", StreamRole.OUTPUT, "es")],
)  # fmt: skip
def test_output_names_per_language(name: str, stream_id: str, role: StreamRole, language: str | None) -> None:
    parsed = parse_stream_name(name)
    assert parsed is not None and (parsed.stream_id, parsed.role, parsed.language) == (stream_id, role, language)


@pytest.mark.parametrize("name", ["abc/in/es", "abc/out/ES", "abc/out/es/x", "abc/out/../in"])
def test_other_names_are_refused(name: str) -> None:
    assert parse_stream_name(name) is None


def test_a_language_output_publish_starts_no_worker() -> None:
    fleet = FakeFleet()
    manager = make_manager(fleet)
    client = TestClient(create_app(manager.settings, manager), client=("127.0.0.1", 50000))
    for hook, body in (
        ("/v1/nginx/on_publish", {"app": "live", "name": "abc/out/es", "addr": "127.0.0.1"}),
        ("/v1/mediamtx/events/ready", None),
    ):
        if body is None:
            response = client.post(hook, json={"path": "live/abc/out/fr"})
        else:
            response = client.post(hook, data=body)
        assert response.status_code == 200, response.text
    assert fleet.runners == {}


def test_the_next_start_takes_the_operators_targets() -> None:
    manager = make_manager(FakeFleet())
    assert manager.inputs_for("abc").targets == ("es",)
    manager.set_next_targets("abc", ["fr", "it", "fr"])
    assert manager.next_targets("abc") == ["fr", "it"]
    assert manager.inputs_for("abc").targets == ("fr", "it")
    assert manager.inputs_for("other").targets == ("es",)
    manager.set_next_targets("abc", None)
    assert manager.next_targets("abc") is None
    assert manager.inputs_for("abc").targets == ("es",)
