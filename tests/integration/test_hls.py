"""A 20 s HLS presentation written from a real H.264 file (ffmpeg testsrc) with 3 AAC renditions and 2 WebVTT
renditions, checked with ffprobe/ffmpeg and against the rules of a live playlist that Apple's validator enforces
(mediastreamvalidator does not run here): target duration, program date time, rendition groups, bandwidth.

The driver feeds the presentation the way the paced muxer does: video packets with output timestamps (media ms +
100), one 1024-sample PCM frame per rendition with the same pts, audio written up to each video packet's time.
Each rendition gets its own tone, so the test can tell that every language's playlist carries its own audio.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from livedub.media.outputs.hls import HlsPresentation, Rendition, renditions_for, subtitles_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (make setup)"),
]

RATE = 48_000
FRAME = 1024
SHIFT_MS = 100  # as muxer.OutputTimeline
DURATION_S = 20
TONES = {"en": 300.0, "es": 500.0, "fr": 700.0}


@dataclass(frozen=True)
class AddedCue:
    language: str
    start_s: float
    end_s: float
    text: str


CUES = [AddedCue("en", 1.0 + 2.3 * i, 2.6 + 2.3 * i, f"phrase {i} & <more>") for i in range(8)] + [
    AddedCue("es", 1.1 + 2.3 * i, 3.9 + 2.3 * i, f"frase {i}\nsegunda línea") for i in range(8)
]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hls_src") / "src.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={DURATION_S}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p", "-bf", "2", str(path)],
        check=True,
    )  # fmt: skip
    return path


def tone_frame(language: str, index: int) -> av.AudioFrame:
    t = np.arange(index * FRAME, (index + 1) * FRAME) / RATE
    pcm = (np.sin(2 * np.pi * TONES[language] * t) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = RATE
    frame.pts = index * FRAME + SHIFT_MS * RATE // 1000
    frame.time_base = Fraction(1, RATE)
    return frame


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.glob("*.m3u8")}


def write_presentation(
    source: Path,
    directory: Path,
    audio: list[Rendition],
    subs: list[Rendition],
    *,
    video: bool,
    window: int,
    live_at_ms: int = 10_000,
) -> tuple[HlsPresentation, dict[str, str], dict[str, str]]:
    """Returns the presentation (closed) and the playlists as they were before the first packet and while live."""
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        hls = HlsPresentation(directory, stream if video else None, RATE, 1, audio, subs, segment_s=2.0, window=window)
        before, live = snapshot(directory), {}
        for cue in CUES:
            hls.add_cue(cue.language, cue.start_s, cue.end_s, cue.text)
        frames = 0

        def audio_until(ms: float) -> None:
            nonlocal frames
            while frames * FRAME * 1000 / RATE + SHIFT_MS <= ms:
                for r in audio:
                    hls.write_audio(r.language, tone_frame(r.language, frames))
                frames += 1

        for packet in src.demux(stream):
            if packet.dts is None:
                continue
            dts = round(packet.dts * packet.time_base * 1000) + SHIFT_MS
            pts = round(packet.pts * packet.time_base * 1000) + SHIFT_MS
            audio_until(dts)
            if not live and dts >= live_at_ms:
                live = snapshot(directory)
            if video:
                untouched = (bytes(packet), packet.pts, packet.stream)
                hls.write_video(packet, dts, pts)
                assert (bytes(packet), packet.pts, packet.stream) == untouched  # the caller's packet is untouched
        audio_until(DURATION_S * 1000 + SHIFT_MS)
        hls.close()
    return hls, before, live


@pytest.fixture(scope="module")
def written(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[HlsPresentation, dict, dict]:
    directory = tmp_path_factory.mktemp("hls_av")
    return write_presentation(
        source, directory, renditions_for("en", ["es", "fr"]), subtitles_for("en", ["es"]), video=True, window=20
    )


@pytest.fixture(scope="module")
def presentation(written: tuple[HlsPresentation, dict, dict]) -> HlsPresentation:
    return written[0]


@pytest.fixture(scope="module")
def audio_only(source: Path, tmp_path_factory: pytest.TempPathFactory) -> HlsPresentation:
    directory = tmp_path_factory.mktemp("hls_audio")
    (directory / "video_1.ts").write_bytes(b"stale")  # a previous run's files go away
    return write_presentation(
        source, directory, renditions_for("en", ["es", "fr"]), subtitles_for("en", ["es"]), video=False, window=3
    )[0]


# ---- playlist parsing --------------------------------------------------------------------------------------------
def attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line.split(":", 1)[1])}


@dataclass
class Segment:
    uri: str
    duration: float
    pdt: datetime | None


@dataclass
class MediaPlaylist:
    lines: list[str]
    target: int
    sequence: int
    segments: list[Segment]
    ended: bool


def parse_media(path: Path) -> MediaPlaylist:
    lines = path.read_text().splitlines()
    segments: list[Segment] = []
    duration, pdt = None, None
    for line in lines:
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt = datetime.fromisoformat(line.split(":", 1)[1].replace("+0000", "+00:00"))
        elif line and not line.startswith("#"):
            assert duration is not None, f"{path.name}: {line} without EXTINF"
            segments.append(Segment(line, duration, pdt))
            duration, pdt = None, None
    value = {line.split(":")[0]: line.split(":", 1)[1] for line in lines if ":" in line}
    return MediaPlaylist(
        lines,
        int(value["#EXT-X-TARGETDURATION"]),
        int(value["#EXT-X-MEDIA-SEQUENCE"]),
        segments,
        "#EXT-X-ENDLIST" in lines,
    )


def master(directory: Path) -> tuple[list[dict[str, str]], list[tuple[dict[str, str], str]]]:
    lines = (directory / "master.m3u8").read_text().splitlines()
    assert lines[0] == "#EXTM3U"
    media = [attrs(line) for line in lines if line.startswith("#EXT-X-MEDIA:")]
    variants = [(attrs(line), lines[i + 1]) for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF:")]
    return media, variants


def media_playlists(directory: Path) -> list[str]:
    media, variants = master(directory)
    return sorted({m["URI"] for m in media if "URI" in m} | {uri for _, uri in variants})


def check_apple_live_rules(directory: Path, window_segments: int) -> None:
    """The rules of RFC 8216 / Apple's HLS authoring spec that a live presentation trips over most."""
    media, variants = master(directory)
    for group in {m["GROUP-ID"] for m in media}:
        members = [m for m in media if m["GROUP-ID"] == group]
        assert len({m["TYPE"] for m in members}) == 1
        assert len({m["NAME"] for m in members}) == len(members), "NAME unique within a group"
        assert sum(m["DEFAULT"] == "YES" for m in members) <= 1, "one DEFAULT per group"
        for m in members:
            assert m["LANGUAGE"] and m["NAME"]
            assert m["DEFAULT"] != "YES" or m["AUTOSELECT"] == "YES", "DEFAULT=YES needs AUTOSELECT=YES"
            assert m["TYPE"] != "SUBTITLES" or "URI" in m, "a SUBTITLES rendition needs a URI"
    for inf, uri in variants:
        assert int(inf["BANDWIDTH"]) > 0 and inf["CODECS"]
        for kind in ("AUDIO", "SUBTITLES"):
            if kind in inf:
                assert any(m["GROUP-ID"] == inf[kind] and m["TYPE"] == kind for m in media), f"{kind} group listed"
        assert (directory / uri).exists()
    for name in media_playlists(directory):
        playlist = parse_media(directory / name)
        assert playlist.lines[0] == "#EXTM3U" and any(x.startswith("#EXT-X-VERSION:") for x in playlist.lines)
        assert playlist.segments, name
        for seg in playlist.segments:
            assert round(seg.duration) <= playlist.target, f"{name}: EXTINF {seg.duration} > {playlist.target}"
            assert seg.pdt is not None, f"{name}: {seg.uri} without PROGRAM-DATE-TIME"
            assert (directory / seg.uri).exists(), f"{name}: {seg.uri} missing"
        assert len(playlist.segments) <= window_segments
        # a live playlist must hold at least 3 target durations (the end may be shorter only once ended)
        assert sum(s.duration for s in playlist.segments) >= 3 * playlist.target - 2.1
        assert playlist.ended, f"{name}: no EXT-X-ENDLIST after close"


