"""SRT stream ids (MediaMTX's forms, SRT's access-control form, a bare id), passphrase bounds, and MediaMTX's deploy
config offering the same SRT port and paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from livedub.mediaserver.srt import SrtRefusal, SrtRoute, check_passphrase, parse_stream_id

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.parametrize(
    ("raw", "route"),
    [
        ("publish:live/abc/in", SrtRoute("publish", "live/abc/in")),
        ("publish:live/abc/in:livedub:the-publish-key", SrtRoute("publish", "live/abc/in")),  # MediaMTX's user:pass
        ("read:live/abc/out/es:viewer:secret:x=1", SrtRoute("read", "live/abc/out/es")),
        ("abc", SrtRoute("publish", "live/abc/in")),
        ("read:live/abc/out", SrtRoute("read", "live/abc/out")),
        ("read:live/abc/out/es", SrtRoute("read", "live/abc/out/es")),
        ("read:live/abc/in", SrtRoute("read", "live/abc/in")),
        ("#!::r=live/abc/in,m=publish", SrtRoute("publish", "live/abc/in")),
        ("#!::r=live/abc/out/fr", SrtRoute("read", "live/abc/out/fr")),
    ],
)
def test_stream_ids_route(raw: str, route: SrtRoute) -> None:
    assert parse_stream_id(raw) == route


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "publish:live/abc/out",
        "read:live/../in",
        "publish:live/a b/in",
        "play:live/abc/out",
        "read:abc",
        "publish::live/abc/in",
    ],
)
def test_other_stream_ids_are_refused_with_a_reason(raw: str) -> None:
    refusal = parse_stream_id(raw)
    assert isinstance(refusal, SrtRefusal) and "stream id" in refusal.reason


def test_passphrase_bounds() -> None:
    assert check_passphrase("") is None and check_passphrase("x" * 10) is None
    assert "10 to 79" in (check_passphrase("short") or "")


def test_mediamtx_deploy_offers_srt_on_the_embedded_servers_port_with_the_publish_key() -> None:
    config = yaml.safe_load((DEPLOY / "mediamtx.yml").read_text())
    assert config["srt"] is True and config["srtAddress"] == ":8890"  # livedub up's default --srt-port
    assert "srtPublishPassphrase" in config["pathDefaults"]  # set from PUBLISH_KEY by the environment
    compose = yaml.safe_load((DEPLOY / "docker-compose.media.yml").read_text())["services"]["mediamtx"]
    assert "${PUBLISH_KEY:?" in compose["environment"]["MTX_PATHDEFAULTS_SRTPUBLISHPASSPHRASE"]
    assert "8890:8890/udp" in compose["ports"]
