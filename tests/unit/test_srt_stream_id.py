"""SRT stream ids (MediaMTX's forms, SRT's access-control form, a bare id) and passphrase bounds."""

from __future__ import annotations

import pytest

from livedub.mediaserver.srt import SrtRefusal, SrtRoute, check_passphrase, parse_stream_id

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "route"),
    [
        ("publish:live/abc/in", SrtRoute("publish", "live/abc/in")),
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
    "raw", ["", "publish:live/abc/out", "read:live/../in", "publish:live/a b/in", "play:live/abc/out", "read:abc"]
)
def test_other_stream_ids_are_refused_with_a_reason(raw: str) -> None:
    refusal = parse_stream_id(raw)
    assert isinstance(refusal, SrtRefusal) and "stream id" in refusal.reason


def test_passphrase_bounds() -> None:
    assert check_passphrase("") is None and check_passphrase("x" * 10) is None
    assert "10 to 79" in (check_passphrase("short") or "")
