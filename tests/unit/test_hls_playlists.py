"""HLS pieces without FFmpeg: master playlist, WebVTT segments and their playlist, codecs string, bit rate meter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from livedub.media.outputs.captions import Cue, vtt_document, vtt_text, vtt_time
from livedub.media.outputs.hls import (
    Anchor,
    BitrateMeter,
    HlsPresentation,
    Rendition,
    VideoInfo,
    VttRendition,
    avc_codecs,
    master_playlist,
    program_date_time,
    renditions_for,
    subtitles_for,
)

pytestmark = pytest.mark.unit

AUDIO = [Rendition("en", "Original (English)", original=True), Rendition("es", "Español"), Rendition("fr", "Français")]
SUBS = [Rendition("en", "English", original=True), Rendition("es", "Español")]
VIDEO = VideoInfo("avc1.64001f", 1280, 720, 30.0)


def attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1])}


def test_names_come_from_the_language_table() -> None:
    assert renditions_for("en", ["es", "fr"]) == [
        Rendition("en", "Original (English)", original=True),
        Rendition("es", "Español"),
        Rendition("fr", "Français"),
    ]
    assert [r.name for r in subtitles_for("it", ["en"])] == ["Italiano", "English"]
    assert renditions_for("xx", [])[0].name == "Original (xx)"  # unknown code: the code itself


def test_master_lists_every_group_with_language_name_default() -> None:
    text = master_playlist(VIDEO, AUDIO, 2, SUBS, bandwidth=2_000_000, average_bandwidth=1_500_000)
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    media = [attrs(line) for line in lines if line.startswith("#EXT-X-MEDIA:")]
    audio = [m for m in media if m["TYPE"] == "AUDIO"]
    subs = [m for m in media if m["TYPE"] == "SUBTITLES"]
    assert [(m["LANGUAGE"], m["NAME"], m["DEFAULT"]) for m in audio] == [
        ("en", "Original (English)", "YES"),
        ("es", "Español", "NO"),
        ("fr", "Français", "NO"),
    ]
    assert all(m["GROUP-ID"] == "audio" and m["AUTOSELECT"] == "YES" and m["CHANNELS"] == "2" for m in audio)
    assert [m["URI"] for m in audio] == ["audio_en.m3u8", "audio_es.m3u8", "audio_fr.m3u8"]
    assert [(m["LANGUAGE"], m["NAME"], m["URI"]) for m in subs] == [
        ("en", "English", "subs_en.m3u8"),
        ("es", "Español", "subs_es.m3u8"),
    ]
    (inf_index,) = [i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF:")]
    inf = attrs(lines[inf_index])
    assert inf["BANDWIDTH"] == "2000000" and inf["AVERAGE-BANDWIDTH"] == "1500000"
    assert inf["CODECS"] == "avc1.64001f,mp4a.40.2" and inf["RESOLUTION"] == "1280x720"
    assert inf["AUDIO"] == "audio" and inf["SUBTITLES"] == "subs" and inf["CLOSED-CAPTIONS"] == "NONE"
    assert lines[inf_index + 1] == "video.m3u8"


def test_audio_only_master_plays_the_original_as_the_variant() -> None:
    text = master_playlist(None, AUDIO, 1, [], bandwidth=140_000)
    lines = text.splitlines()
    audio = [attrs(line) for line in lines if line.startswith("#EXT-X-MEDIA:")]
    assert "URI" not in audio[0] and audio[1]["URI"] == "audio_es.m3u8"  # the original is in the variant itself
    inf = attrs(next(line for line in lines if line.startswith("#EXT-X-STREAM-INF:")))
    assert inf["CODECS"] == "mp4a.40.2" and "RESOLUTION" not in inf and "SUBTITLES" not in inf
    assert lines[-1] == "audio_en.m3u8"


def test_names_with_quotes_stay_one_attribute() -> None:
    text = master_playlist(None, [Rendition("en", 'Say "hi", ok')], 1, [], bandwidth=1)
    assert "NAME=\"Say 'hi', ok\"" in text


def test_avc_codecs_from_avcc_and_annex_b() -> None:
    assert avc_codecs(bytes([1, 0x64, 0x00, 0x1F, 0xFF])) == "avc1.64001f"
    assert avc_codecs(b"\x00\x00\x00\x01\x67\x42\xc0\x0d\x8c") == "avc1.42c00d"
    assert avc_codecs(None) == "avc1.640028"


def test_vtt_text_times_and_timestamp_map() -> None:
    assert vtt_time(3725.5) == "01:02:05.500"
    assert vtt_time(100 * 3600) == "100:00:00.000"
    assert vtt_text("a < b & c\n\n-->x") == "a &lt; b &amp; c\n--&gt;x"
    doc = vtt_document([Cue(10.0, 11.5, "hola")], local_s=9.1)
    assert doc.startswith("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:819000,LOCAL:00:00:09.100\n\n")
    assert "00:00:10.000 --> 00:00:11.500\nhola\n" in doc
    # 27 h in: the TS clock wrapped (33 bits at 90 kHz), LOCAL did not
    assert "MPEGTS:" + str(27 * 3600 * 90_000 - (1 << 33)) in vtt_document([], 27 * 3600)


def vtt_segments(directory: Path, language: str) -> list[tuple[float, str]]:
    """(EXTINF, uri) of a subtitle playlist."""
    lines = (directory / f"subs_{language}.m3u8").read_text().splitlines()
    return [(float(lines[i][8:].rstrip(",")), lines[i + 2]) for i, x in enumerate(lines) if x.startswith("#EXTINF:")]


def test_vtt_rendition_segments_window_late_and_spanning_cues(tmp_path: Path) -> None:
    track = VttRendition(tmp_path, Rendition("es", "Español"), segment_s=2.0, window=3)
    anchor = Anchor(t0_s=0.1, wall0=1_000_000.0, first_sequence=500)
    track.add(Cue(0.5, 1.0, "uno"))
    track.add(Cue(1.5, 2.5, "dos"))  # spans segments 0 and 1
    track.publish_until(anchor, 2.0)  # segment 0 ends at 2.1: not yet
    assert vtt_segments(tmp_path, "es") == []
    track.publish_until(anchor, 4.2)
    assert [uri for _, uri in vtt_segments(tmp_path, "es")] == ["subs_es_500.vtt", "subs_es_501.vtt"]
    seg0 = (tmp_path / "subs_es_500.vtt").read_text()
    seg1 = (tmp_path / "subs_es_501.vtt").read_text()
    assert "uno" in seg0 and "dos" in seg0 and "uno" not in seg1 and "dos" in seg1
    track.add(Cue(3.0, 3.5, "tarde"))  # its segment is out already: it goes into the next one
    track.publish_until(anchor, 10.2)
    assert "tarde" in (tmp_path / "subs_es_502.vtt").read_text()
    playlist = (tmp_path / "subs_es.m3u8").read_text()
    assert "#EXT-X-MEDIA-SEQUENCE:502" in playlist and "#EXT-X-TARGETDURATION:2" in playlist
    assert f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(1_000_000.0 + 2 * 2.0)}" in playlist
    assert len(vtt_segments(tmp_path, "es")) == 3
    assert not (tmp_path / "subs_es_500.vtt").exists() and (tmp_path / "subs_es_501.vtt").exists()  # grace of 1
    track.close(anchor, 11.0)  # the last, partial segment and the end
    segments = vtt_segments(tmp_path, "es")
    assert segments[-1] == (pytest.approx(0.9), "subs_es_505.vtt")
    assert (tmp_path / "subs_es.m3u8").read_text().rstrip().endswith("#EXT-X-ENDLIST")


def test_bitrate_meter_measures_segments_cut_on_keyframes() -> None:
    meter = BitrateMeter(segment_s=2.0)
    for i in range(100):  # 25 fps, a keyframe every second, 1000 bytes a frame
        meter.add(i / 25, 1000, keyframe=i % 25 == 0)
    assert meter.peak == round(25 * 1000 * 8 * BitrateMeter.TS_OVERHEAD)
    assert meter.average == meter.peak
    assert meter.boundaries == 1  # a cut at 2.0 s (the one at 3.0 s waits for 4.0 s)


def test_presentation_needs_distinct_languages_and_some_media(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one audio rendition per language"):
        HlsPresentation(tmp_path, None, 48_000, 1, [Rendition("es", "a"), Rendition("es", "b")])
    with pytest.raises(ValueError, match="needs video or at least one audio rendition"):
        HlsPresentation(tmp_path, None, 48_000, 1, [])


def test_a_presentation_closed_before_any_packet_still_ends(tmp_path: Path) -> None:
    (tmp_path / "audio_en_17.ts").write_bytes(b"old run")
    (tmp_path / "captions.jsonl").write_text("{}\n")  # the cue log's, not the presentation's
    hls = HlsPresentation(tmp_path, None, 48_000, 2, renditions_for("en", ["es"]), subtitles_for("en", ["es"]))
    assert not (tmp_path / "audio_en_17.ts").exists() and (tmp_path / "captions.jsonl").exists()
    assert (tmp_path / "master.m3u8").exists()  # players can open the master before the first segment
    hls.add_cue("en", 1.0, 2.0, "never played")
    hls.close()
    hls.close()  # idempotent
    assert (tmp_path / "ended").exists()
    assert (tmp_path / "subs_en.m3u8").read_text().rstrip().endswith("#EXT-X-ENDLIST")
    hls.write_audio("en", None)  # after close: ignored
