"""Measure flash-to-beep offsets of a recorded file or stream (the content-based A/V sync check).

Video: the mean luma of every decoded frame; a flash starts where it crosses the midpoint between the dark and the
bright level. Audio: decoded to mono float; a beep starts at the first sample above 30 % of the peak after a quiet
stretch. Each flash is paired with the nearest beep; offset = beep time - flash time (positive: audio late).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from livedub.mediaserver.urls import rtmp_options


@dataclass(frozen=True)
class AvSyncReport:
    flashes_s: list[float]
    beeps_s: list[float]
    offsets_ms: list[float] = field(default_factory=list)  # one per paired marker, in flash order

    @property
    def max_abs_offset_ms(self) -> float:
        return max((abs(x) for x in self.offsets_ms), default=float("nan"))

    @property
    def mean_offset_ms(self) -> float:
        return float(np.mean(self.offsets_ms)) if self.offsets_ms else float("nan")


def flash_onsets(times_s: list[float], luma: list[float]) -> list[float]:
    """Times of the frames where mean luma rises across the dark/bright midpoint."""
    if len(luma) < 2:
        return []
    values = np.asarray(luma, dtype=np.float64)
    lo, hi = float(np.percentile(values, 5)), float(values.max())
    if hi - lo < 40:  # no flash in this material
        return []
    mid = (lo + hi) / 2
    bright = values > mid
    return [times_s[i] for i in range(1, len(values)) if bright[i] and not bright[i - 1]] + (
        [times_s[0]] if bright[0] else []
    )


def beep_onsets(samples: np.ndarray, start_s: float, sample_rate: int, quiet_s: float = 0.2) -> list[float]:
    """Onset times of tone bursts in a mono float signal that starts at `start_s`."""
    if samples.size == 0:
        return []
    level = np.abs(samples)
    peak = float(level.max())
    if peak <= 1e-4:
        return []
    loud = np.flatnonzero(level > 0.3 * peak)
    if loud.size == 0:
        return []
    gap = int(quiet_s * sample_rate)
    starts = [int(loud[0])] + [int(loud[i]) for i in range(1, loud.size) if loud[i] - loud[i - 1] > gap]
    return [start_s + s / sample_rate for s in starts]


def pair_offsets(flashes: list[float], beeps: list[float], window_s: float = 0.5) -> list[float]:
    offsets: list[float] = []
    beep_arr = np.asarray(beeps)
    for flash in sorted(flashes):
        if beep_arr.size == 0:
            break
        nearest = float(beep_arr[np.argmin(np.abs(beep_arr - flash))])
        if abs(nearest - flash) <= window_s:
            offsets.append(1000.0 * (nearest - flash))
    return offsets


def packet_seconds(packet: av.Packet) -> float | None:
    """The packet's decoding time in seconds (PyAV packets have no `.time`, unlike frames); dts, being monotonic."""
    if packet.dts is None or packet.time_base is None:
        return None
    return float(packet.dts * packet.time_base)


def measure_av_sync(source: str | Path, max_seconds: float | None = None, open_timeout_s: float = 10.0) -> AvSyncReport:
    """Decode `source` (file path or RTMP URL) and return its flash/beep markers and offsets."""
    url = str(source)
    options = rtmp_options(url)
    container = av.open(url, options=options, timeout=(open_timeout_s, open_timeout_s))
    try:
        vstream = container.streams.video[0] if container.streams.video else None
        astream = container.streams.audio[0] if container.streams.audio else None
        if vstream is not None:
            vstream.thread_type = "AUTO"
        streams = [s for s in (vstream, astream) if s is not None]
        frame_times: list[float] = []
        luma: list[float] = []
        audio_start: float | None = None
        rate = astream.rate if astream is not None else 48000
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        first_time: float | None = None
        for packet in container.demux(*streams):
            if packet.dts is None:
                continue
            seconds = packet_seconds(packet)
            if max_seconds is not None and seconds is not None:
                first_time = seconds if first_time is None else first_time
                if seconds - first_time > max_seconds:
                    break
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    if frame.time is None:
                        continue
                    plane = frame.planes[0]
                    y = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[: frame.height, : frame.width]
                    frame_times.append(float(frame.time))
                    luma.append(float(y.mean()))
                elif isinstance(frame, av.AudioFrame):
                    if audio_start is None and frame.time is not None:
                        audio_start = float(frame.time)
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray().reshape(-1))
    finally:
        container.close()
    order = np.argsort(frame_times)
    times_sorted = [frame_times[i] for i in order]
    luma_sorted = [luma[i] for i in order]
    flashes = flash_onsets(times_sorted, luma_sorted)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    beeps = beep_onsets(samples, audio_start or 0.0, rate)
    return AvSyncReport(flashes_s=sorted(flashes), beeps_s=beeps, offsets_ms=pair_offsets(flashes, beeps))
