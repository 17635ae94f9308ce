"""HLS presentation of one stream: the video once (copied), an AAC rendition per language, a WebVTT rendition per
language, a master playlist that lists them all.

- FFmpeg's `hls` muxer (one output, `var_stream_map`) cuts and writes the MPEG-TS segments and the media playlists of
  the video and of each audio rendition: segments cut on video keyframes (audio-only renditions on their own grid),
  a sliding window with old segments deleted, PROGRAM-DATE-TIME, ENDLIST at close.
- The WebVTT renditions are written here: segments on the grid of the video's segments (or of the first audio
  rendition without video), the same PROGRAM-DATE-TIME anchor as FFmpeg's (the wall clock at the header, at the
  first packet), cue times in output timestamp seconds mapped by X-TIMESTAMP-MAP onto the TS timestamps (which are
  the output timestamps: the TS muxer adds no offset).
- The master is written here too: FFmpeg's cannot carry a NAME with spaces ("Original (English)") through
  `var_stream_map`, nor the subtitle group.

Clock: every time given to this module is the output timestamp clock (video dts_ms / 1000, audio pts / sample rate:
muxer.OutputTimeline). Callers give timestamps that are already final (muxer.OutputTimeline, like the publisher).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import av.error

from livedub.media.outputs.captions import Cue, mark_ended, vtt_document
from livedub.media.outputs.publisher import MAX_INTERLEAVE_DELTA_US, AacEncoder

log = logging.getLogger(__name__)

MASTER = "master.m3u8"
AUDIO_GROUP = "audio"
SUBS_GROUP = "subs"
AAC_CODECS = "mp4a.40.2"  # AAC-LC
DEFAULT_AVC_CODECS = "avc1.640028"  # High 4.0: said when the extradata does not tell
MS = Fraction(1, 1000)
STALE_SUFFIXES = (".ts", ".m3u8", ".vtt", ".tmp")


class HlsError(RuntimeError):
    """Writing the presentation failed (the stream's other outputs can go on)."""


@dataclass(frozen=True)
class Rendition:
    language: str  # BCP 47 / ISO 639-1 code, e.g. "es"
    name: str  # NAME shown in players' menus
    original: bool = False  # the input's own language

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c == "-" else "_" for c in self.language)


def display_name(code: str) -> str:
    try:
        from livedub.languages import LANGUAGES
    except ImportError:  # the table is optional here: only names come from it
        return code
    lang = LANGUAGES.get(code)
    return lang.native_name if lang is not None else code


def renditions_for(source: str, targets: Sequence[str]) -> list[Rendition]:
    """The original first ("Original (English)"), then each target by its native name."""
    out = [Rendition(source, f"Original ({display_name(source)})", original=True)]
    out += [Rendition(t, display_name(t)) for t in targets if t != source]
    return out


def subtitles_for(source: str, targets: Sequence[str]) -> list[Rendition]:
    """The source transcript, then each translation, by native name."""
    return [Rendition(source, display_name(source), original=True)] + [
        Rendition(t, display_name(t)) for t in targets if t != source
    ]


def avc_codecs(extradata: bytes | None) -> str:
    """RFC 6381 `avc1.PPCCLL` from H.264 extradata (avcC, or Annex B with an SPS)."""
    data = extradata or b""
    if len(data) >= 4 and data[0] == 1:  # avcC: version, profile, compatibility, level
        return f"avc1.{data[1]:02x}{data[2]:02x}{data[3]:02x}"
    for i in range(len(data) - 6):
        if data[i : i + 3] == b"\x00\x00\x01" and data[i + 3] & 0x1F == 7:  # SPS NAL: profile, flags, level follow
            return f"avc1.{data[i + 4]:02x}{data[i + 5]:02x}{data[i + 6]:02x}"
    return DEFAULT_AVC_CODECS


