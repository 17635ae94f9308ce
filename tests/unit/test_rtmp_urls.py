import pytest

from livedub.mediaserver.urls import ffmpeg_rtmp_args, rtmp_options

pytestmark = pytest.mark.unit


def test_stream_names_with_a_slash_get_explicit_app_and_playpath() -> None:
    assert rtmp_options("rtmp://127.0.0.1:1935/live/abc/in") == {"rtmp_app": "live", "rtmp_playpath": "abc/in"}
    assert ffmpeg_rtmp_args("rtmp://h/live/x/out?key=k") == ["-rtmp_app", "live", "-rtmp_playpath", "x/out?key=k"]


def test_other_urls_need_no_options() -> None:
    assert rtmp_options("/tmp/file.flv") == {}
    assert rtmp_options("rtmp://h/live") == {}
