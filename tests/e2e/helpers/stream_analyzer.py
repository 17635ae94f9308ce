"""ffprobe-based analysis of recorded streams and files: codecs, durations from packets, packet hashes, audio."""

from __future__ import annotations

import itertools
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class StreamInfo:
    index: int
    codec_type: str
    codec_name: str
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


@dataclass
class MediaInfo:
    format_name: str
    duration_s: float | None
    streams: list[StreamInfo] = field(default_factory=list)

    def first(self, codec_type: str) -> StreamInfo | None:
        return next((s for s in self.streams if s.codec_type == codec_type), None)


@dataclass(frozen=True)
class Packet:
    pts_s: float | None
    dts_s: float | None
    duration_s: float
    size: int
    keyframe: bool
    digest: str


def _ffprobe_json(args: list[str]) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def _rate(text: str | None) -> float | None:
    if not text or text == "0/0":
        return None
    num, _, den = text.partition("/")
    return float(num) / float(den or 1)


def probe(path: Path) -> MediaInfo:
    data = _ffprobe_json(["-show_format", "-show_streams", str(path)])
    streams = [
        StreamInfo(
            index=int(s["index"]),
            codec_type=s.get("codec_type", ""),
            codec_name=s.get("codec_name", ""),
            width=s.get("width"),
            height=s.get("height"),
            frame_rate=_rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate")),
            sample_rate=int(s["sample_rate"]) if s.get("sample_rate") else None,
            channels=s.get("channels"),
        )
        for s in data.get("streams", [])
    ]
    fmt = data.get("format", {})
    duration = float(fmt["duration"]) if fmt.get("duration") not in (None, "N/A") else None
    return MediaInfo(format_name=fmt.get("format_name", ""), duration_s=duration, streams=streams)


def packets(path: Path, codec_type: str) -> list[Packet]:
    """Every packet of the first `codec_type` stream ('v' or 'a'), with a SHA-256 of its payload."""
    data = _ffprobe_json(
        [
            "-select_streams", f"{codec_type}:0",
            "-show_entries", "packet=pts_time,dts_time,duration_time,size,flags,data_hash",
            "-show_data_hash", "SHA256",
            str(path),
        ]
    )  # fmt: skip

    def num(value: str | None) -> float | None:
        return float(value) if value not in (None, "N/A") else None

    return [
        Packet(
            pts_s=num(p.get("pts_time")),
            dts_s=num(p.get("dts_time")),
            duration_s=num(p.get("duration_time")) or 0.0,
            size=int(p["size"]),
            keyframe="K" in p.get("flags", ""),
            digest=p.get("data_hash", ""),
        )
        for p in data.get("packets", [])
    ]


def packets_duration_s(pkts: list[Packet]) -> float:
    """Span of the packets' presentation times, last packet's duration included."""
    times = [(p.pts_s, p.duration_s) for p in pkts if p.pts_s is not None]
    if not times:
        return 0.0
    start = min(t for t, _ in times)
    end = max(t + d for t, d in times)
    return end - start


@dataclass
class PacketMatch:
    input_count: int
    output_count: int
    matched: int  # output packets that are input packets
    in_order: bool  # matched packets keep the input's order, with no repeats
    first_input_index: int | None  # where in the input the output's first packet sits

    @property
    def coverage(self) -> float:
        return self.matched / self.input_count if self.input_count else 0.0


def match_packets(input_pkts: list[Packet], output_pkts: list[Packet]) -> PacketMatch:
    """Compare payload hashes: which output packets are input packets, and in which order."""
    index: dict[str, int] = {}
    for i, p in enumerate(input_pkts):
        index.setdefault(p.digest, i)
    positions = [index[p.digest] for p in output_pkts if p.digest in index]
    in_order = all(b > a for a, b in itertools.pairwise(positions))
    return PacketMatch(
        input_count=len(input_pkts),
        output_count=len(output_pkts),
        matched=len(positions),
        in_order=in_order,
        first_input_index=positions[0] if positions else None,
    )


def decode_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    """The first audio stream as mono float32 at `sample_rate` (FFmpeg resampling)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate),
         "-f", "f32le", "-"],
        check=True,
        capture_output=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, dtype="<f4").copy()


def align_offset_s(output: np.ndarray, reference: np.ndarray, sample_rate: int, max_shift_s: float = 1.0) -> float:
    """Where `reference` starts in `output` (seconds, may be negative): the peak of their cross-correlation over the
    first 10 s, searched within ±max_shift_s. Both mono float at `sample_rate`."""
    n = min(len(output), len(reference), 10 * sample_rate)
    a, b = output[:n] - output[:n].mean(), reference[:n] - reference[:n].mean()
    size = 1 << (2 * n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    shift = int(max_shift_s * sample_rate)
    lags = np.concatenate([np.arange(0, shift + 1), np.arange(-shift, 0)])
    values = np.concatenate([corr[: shift + 1], corr[-shift:]])
    return float(lags[int(np.argmax(values))] / sample_rate)


def component_gain_db(output: np.ndarray, component: np.ndarray) -> float:
    """Level of a known `component` (e.g. the music bed that was mixed in) inside `output` (same length), in dB
    relative to its original level: the least-squares gain of the component; what else plays (speech, a dub) is
    uncorrelated with it and averages out."""
    o, c = output.astype(np.float64), component.astype(np.float64)
    gain = float(np.dot(o, c) / max(np.dot(c, c), 1e-12))
    return 20 * float(np.log10(max(gain, 1e-6)))