def program_date_time(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_atomic(path: Path, text: str) -> None:
    """Players poll playlists: they must never read a half-written one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def quoted(value: str) -> str:
    return '"' + value.replace('"', "'").replace("\n", " ") + '"'


# ---- master ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    codecs: str
    width: int
    height: int
    frame_rate: float | None


def audio_playlist(r: Rendition) -> str:
    return f"audio_{r.slug}.m3u8"


def subs_playlist(r: Rendition) -> str:
    return f"subs_{r.slug}.m3u8"


def master_playlist(
    video: VideoInfo | None,
    audio: Sequence[Rendition],
    channels: int,
    subtitles: Sequence[Rendition],
    bandwidth: int,
    average_bandwidth: int | None = None,
) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for i, r in enumerate(audio):
        # Without video the variant is the first rendition's playlist: its EXT-X-MEDIA has no URI (RFC 8216 4.3.4.1:
        # the rendition is in the variant's own playlist), so players do not load it twice.
        uri = "" if video is None and i == 0 else f",URI={quoted(audio_playlist(r))}"
        lines.append(
            f"#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID={quoted(AUDIO_GROUP)},LANGUAGE={quoted(r.language)},"
            f"NAME={quoted(r.name)},DEFAULT={'YES' if i == 0 else 'NO'},AUTOSELECT=YES,"
            f"CHANNELS={quoted(str(channels))}{uri}"
        )
    for r in subtitles:
        lines.append(
            f"#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID={quoted(SUBS_GROUP)},LANGUAGE={quoted(r.language)},"
            f"NAME={quoted(r.name)},DEFAULT=NO,AUTOSELECT=YES,FORCED=NO,URI={quoted(subs_playlist(r))}"
        )
    attrs = [f"BANDWIDTH={bandwidth}"]
    if average_bandwidth:
        attrs.append(f"AVERAGE-BANDWIDTH={average_bandwidth}")
    codecs = [AAC_CODECS] if audio else []
    if video is not None:
        codecs.insert(0, video.codecs)
    attrs.append(f"CODECS={quoted(','.join(codecs))}")
    if video is not None:
        attrs.append(f"RESOLUTION={video.width}x{video.height}")
        if video.frame_rate:
            attrs.append(f"FRAME-RATE={video.frame_rate:.3f}")
    if audio:
        attrs.append(f"AUDIO={quoted(AUDIO_GROUP)}")
    if subtitles:
        attrs.append(f"SUBTITLES={quoted(SUBS_GROUP)}")
    attrs.append("CLOSED-CAPTIONS=NONE")
    uri = "video.m3u8" if video is not None else audio_playlist(audio[0])
    lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), uri]
    return "\n".join(lines) + "\n"


# ---- WebVTT renditions -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anchor:
    """Output time `t0_s` (where segment 0 starts) happened at wall clock `wall0` (its PROGRAM-DATE-TIME)."""

    t0_s: float
    wall0: float
    first_sequence: int


@dataclass(frozen=True)
class _VttSegment:
    sequence: int
    uri: str
    duration: float
    wall: float


class VttRendition:
    """One language's segmented WebVTT and its media playlist (sliding window, old files deleted)."""

    def __init__(self, directory: Path, rendition: Rendition, segment_s: float, window: int) -> None:
        self.directory = directory
        self.rendition = rendition
        self.segment_s = segment_s
        self.window = window
        self.pending: list[Cue] = []
        self.segments: deque[_VttSegment] = deque()
        self.next_index = 0
        self.ended = False
        self.target_duration = max(1, math.ceil(round(segment_s, 3)))

    @property
    def playlist_path(self) -> Path:
        return self.directory / subs_playlist(self.rendition)

    def add(self, cue: Cue) -> None:
        if not self.ended:
            self.pending.append(cue)

    def publish_until(self, anchor: Anchor, t_s: float) -> None:
        """Publish every segment that ends by output time `t_s`."""
        while anchor.t0_s + (self.next_index + 1) * self.segment_s <= t_s:
            self._publish(anchor, self.segment_s)
        if not self.segments and not self.playlist_path.exists():
            self._write_playlist(anchor)  # an empty live playlist: players find the group's URI at once

    def close(self, anchor: Anchor | None, end_s: float) -> None:
        if self.ended:
            return
        if anchor is not None:
            self.publish_until(anchor, end_s)
            rest = end_s - (anchor.t0_s + self.next_index * self.segment_s)
            if rest > 0.001 or not self.segments:
                self._publish(anchor, max(rest, 0.001))
        self.ended = True
        self._write_playlist(anchor)

    def _publish(self, anchor: Anchor, duration: float) -> None:
        index = self.next_index
        start = anchor.t0_s + index * self.segment_s
        end = start + duration
        # Cues that start before the segment's end; ones added late (their segment already out) go here too.
        cues = sorted((c for c in self.pending if c.start_s < end), key=lambda c: c.start_s)
        self.pending = [c for c in self.pending if c.end_s > end]  # spanning cues repeat in the next segment
        sequence = anchor.first_sequence + index
        uri = f"subs_{self.rendition.slug}_{sequence}.vtt"
        write_atomic(self.directory / uri, vtt_document(cues, start))
        self.segments.append(_VttSegment(sequence, uri, duration, anchor.wall0 + index * self.segment_s))
        self.next_index += 1
        while len(self.segments) > self.window:
            old = self.segments.popleft()
            # One segment's grace after it leaves the playlist, like FFmpeg's hls_delete_threshold.
            _unlink(self.directory / f"subs_{self.rendition.slug}_{old.sequence - 1}.vtt")
        self._write_playlist(anchor)

    def _write_playlist(self, anchor: Anchor | None) -> None:
        first = self.segments[0].sequence if self.segments else (anchor.first_sequence if anchor else 0)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:6",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            f"#EXT-X-MEDIA-SEQUENCE:{first}",
            "#EXT-X-INDEPENDENT-SEGMENTS",
        ]
        for seg in self.segments:
            lines += [
                f"#EXTINF:{seg.duration:.6f},",
                f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(seg.wall)}",
                seg.uri,
            ]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        write_atomic(self.playlist_path, "\n".join(lines) + "\n")


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


