"""Aligner and muxer timestamp math: slots fitted exactly, one continuous FIFO, shared shift, delay line, fallbacks."""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from livedub.deadline import PLACE_MARGIN_S
from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.aligner import dub_clip, fallback_reason
from livedub.media.pipeline.background import DuckedBackground
from livedub.media.pipeline.dubtrack import DubClip, DubTrack
from livedub.media.pipeline.ingest import AudioChunk, StreamLayout, VideoPacket
from livedub.media.pipeline.muxer import SHIFT_MS, Lane, OutputTimeline, PacedMuxer
from livedub.media.types import AudioSegment, DubOutcome, DubStatus, Pcm

pytestmark = pytest.mark.unit

RATE = 48000


def seg(seq: int, start: int, n: int, channels: int = 2, value: int = 0) -> AudioSegment:
    pcm = np.full((n, channels), value or seq + 1, dtype=np.int16)
    return AudioSegment("s", seq, start, pcm, RATE)


# ---- aligner ------------------------------------------------------------------------------------------------------
def test_dub_clip_is_the_dubs_speech_at_its_place() -> None:
    segment = seg(3, 48000, 96000)
    dub = np.zeros((96000, 2), dtype=np.int16)
    dub[1200:50000] = 16384
    clip = dub_clip(segment, DubOutcome(3, DubStatus.DUBBED, pcm=dub))
    assert clip is not None and clip.sequence_number == 3
    assert clip.wanted_start == 48000 + 1200 and len(clip.audio) == 50000 - 1200
    assert clip.audio == pytest.approx(0.5)  # mono float


def test_no_clip_without_a_dub() -> None:
    segment = seg(1, 0, 500)
    for outcome, reason in (
        (DubOutcome(1, DubStatus.FALLBACK, reason="timeout"), "timeout"),
        (DubOutcome(1, DubStatus.DUBBED, pcm=None), "no_speech"),
        (DubOutcome(1, DubStatus.DUBBED, pcm=np.zeros((500, 2), dtype=np.int16)), "no_speech"),  # STS heard nothing
    ):
        assert dub_clip(segment, outcome) is None
        assert fallback_reason(outcome) == reason


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


def make_muxer(
    delay_s: float = 2.0, offset_ms: int = 0, now: list[float] | None = None, **track: float
) -> tuple[PacedMuxer, FakePublisher, WorkerMetrics]:
    layout = StreamLayout(video=None, audio_channels=2, sample_rate=RATE, audio_offset_ms=offset_ms)
    pub = FakePublisher()
    metrics = WorkerMetrics(CollectorRegistry())
    clock = (lambda: now[0]) if now is not None else (lambda: 0.0)
    dubs = DubTrack(RATE, stretch=lambda a, speed: a[: round(len(a) / speed)], **{"fade_s": 0.01, **track})
    mux = PacedMuxer(
        "s", layout, delay_s, metrics, clock=clock, lanes=[Lane("", dubs, [pub])], background=DuckedBackground(-20)
    )
    mux.has_video = True
    return mux, pub, metrics


def video(ms: int, arrival: float, comp: int = 0) -> VideoPacket:
    return VideoPacket(av.Packet(f"v{ms}".encode()), ms, comp, ms == 0, arrival)


def chunk(start: int, n: int, arrival: float, offset_ms: int = 0, value: int = 0) -> AudioChunk:
    pcm = np.full((n, 2), value, dtype=np.int16)
    return AudioChunk(start, pcm, offset_ms + 1000 * start / RATE, arrival)


def feed_realtime(mux: PacedMuxer, samples: int, value: int = 1000, video_ms: int = 0) -> None:
    """Audio chunks that arrive when their last sample does, video every 40 ms."""
    for i in range(0, video_ms, 40):
        mux.add_video(video(i, arrival=i / 1000))
    for start in range(0, samples, 1024):
        n = min(1024, samples - start)
        mux.add_audio(chunk(start, n, arrival=(start + n) / RATE, value=value))


def speech(seq: int, start: int, n: int) -> AudioSegment:
    return AudioSegment("s", seq, start, np.full((n, 2), 1000, dtype=np.int16), RATE, speech_ms=1000 * n / RATE)