def ffprobe_streams(path: Path) -> list[dict]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-strict", "experimental", "-count_packets", "-show_entries",
         "stream=codec_type,codec_name,nb_read_packets", "-of", "json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out)["streams"]


def first_pts_s(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=pts_time", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return min(float(x.split(",")[0]) for x in out.split())


def dominant_hz(path: Path) -> float:
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])[: RATE // 2]
    spectrum = np.abs(np.fft.rfft(pcm))
    return float(np.argmax(spectrum) * RATE / len(pcm))


def vtt_cues(directory: Path, language: str) -> set[tuple[float, float, str]]:
    """Cues of a subtitle rendition, their times mapped onto the MPEG-TS clock through X-TIMESTAMP-MAP (as players
    do: time - LOCAL + MPEGTS / 90 kHz)."""
    cues = set()
    for seg in parse_media(directory / f"subs_{language}.m3u8").segments:
        text = (directory / seg.uri).read_text()
        assert text.startswith("WEBVTT\n")
        mpegts, local = re.search(r"X-TIMESTAMP-MAP=MPEGTS:(\d+),LOCAL:([\d:.]+)", text).groups()
        offset = int(mpegts) / 90_000 - seconds(local)
        for start, end, body in re.findall(r"([\d:.]+) --> ([\d:.]+)\n((?:.+\n?)+)", text):
            cues.add((round(seconds(start) + offset, 3), round(seconds(end) + offset, 3), body.strip()))
    return cues


def seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


# ---- tests -------------------------------------------------------------------------------------------------------
def test_master_lists_every_group(presentation: HlsPresentation) -> None:
    media, variants = master(presentation.directory)
    assert [(m["TYPE"], m["LANGUAGE"], m["NAME"], m["DEFAULT"]) for m in media] == [
        ("AUDIO", "en", "Original (English)", "YES"),
        ("AUDIO", "es", "Español", "NO"),
        ("AUDIO", "fr", "Français", "NO"),
        ("SUBTITLES", "en", "English", "NO"),
        ("SUBTITLES", "es", "Español", "NO"),
    ]
    ((inf, uri),) = variants
    assert uri == "video.m3u8" and inf["RESOLUTION"] == "320x240"
    assert re.fullmatch(r"avc1\.[0-9a-f]{6},mp4a\.40\.2", inf["CODECS"])


def test_while_live(written: tuple[HlsPresentation, dict, dict]) -> None:
    """Before the first packet the master is there; 10 s in, every playlist is live (no ENDLIST) and the subtitle
    playlists keep up with the media ones."""
    _, before, live = written
    assert set(before) == {"master.m3u8"} and before["master.m3u8"].count("#EXT-X-MEDIA:") == 5
    names = {"master.m3u8", "video.m3u8", "subs_en.m3u8", "subs_es.m3u8"} | {f"audio_{x}.m3u8" for x in TONES}
    assert set(live) == names
    counts = {}
    for name in names - {"master.m3u8"}:
        lines = live[name].splitlines()
        assert "#EXT-X-ENDLIST" not in lines and "#EXT-X-TARGETDURATION:2" in lines
        counts[name] = sum(line.startswith("#EXTINF:") for line in lines)
        assert sum(line.startswith("#EXT-X-PROGRAM-DATE-TIME:") for line in lines) == counts[name]
    assert 3 <= counts["video.m3u8"] <= 5  # 10 s written in 2 s segments (the open one is not listed)
    assert all(abs(n - counts["video.m3u8"]) <= 1 for n in counts.values()), counts


def test_every_rendition_playlist_decodes(presentation: HlsPresentation) -> None:
    d = presentation.directory
    (video,) = ffprobe_streams(d / "video.m3u8")
    assert video["codec_name"] == "h264" and int(video["nb_read_packets"]) == DURATION_S * 25
    for language, hz in TONES.items():
        (audio,) = ffprobe_streams(d / f"audio_{language}.m3u8")
        assert audio["codec_name"] == "aac" and int(audio["nb_read_packets"]) >= DURATION_S * RATE // FRAME
        assert dominant_hz(d / f"audio_{language}.m3u8") == pytest.approx(hz, abs=5)  # its own audio
    for language in ("en", "es"):
        (subs,) = ffprobe_streams(d / f"subs_{language}.m3u8")
        assert subs["codec_name"] == "webvtt" and int(subs["nb_read_packets"]) > 0


def test_apple_live_rules(presentation: HlsPresentation) -> None:
    check_apple_live_rules(presentation.directory, window_segments=20)


def test_bandwidth_covers_the_measured_peak(presentation: HlsPresentation) -> None:
    """Apple: the measured peak segment bit rate must not exceed BANDWIDTH by more than 10 %."""
    d = presentation.directory
    ((inf, _),) = master(d)[1]
    video = parse_media(d / "video.m3u8").segments
    audio = parse_media(d / "audio_en.m3u8").segments
    peak = max(
        ((d / v.uri).stat().st_size + (d / a.uri).stat().st_size) * 8 / v.duration
        for v, a in zip(video[:-1], audio[:-1], strict=False)
    )
    assert peak <= int(inf["BANDWIDTH"]) * 1.1


def test_program_date_time_is_one_clock_for_every_rendition(presentation: HlsPresentation) -> None:
    """PROGRAM-DATE-TIME minus the segment's start on the TS clock is the same constant in every playlist."""
    d = presentation.directory
    offsets = []
    for name in media_playlists(d):
        for seg in parse_media(d / name).segments[:-1]:
            if seg.uri.endswith(".vtt"):
                local = re.search(r"LOCAL:([\d:.]+)", (d / seg.uri).read_text()).group(1)
                start = seconds(local)
            else:
                start = first_pts_s(d / seg.uri)
            offsets.append(seg.pdt.timestamp() - start)
    assert max(offsets) - min(offsets) < 0.1


def test_ts_timestamps_are_the_output_timestamps(presentation: HlsPresentation) -> None:
    first = parse_media(presentation.directory / "video.m3u8").segments[0]
    assert first_pts_s(presentation.directory / first.uri) == pytest.approx(SHIFT_MS / 1000, abs=0.001)


def test_webvtt_cues_match_what_was_added(presentation: HlsPresentation) -> None:
    for language in ("en", "es"):
        got = vtt_cues(presentation.directory, language)
        added = [c for c in CUES if c.language == language]
        assert len(got) == len(added)  # a cue spanning segments is repeated, the same cue each time
        for cue in added:
            text = cue.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            (match,) = [g for g in got if g[2] == text]
            assert match[0] == pytest.approx(cue.start_s, abs=0.5) and match[1] == pytest.approx(cue.end_s, abs=0.5)
            assert match[0] == pytest.approx(cue.start_s, abs=0.001)  # in fact exact to the ms


def test_ffmpeg_plays_the_master_through(presentation: HlsPresentation) -> None:
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-strict", "experimental", "-i", str(presentation.master_path), "-map", "0",
         "-c:s", "webvtt", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("Stream #0:") >= 2 * 6  # 3 audio + 2 subtitles + video in and out
    stats = re.search(r"video:(\d+)\w*B audio:(\d+)\w*B subtitle:(\d+)\w*B", out.stderr)
    assert stats and all(int(x) > 0 for x in stats.groups())
    assert (presentation.directory / "ended").exists()


def test_audio_only_presentation_with_a_sliding_window(audio_only: HlsPresentation) -> None:
    d = audio_only.directory
    assert not (d / "video_1.ts").exists() and not (d / "video.m3u8").exists()
    media, ((inf, uri),) = master(d)
    assert uri == "audio_en.m3u8" and inf["CODECS"] == "mp4a.40.2" and "URI" not in media[0]
    check_apple_live_rules(d, window_segments=3)
    for language in TONES:
        playlist = parse_media(d / f"audio_{language}.m3u8")
        assert len(playlist.segments) == 3 and playlist.sequence > 0
        assert len(list(d.glob(f"audio_{language}_*.ts"))) <= 3 + 1  # older segments deleted (one kept in grace)
    assert len(parse_media(d / "subs_es.m3u8").segments) == 3 and len(list(d.glob("subs_es_*.vtt"))) <= 3 + 1
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-strict", "experimental", "-i", str(audio_only.master_path), "-map", "0",
         "-c:s", "webvtt", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"audio:[1-9]\d*\w*B", out.stderr)