# ---- bandwidth -------------------------------------------------------------------------------------------------------
class BitrateMeter:
    """Peak and average bits per second of the video over segments cut like FFmpeg cuts them (a keyframe at or past
    the next multiple of the segment duration), plus a share for the TS packaging."""

    TS_OVERHEAD = 1.12

    def __init__(self, segment_s: float) -> None:
        self.segment_s = segment_s
        self.start_s: float | None = None
        self.cut_s = 0.0
        self.bytes = 0
        self.peak = 0
        self.total_bytes = 0
        self.total_s = 0.0
        self.boundaries = 0

    def add(self, pts_s: float, size: int, keyframe: bool) -> bool:
        """Count one packet; True when a segment closed."""
        closed = False
        if self.start_s is None:
            self.start_s = self.cut_s = pts_s
        elif keyframe and pts_s - self.start_s >= (self.boundaries + 1) * self.segment_s:
            duration = pts_s - self.cut_s
            if duration > 0:
                self.peak = max(self.peak, round(self.bytes * 8 * self.TS_OVERHEAD / duration))
                self.total_bytes += self.bytes
                self.total_s += duration
            self.boundaries = math.floor((pts_s - self.start_s) / self.segment_s)
            self.cut_s, self.bytes, closed = pts_s, 0, True
        self.bytes += size
        return closed

    @property
    def average(self) -> int | None:
        return round(self.total_bytes * 8 * self.TS_OVERHEAD / self.total_s) if self.total_s else None