def test_muxer_paces_by_the_delay_line_and_keeps_the_original_where_no_dub_came() -> None:
    mux, pub, metrics = make_muxer(delay_s=2.0)
    lengths = [50000, 70001, 30000]  # not multiples of 1024
    starts = [0, 50000, 120001]
    total = sum(lengths)
    feed_realtime(mux, total, value=1000, video_ms=3700)
    for i, (start, n) in enumerate(zip(starts, lengths, strict=True)):
        mux.add_phrase(speech(i, start, n))
    mux.resolve(0, DubClip(0, 4800, np.full(40000, 0.25, dtype=np.float32)), language="")  # speech 0.1 s into phrase 0

    mux.step(1.999)  # nothing is due before arrival + delay
    assert pub.log == []
    mux.step(2.0)
    assert [k for k, _, _ in pub.log] == ["v", "a"]  # the first video packet and the first audio frame, both at t=0
    assert pub.log[0][1] == SHIFT_MS and pub.log[1][1] == SHIFT_MS
    mux.step(2.0 + 2.9)
    written_ms = [ts for _, ts, _ in pub.log]
    assert max(written_ms) <= SHIFT_MS + 2900  # nothing ahead of the clock
    # phrase 1 (1.04 s..2.5 s) is past its latest start (+1.5 s): a dub for it now is ignored
    mux.resolve(1, DubClip(1, 50000, np.full(1000, 0.5, dtype=np.float32)), language="")
    mux.finish()
    mux.step(10.0)
    assert mux.done()
    kinds_ts = [(ts, k) for k, ts, _ in pub.log]
    assert [ts for ts, _ in kinds_ts] == sorted(ts for ts, _ in kinds_ts)  # written in time order (±1 ms rounding)
    mux.close_out()  # the final partial frame (run() does this at the end)
    pcm = pub.audio_pcm()
    assert pcm.shape[0] == total  # every sample, the final partial frame included
    ducked = round(1000 * 10 ** (-20 / 20))
    assert (pcm[: 4800 - 480] == 1000).all()  # before the dub and its fade: the original at full level
    np.testing.assert_allclose(pcm[4800 : 4800 + 40000], 0.25 * 32768 + ducked, atol=1)  # dub over the ducked original
    assert (pcm[4800 + 40000 + 480 : 120001] == 1000).all()  # after the fade-out: original again (phrase 1 too)
    pts = [f.pts for f in pub.audio_frames]
    assert pts[:-1] == [SHIFT_MS * RATE // 1000 + 1024 * k for k in range(len(pts) - 1)]  # one continuous timeline
    assert mux.stats.dubbed == 1 and mux.stats.fallbacks == 2 and mux.stats.dropped == 0
    assert metrics.fallbacks.labels(stream_id="s", reason="late")._value.get() == 2
    assert mux.stats.speech_dubbed_ratio == pytest.approx(50000 / total)


def test_a_dub_back_by_the_muxers_deadline_is_placed_and_one_after_it_is_late_by_the_same_rule() -> None:
    """One lateness rule: the deadline sent with a phrase is the last moment its dub can be placed (less the margin
    for placing it); past it the phrase keeps the original voice as `late`, never `dropped` on arrival."""
    for overshoot_s, placed in ((-0.001, True), (0.001, False)):
        now = [0.0]
        mux, _, metrics = make_muxer(delay_s=1.0, now=now, max_late_s=0.5)
        feed_realtime(mux, 4 * RATE)
        phrase = speech(0, RATE // 3, RATE)  # its place is not on the 1024-sample frame grid
        mux.add_phrase(phrase)
        deadline = mux.deadline(phrase)
        assert deadline.at is not None
        now[0] = deadline.at + PLACE_MARGIN_S + overshoot_s
        mux.step(now[0])
        mux.resolve(0, DubClip(0, phrase.start_sample, np.full(RATE // 2, 0.25, dtype=np.float32)), language="")
        assert (mux.stats.dubbed, mux.stats.dropped) == ((1, 0) if placed else (0, 0))
        assert metrics.fallbacks.labels(stream_id="s", reason="late")._value.get() == (0 if placed else 1)
        if placed:  # it starts as late as the bound allows, within one frame
            start = mux.lanes[0].track.placed[0].start
            assert phrase.start_sample + RATE // 2 - 1024 < start <= phrase.start_sample + RATE // 2


def test_late_dub_starts_late_sped_up_and_one_queued_too_long_is_dropped() -> None:
    now = [0.0]
    mux, _, metrics = make_muxer(delay_s=1.0, now=now, max_late_s=1.0, max_speedup=1.3)
    feed_realtime(mux, 6 * RATE)
    mux.add_phrase(speech(0, 0, 2 * RATE))
    mux.add_phrase(speech(1, 2 * RATE, 2 * RATE))
    mux.add_phrase(speech(2, 4 * RATE, RATE))
    mux.step(1.5)  # 0.5 s of output written: phrase 0's place has passed
    deadline = mux.deadline(speech(0, 0, 2 * RATE))
    last_frame = (RATE - 1024 - 480) // 1024 * 1024  # 1 s late at most, less a frame and the fade, on the frame grid
    assert deadline.at == pytest.approx(1.0 + last_frame / RATE - PLACE_MARGIN_S)
    mux.resolve(0, DubClip(0, 0, np.full(3 * RATE, 0.25, dtype=np.float32)), language="")  # a long dub, 3 s
    placed = mux.lanes[0].track.placed[0]
    earliest = 24576 + 1024 + 480  # the frame after the one being written, and the fade
    assert placed.start == earliest and placed.speed == pytest.approx(3 * RATE / (3 * RATE - earliest))
    mux.step(2.5)  # phrase 1 (at 2 s) is not due yet, but the long dub plays until ~3 s
    mux.resolve(1, DubClip(1, 2 * RATE, np.full(RATE, 0.25, dtype=np.float32)), language="")
    assert mux.stats.dubbed == 1 and mux.stats.dropped == 1 and mux.stats.fallbacks == 1
    assert metrics.fallbacks.labels(stream_id="s", reason="dropped")._value.get() == 1
    assert mux.stats.schedule_lag_s == pytest.approx(earliest / RATE)
    mux.step(6.0)  # phrase 2's dub never comes: the original voice when its time has passed
    assert metrics.fallbacks.labels(stream_id="s", reason="late")._value.get() == 1
    assert mux.stats.speech_dubbed_ratio == pytest.approx(2 / 5)
    assert mux.stats.recent_dubbed_ratio(window_s=60) == pytest.approx(2 / 5)
    assert mux.stats.recent_dubbed_ratio(window_s=1) == 0.0  # only phrase 2 is in the last second


def test_phrases_without_speech_or_with_no_words_do_not_count() -> None:
    mux, _, _ = make_muxer()
    silent = AudioSegment("s", 0, 0, np.zeros((RATE, 2), np.int16), RATE, speech_ms=0.0)
    mux.add_phrase(silent, wants_dub=False)
    assert mux.sealed(0)
    mux.add_phrase(speech(1, RATE, RATE))
    mux.resolve(1, None, "no_speech", language="")  # STS heard no words (music)
    assert mux.sealed(1) and mux.stats.phrases == 0 and mux.stats.speech_dubbed_ratio is None


def test_muxer_sync_delta_follows_input_timestamps() -> None:
    mux, _, _ = make_muxer(delay_s=1.0, offset_ms=40)
    mux.add_video(video(0, 0.0))
    mux.add_audio(chunk(0, RATE, 0.0, offset_ms=40))
    # the input says the second second of audio starts 30 ms later than the sample count implies (a lost packet)
    mux.add_audio(AudioChunk(RATE, np.zeros((RATE, 2), dtype=np.int16), 40 + 1000 + 30, 1.0))
    mux.add_phrase(seg(0, 0, RATE))
    mux.add_phrase(seg(1, RATE, RATE))
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
    from livedub.media.pipeline.ingest import Timeline

    tl = Timeline(origin_ms=5000)
    assert [tl.map("video", t) for t in (5000, 5040, 5080)] == [0, 40, 80]
    assert tl.map("audio", 5021) == 21
    # the publisher restarted its clock: video continues one observed frame step (40 ms) after its last packet
    assert tl.map("video", 90000) == 120
    assert tl.map("audio", 90010) == 130  # the same shift applies to the other stream: still in step
    assert tl.map("video", 90040) == 160
    # a jump seen first on audio continues from its exact sample clock (21.333 ms per AAC frame at 48 kHz)
    assert tl.map("audio", 100, expected_ms=151.333) == pytest.approx(151.333)
    assert tl.map("video", 120) == pytest.approx(171.333)  # video follows audio's offset
    assert tl.jumps == 2


def test_delay_shorter_than_a_phrase_never_holds_the_output_and_dubs_start_late() -> None:
    """OUTPUT_DELAY_MS 1 s with 2 s phrases: the output runs at 1 s behind; each dub, back when its phrase ends, starts
    late within the bound and sped up; nothing waits."""
    now = [0.0]
    mux, pub, _ = make_muxer(delay_s=1.0, now=now, max_late_s=1.5)
    video_ms = list(range(0, 4000, 40))
    audio_starts = list(range(0, 4 * RATE, 1024))
    phrase_len = 2 * RATE
    phrases = 0
    first_write_at = None
    for step in range(0, 700):
        now[0] = t = step * 0.01
        while video_ms and video_ms[0] / 1000 <= t:
            mux.add_video(video(video_ms.pop(0), arrival=t))
        while audio_starts and (audio_starts[0] + 1024) / RATE <= t:
            start = audio_starts.pop(0)
            mux.add_audio(chunk(start, min(1024, 4 * RATE - start), arrival=t, value=500))
        if phrases < 2 and t >= (phrases + 1) * 2.0:  # the segmenter cuts when the last sample arrived
            mux.add_phrase(speech(phrases, phrases * phrase_len, phrase_len))
            mux.resolve(
                phrases, DubClip(phrases, phrases * phrase_len, np.full(phrase_len, 0.1, np.float32)), language=""
            )
            phrases += 1
        if t >= 6.0:
            mux.finish()
        mux.step(t)
        if pub.log and first_write_at is None:
            first_write_at = t
    assert first_write_at == pytest.approx(1.0, abs=0.02)  # the delay line, not held for the phrase
    assert mux.stats.dubbed == 2 and mux.stats.fallbacks == 0
    assert all(p.speed > 1.0 for p in mux.lanes[0].track.placed) or mux.stats.caught_up == 2
    assert len([k for k, _, _ in pub.log if k == "v"]) == 100  # all video written, none dropped


def test_the_muxer_warns_when_the_sts_does_not_keep_up(caplog: pytest.LogCaptureFixture) -> None:
    mux, _, _ = make_muxer()
    for seq in range(4):
        mux.add_phrase(speech(seq, seq * RATE, RATE))
        mux.resolve(seq, None, "late", language="")
    assert [r.levelname for r in caplog.records if "does not keep up" in r.message] == ["WARNING"]  # once per 30 s
    assert "0 % of the speech dubbed" in caplog.text
