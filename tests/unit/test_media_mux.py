"""Aligner and muxer timestamp math: slots fitted exactly, one continuous FIFO, shared shift, delay line, fallbacks."""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from livedub.media.aligner import align, fit
from livedub.media.ingest import AudioChunk, StreamLayout, VideoPacket
from livedub.media.metrics import WorkerMetrics
from livedub.media.muxer import SHIFT_MS, OutputTimeline, PacedMuxer
from livedub.media.types import AudioSegment, DubOutcome, DubStatus, Pcm

pytestmark = pytest.mark.unit

RATE = 48000


def seg(seq: int, start: int, n: int, channels: int = 2, value: int = 0) -> AudioSegment:
    pcm = np.full((n, channels), value or seq + 1, dtype=np.int16)
    return AudioSegment("s", seq, start, pcm, RATE)


# ---- aligner ------------------------------------------------------------------------------------------------------
def test_fit_pads_trims_and_maps_channels() -> None:
    mono = np.arange(10, dtype=np.int16).reshape(-1, 1)
    out = fit(mono, 12, 2)
    assert out.shape == (12, 2)
    np.testing.assert_array_equal(out[:10, 0], np.arange(10))
    np.testing.assert_array_equal(out[:10, 1], np.arange(10))
    assert not out[10:].any()
    assert fit(mono, 4, 2).shape == (4, 2)
    stereo = np.stack([np.full(5, 100), np.full(5, 300)], axis=1).astype(np.int16)
    np.testing.assert_array_equal(fit(stereo, 5, 1), np.full((5, 1), 200, dtype=np.int16))
    assert fit(np.arange(7, dtype=np.int16), 7, 1).shape == (7, 1)  # 1-D input is mono


@pytest.mark.parametrize("error", [-333, 0, 451])
def test_align_fits_dub_to_its_slot(error: int) -> None:
    segment = seg(3, 48000, 96000)
    dub = np.full((96000 + error, 1), 7, dtype=np.int16)
    slot = align(segment, DubOutcome(3, DubStatus.DUBBED, pcm=dub))
    assert slot.dubbed and slot.pcm.shape == (96000, 2) and slot.start_sample == 48000
    assert (slot.pcm[: min(96000, 96000 + error)] == 7).all()


def test_align_falls_back_to_original() -> None:
    segment = seg(1, 0, 500)
    for outcome in (
        DubOutcome(1, DubStatus.FALLBACK, reason="timeout"),
        DubOutcome(1, DubStatus.DUBBED, pcm=None),
        DubOutcome(1, DubStatus.DUBBED, pcm=np.zeros((0, 2), dtype=np.int16)),
    ):
        slot = align(segment, outcome)
        assert not slot.dubbed
        np.testing.assert_array_equal(slot.pcm, segment.pcm)


# ---- timeline -----------------------------------------------------------------------------------------------------
def test_output_timeline_shifts_audio_and_video_by_the_same_constant() -> None:
    tl = OutputTimeline(RATE, audio_offset_ms=23)
    assert tl.video_ts(23) == 23 + SHIFT_MS
    assert tl.audio_pts(0) == (23 + SHIFT_MS) * RATE // 1000  # audio sample 0 sits where video ms 23 sits
    assert tl.audio_out_ms(0) == pytest.approx(tl.video_ts(23))
    assert tl.audio_pts(0) - 1024 > 0  # the encoder's priming packet stays positive (pitfall 4)
    assert tl.audio_out_ms(RATE * 6) == pytest.approx(tl.video_ts(23 + 6000))
    frames = tl.frames(0, 6 * RATE)
    assert len(frames) == 282 and frames[-1] == (281 * 1024, 6 * RATE - 281 * 1024)  # 281.25 frames (pitfall 6)


# ---- paced muxer --------------------------------------------------------------------------------------------------
class FakePublisher:
    def __init__(self) -> None:
        self.video: Any = object()
        self.audio: Any = object()
        self.log: list[tuple[str, int, Any]] = []  # (kind, ts in ms, payload)
        self.audio_frames: list[av.AudioFrame] = []
        self.closed = False

    def write_video(self, packet: av.Packet, dts_ms: int, pts_ms: int) -> None:
        self.log.append(("v", dts_ms, (bytes(packet), pts_ms)))

    def write_audio(self, frame: av.AudioFrame | None) -> int:
        if frame is not None:
            assert frame.pts is not None
            self.audio_frames.append(frame)
            self.log.append(("a", round(1000 * frame.pts / RATE), frame.samples))
        return 1

    def close(self) -> None:
        self.closed = True

    def audio_pcm(self) -> Pcm:
        return np.concatenate([f.to_ndarray().reshape(-1, 2) for f in self.audio_frames])