# ---- the presentation ------------------------------------------------------------------------------------------------
class HlsPresentation:
    """Writes a live HLS presentation into `directory` (see the module doc)."""

    def __init__(
        self,
        directory: Path,
        video_template: av.VideoStream | None,
        sample_rate: int,
        channels: int,
        renditions: Sequence[Rendition],
        subtitles: Sequence[Rendition] = (),
        segment_s: float = 2.0,
        window: int = 6,
        audio_bit_rate: int = 128_000,
        shared_encoders: Mapping[str, AacEncoder] | None = None,
    ) -> None:
        """`shared_encoders`: the encoders of languages that other outputs carry too (the RTMP publishers' ones), so
        that each language is encoded once; a rendition without one (the original) gets its own."""
        _check_unique(renditions, "audio")
        _check_unique(subtitles, "subtitle")
        if video_template is None and not renditions:
            raise ValueError("an HLS presentation needs video or at least one audio rendition")
        self.directory = Path(directory)
        self.segment_s = segment_s
        self.sample_rate = sample_rate
        self.channels = max(1, min(2, channels))
        self.renditions = list(renditions)
        self.audio_bit_rate = audio_bit_rate
        self.directory.mkdir(parents=True, exist_ok=True)
        _clean(self.directory)
        try:
            self.container = av.open(
                str(self.directory / "%v.m3u8"),
                mode="w",
                format="hls",
                options=self._hls_options(window, video_template is not None),
                # As the FLV publisher: when the audio stalls, video must not wait FFmpeg's default 10 s for it.
                container_options={"max_interleave_delta": str(MAX_INTERLEAVE_DELTA_US)},
            )
        except av.error.FFmpegError as e:
            raise HlsError(f"cannot open the HLS output in {self.directory}: {e}") from e
        self.video: av.VideoStream | None = None
        self.video_info: VideoInfo | None = None
        if video_template is not None:
            self.video = self.container.add_stream_from_template(video_template)
            self.video_info = _video_info(video_template)
        shared = shared_encoders or {}
        self.encoders = {
            r.language: shared.get(r.language) or AacEncoder(sample_rate, self.channels, audio_bit_rate)
            for r in self.renditions
        }
        self.audio: dict[str, av.AudioStream] = {}
        for r in self.renditions:
            stream = self.encoders[r.language].add_stream(self.container)
            stream.metadata["language"] = r.language
            self.audio[r.language] = stream
        self.subtitles = {r.language: VttRendition(self.directory, r, segment_s, window) for r in subtitles}
        self._reference = self.video if self.video is not None else self.audio[self.renditions[0].language]
        self.meter = BitrateMeter(segment_s)
        self._declared_video = _video_estimate(video_template) if video_template is not None else 0
        self.anchor: Anchor | None = None
        self._wall0: float | None = None
        self._first_sequence = 0
        self.written_s = 0.0  # output time written up to
        self.closed = False
        self._write_master()

    @property
    def master_path(self) -> Path:
        return self.directory / MASTER

    def _hls_options(self, window: int, has_video: bool) -> dict[str, str]:
        names = []
        if has_video:
            names.append("v:0,name:video")
        names += [f"a:{i},name:audio_{r.slug}" for i, r in enumerate(self.renditions)]
        return {
            "hls_time": f"{self.segment_s:g}",
            "hls_list_size": str(window),
            "hls_flags": "program_date_time+independent_segments+delete_segments+temp_file",
            # Sequence numbers from the epoch: a player polling across a restart of the stream never sees them go back.
            "hls_start_number_source": "epoch",
            "hls_segment_filename": str(self.directory / "%v_%d.ts"),
            "var_stream_map": " ".join(names),
        }

    # ---- writing ----------------------------------------------------------------------------------------------
    def _start(self) -> None:
        """Header at the first packet: FFmpeg takes its PROGRAM-DATE-TIME origin from the wall clock now."""
        self._wall0 = time.time()
        self._first_sequence = int(self._wall0)
        try:
            self.container.start_encoding()
        except av.error.FFmpegError as e:
            raise HlsError(f"cannot start the HLS output: {e}") from e

    def _mux(self, packet: av.Packet) -> None:
        if self.anchor is None and packet.stream is self._reference and packet.pts is not None:
            assert self._wall0 is not None and packet.time_base is not None
            self.anchor = Anchor(float(packet.pts * packet.time_base), self._wall0, self._first_sequence)
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as e:
            raise HlsError(f"HLS write failed: {e}") from e

    def write_video(self, packet: av.Packet, dts_ms: int, pts_ms: int) -> None:
        """One copied H.264 packet with final timestamps (ms). The packet itself is left as it was."""
        if self.video is None or self.closed:
            return
        if self._wall0 is None:
            self._start()
        copy = av.Packet(bytes(packet))
        copy.is_keyframe = packet.is_keyframe
        if packet.duration and packet.time_base is not None:
            copy.duration = round(packet.duration * packet.time_base * 1000)
        copy.stream = self.video
        copy.time_base = MS
        copy.dts = dts_ms
        copy.pts = pts_ms
        if self.meter.add(pts_ms / 1000, copy.size, packet.is_keyframe):
            self._maybe_raise_bandwidth()
        self._mux(copy)
        self._advance(dts_ms / 1000)

    def write_audio(self, language: str, frame: av.AudioFrame | None) -> None:
        """One PCM frame (pts in 1/sample_rate, the same for every rendition) for `language`'s rendition."""
        if self.closed:
            return
        stream = self.audio[language]
        if self._wall0 is None:
            self._start()
        try:
            packets = self.encoders[language].packets(frame)
        except av.error.FFmpegError as e:
            raise HlsError(f"AAC encoding failed ({language}): {e}") from e
        for packet in packets:
            packet.stream = stream
            self._mux(packet)
        if frame is not None and frame.pts is not None:
            self._advance((frame.pts + frame.samples) / self.sample_rate)

    def add_cue(self, language: str, start_s: float, end_s: float, text: str) -> None:
        """A subtitle cue in `language` (output timestamp seconds). Unknown languages are ignored."""
        track = self.subtitles.get(language)
        if track is not None and text.strip() and end_s > start_s:
            track.add(Cue(start_s, end_s, text))

    def _advance(self, t_s: float) -> None:
        if t_s <= self.written_s:
            return
        self.written_s = t_s
        if self.anchor is not None:
            for track in self.subtitles.values():
                track.publish_until(self.anchor, t_s)

    # ---- master -----------------------------------------------------------------------------------------------
    def _bandwidth(self) -> tuple[int, int | None]:
        audio = round(self.audio_bit_rate * 1.1) if self.renditions else 0  # ADTS + TS packaging
        video = max(self._declared_video, self.meter.peak)
        average = self.meter.average
        return video + audio, (average + audio if average else None)

    def _maybe_raise_bandwidth(self) -> None:
        """BANDWIDTH is the peak segment bit rate: raise it (with headroom) when a segment went past it."""
        if self.meter.peak > self._declared_video:
            self._declared_video = round(self.meter.peak * 1.1)
            self._write_master()

    def _write_master(self) -> None:
        bandwidth, average = self._bandwidth()
        text = master_playlist(
            self.video_info, self.renditions, self.channels, list(self.subtitles_renditions()), bandwidth, average
        )
        write_atomic(self.master_path, text)

    def subtitles_renditions(self) -> Iterable[Rendition]:
        return (track.rendition for track in self.subtitles.values())

    # ---- end --------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the encoders, end every playlist (#EXT-X-ENDLIST), mark the directory ended."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._wall0 is not None:
                for language, stream in self.audio.items():
                    for packet in self.encoders[language].packets(None):
                        packet.stream = stream
                        self._mux(packet)
            self.container.close()
        except av.error.FFmpegError as e:
            raise HlsError(f"closing the HLS output failed: {e}") from e
        finally:
            for track in self.subtitles.values():
                track.close(self.anchor, self.written_s)
            self._write_master()
            mark_ended(self.directory)


def _check_unique(renditions: Sequence[Rendition], what: str) -> None:
    languages = [r.language for r in renditions]
    if len(set(languages)) != len(languages):
        raise ValueError(f"one {what} rendition per language: {languages}")


def _clean(directory: Path) -> None:
    """A new run of the stream starts from an empty presentation (the cue logs are CueLog's)."""
    for path in directory.iterdir():
        if path.is_file() and (path.suffix in STALE_SUFFIXES or path.name == "ended"):
            _unlink(path)


def _video_info(template: av.VideoStream) -> VideoInfo:
    ctx = template.codec_context
    rate = template.average_rate or template.guessed_rate or template.base_rate
    return VideoInfo(avc_codecs(ctx.extradata), ctx.width, ctx.height, float(rate) if rate else None)


def _video_estimate(template: av.VideoStream) -> int:
    """Bits per second before any segment was measured: the input's declared rate, or ~0.1 bit per pixel."""
    rate = template.codec_context.bit_rate or template.bit_rate
    if rate:
        return int(rate)
    fps = float(template.average_rate or 30)
    return max(500_000, round(template.codec_context.width * template.codec_context.height * fps * 0.1))
