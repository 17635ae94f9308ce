"""Pure helpers of livedub.stack / livedub.observe / livedub.fixture: RTMP stat XML, Prometheus text, fixture layout."""

from __future__ import annotations

import pytest

from livedub.analysis.recorder import stream_name as _stream_name
from livedub.fixture import GAP_S, NUM_SLOTS, SLOT_PROMPTS, SLOT_S, load_transcripts
from livedub.observe import Metrics
from livedub.stack import StackConfig, parse_rtmp_stat

pytestmark = pytest.mark.unit

STAT = """<?xml version="1.0" encoding="utf-8" ?>
<rtmp><server><application><name>live</name><live>
<stream><name>abc/in</name><time>5000</time>
 <meta><video><width>1280</width><height>720</height><codec>H264</codec></video>
 <audio><codec>AAC</codec><sample_rate>48000</sample_rate></audio></meta>
 <client><id>1</id><publishing/><active/></client><client><id>2</id></client></stream>
<stream><name>abc/out</name><time>10</time><client><id>3</id></client></stream>
</live></application><application><name>other</name><live>
<stream><name>x</name><client><publishing/></client></stream></live></application></server></rtmp>"""


def test_parse_rtmp_stat() -> None:
    streams = parse_rtmp_stat(STAT)
    assert set(streams) == {"abc/in", "abc/out"}
    s = streams["abc/in"]
    assert s.publishing and s.clients == 2 and s.time_ms == 5000
    assert (s.video_codec, s.audio_codec, s.width, s.height, s.audio_sample_rate) == ("H264", "AAC", 1280, 720, 48000)
    out = streams["abc/out"]
    assert not out.publishing and out.video_codec is None
    assert parse_rtmp_stat("") == {}


def test_stream_name_from_url() -> None:
    assert _stream_name("rtmp://127.0.0.1:1935/live/cam1/out") == "cam1/out"


def test_free_ports_are_distinct() -> None:
    cfg = StackConfig.with_free_ports()
    assert len({cfg.rtmp_port, cfg.rtmp_http_port, cfg.sts_port, cfg.media_port}) == 4


EXPOSITION = """# HELP m_fragments_total x
# TYPE m_fragments_total counter
m_fragments_total{stream_id="a",status="success"} 8.0
m_fragments_total{stream_id="a",status="partial"} 2.0
m_fragments_total{stream_id="b",status="success"} 1.0
# HELP m_delta_ms x
# TYPE m_delta_ms histogram
m_delta_ms_bucket{stream_id="a",le="20.0"} 7.0
m_delta_ms_bucket{stream_id="a",le="120.0"} 19.0
m_delta_ms_bucket{stream_id="a",le="+Inf"} 20.0
m_delta_ms_count{stream_id="a"} 20.0
m_delta_ms_sum{stream_id="a"} 300.0
"""


def test_metrics_queries() -> None:
    m = Metrics.parse(EXPOSITION)
    assert m.value("m_fragments_total", stream_id="a") == 10.0
    assert m.by_label("m_fragments_total", "status", stream_id="a") == {"success": 8.0, "partial": 2.0}
    assert m.value("m_missing_total", default=-1.0) == -1.0
    assert m.histogram_fraction_le("m_delta_ms", 120.0, stream_id="a") == (0.95, 20.0)
    assert m.histogram_quantile("m_delta_ms", 0.5, stream_id="a") == 120.0
    with pytest.raises(KeyError):
        m.histogram_fraction_le("m_delta_ms", 50.0, stream_id="a")


def test_fixture_layout_fits_slots() -> None:
    transcripts = load_transcripts()
    assert len(SLOT_PROMPTS) == NUM_SLOTS and SLOT_S * NUM_SLOTS == 60.0
    for names in SLOT_PROMPTS:
        assert all(name in transcripts for name in names)
    assert GAP_S > 0