def make_muxer(delay_s: float = 2.0, offset_ms: int = 0) -> tuple[PacedMuxer, FakePublisher, WorkerMetrics]:
    layout = StreamLayout(video=None, audio_channels=2, sample_rate=RATE, audio_offset_ms=offset_ms)
    pub = FakePublisher()
    metrics = WorkerMetrics(CollectorRegistry())
    mux = PacedMuxer("s", layout, pub, delay_s, metrics, clock=lambda: 0.0)
    mux.has_video = True
    return mux, pub, metrics


def video(ms: int, arrival: float, comp: int = 0) -> VideoPacket:
    return VideoPacket(av.Packet(f"v{ms}".encode()), ms, comp, ms == 0, arrival)


def chunk(start: int, n: int, arrival: float, offset_ms: int = 0) -> AudioChunk:
    pcm = np.zeros((n, 2), dtype=np.int16)
    return AudioChunk(start, pcm, offset_ms + 1000 * start / RATE, arrival)


def test_muxer_paces_by_the_delay_line_and_fills_late_slots_with_the_original() -> None:
    mux, pub, metrics = make_muxer(delay_s=2.0)
    lengths = [50000, 70001, 30000]  # not multiples of 1024
    starts = [0, 50000, 120001]
    for i in range(0, 3700, 40):
        mux.add_video(video(i, arrival=i / 1000))
    for start in range(0, sum(lengths), 1024):  # real time: a chunk arrives when its last sample does
        n = min(1024, sum(lengths) - start)
        mux.add_audio(chunk(start, n, arrival=(start + n) / RATE))
    for i, (start, n) in enumerate(zip(starts, lengths, strict=True)):
        mux.add_slot(seg(i, start, n))
    dub0 = np.full((lengths[0] - 100, 1), 99, dtype=np.int16)  # a dub a little short, mono
    mux.resolve(align(seg(0, 0, lengths[0]), DubOutcome(0, DubStatus.DUBBED, pcm=dub0)))

    mux.step(1.999)  # nothing is due before arrival + delay
    assert pub.log == []
    mux.step(2.0)
    assert [k for k, _, _ in pub.log] == ["v", "a"]  # the first video packet and the first audio frame, both at t=0
    assert pub.log[0][1] == SHIFT_MS and pub.log[1][1] == SHIFT_MS
    mux.step(2.0 + 1.5)
    written_ms = [ts for _, ts, _ in pub.log]
    assert max(written_ms) <= SHIFT_MS + 1500  # nothing ahead of the clock
    # a dub for slot 1 that comes after its slot was sealed is ignored
    mux.resolve(align(seg(1, 50000, lengths[1]), DubOutcome(1, DubStatus.DUBBED, pcm=np.full((70001, 2), 5, "int16"))))
    mux.finish()
    mux.step(10.0)
    assert mux.done()
    pcm = pub.audio_pcm()
    assert pcm.shape[0] == sum(lengths) - sum(lengths) % 1024  # all but the final partial frame (run() writes it)
    assert (pcm[: lengths[0] - 100] == 99).all() and not pcm[lengths[0] - 100 : lengths[0]].any()
    np.testing.assert_array_equal(pcm[lengths[0] : starts[2]], 2)  # slot 1: original audio (value seq+1)
    np.testing.assert_array_equal(pcm[starts[2] : starts[2] + 1000], 3)
    pts = [f.pts for f in pub.audio_frames]
    assert pts == [SHIFT_MS * RATE // 1000 + 1024 * k for k in range(len(pts))]  # one continuous timeline
    assert mux.stats.dubbed == 1 and mux.stats.fallbacks == 2
    assert metrics.fallbacks.labels(stream_id="s", reason="late")._value.get() == 2
    kinds_ts = [(ts, k) for k, ts, _ in pub.log]
    assert [ts for ts, _ in kinds_ts] == sorted(ts for ts, _ in kinds_ts)  # written in time order (±1 ms rounding)


def test_muxer_sync_delta_follows_input_timestamps() -> None:
    mux, _, _ = make_muxer(delay_s=1.0, offset_ms=40)
    mux.add_video(video(0, 0.0))
    mux.add_audio(chunk(0, RATE, 0.0, offset_ms=40))
    # the input says the second second of audio starts 30 ms later than the sample count implies (a lost packet)
    mux.add_audio(AudioChunk(RATE, np.zeros((RATE, 2), dtype=np.int16), 40 + 1000 + 30, 1.0))
    mux.add_slot(seg(0, 0, RATE))
    mux.add_slot(seg(1, RATE, RATE))
    mux.step(5.0)
    assert mux.stats.sync_deltas_ms == [pytest.approx(0.0), pytest.approx(-30.0)]


def test_muxer_late_input_restarts_the_delay_line() -> None:
    mux, pub, _ = make_muxer(delay_s=2.0)
    mux.has_audio = False
    mux.add_video(video(0, 0.0))
    mux.step(2.0)
    mux.add_video(video(40, 5.0))  # arrives 4.96 s late: more than half the delay
    assert mux.stats.rebases == 1
    mux.step(6.9)
    assert len(pub.log) == 1  # it still waits its full delay
    mux.step(7.0)
    assert len(pub.log) == 2


def test_muxer_delay_line_ignores_the_burst_of_a_probe() -> None:
    mux, pub, _ = make_muxer(delay_s=2.0)
    mux.has_audio = False
    for ms in range(0, 440, 40):
        mux.add_video(video(ms, arrival=0.5))  # read in one burst after the input's probe
    mux.add_video(video(440, arrival=0.44))  # then real time: packets arrive at their media time
    mux.step(2.0)
    assert len(pub.log) == 1  # the delay counts from when the media really arrived, not from the burst
    mux.step(2.45)
    assert len(pub.log) == 12


def test_ingest_timeline_absorbs_timestamp_jumps() -> None:
    from livedub.media.ingest import Timeline

    tl = Timeline(origin_ms=5000)
    assert [tl.map("video", t, 40) for t in (5000, 5040, 5080)] == [0, 40, 80]
    assert tl.map("audio", 5021, 21) == 21
    assert tl.map("video", 90000, 40) == 120  # the publisher restarted its clock: continue after the last packet
    assert tl.map("audio", 90010, 21) == 130  # the same shift applies to the other stream: still in step
    assert tl.map("video", 90040, 40) == 160
    assert tl.map("video", 100, 40) == 200  # a jump backwards too
    assert tl.jumps == 2


def test_muxer_holds_the_output_when_the_delay_is_shorter_than_a_segment() -> None:
    """OUTPUT_DELAY_MS 1 s with 2 s slots: instead of video running on without audio, the output waits for each
    slot (the delay grows to the slot length + a margin) and the dubs still make it."""
    now = [0.0]
    layout = StreamLayout(video=None, audio_channels=2, sample_rate=RATE, audio_offset_ms=0)
    pub = FakePublisher()
    mux = PacedMuxer("s", layout, pub, 1.0, WorkerMetrics(CollectorRegistry()), clock=lambda: now[0])
    mux.has_video = True
    video_ms = list(range(0, 4000, 40))
    audio_starts = list(range(0, 4 * RATE, 1024))
    slot_len = 2 * RATE
    slots_added = 0
    first_write_at = None
    for step in range(0, 700):
        now[0] = t = step * 0.01
        while video_ms and video_ms[0] / 1000 <= t:
            mux.add_video(video(video_ms.pop(0), arrival=t))
        while audio_starts and (audio_starts[0] + 1024) / RATE <= t:
            start = audio_starts.pop(0)
            mux.add_audio(chunk(start, min(1024, 4 * RATE - start), arrival=t))
        if slots_added < 2 and t >= (slots_added + 1) * 2.0:  # the segmenter cuts when the last sample arrived
            segment = seg(slots_added, slots_added * slot_len, slot_len)
            mux.add_slot(segment)
            echo = DubOutcome(slots_added, DubStatus.DUBBED, pcm=segment.pcm)
            mux.resolve(align(segment, echo))
            slots_added += 1
        if t >= 6.0:
            mux.finish()
        mux.step(t)
        if pub.log and first_write_at is None:
            first_write_at = t
    assert first_write_at is not None and first_write_at >= 2.0  # nothing before the first slot existed
    assert mux.stats.dubbed == 2 and mux.stats.fallbacks == 0
    assert mux.stats.audio_starved >= 1
    assert len([k for k, _, _ in pub.log if k == "v"]) == 100  # all video written, none dropped
