"""Dub track: placement on the output timeline, queueing, catch-up speed-up, drops, background envelope."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.media.pipeline.background import DuckedBackground, db_to_gain
from livedub.media.pipeline.dubtrack import DubClip, DubTrack, catch_up_speed

pytestmark = pytest.mark.unit

RATE = 1000  # 1 sample per ms keeps the arithmetic readable


def shorten(audio: np.ndarray, speed: float) -> np.ndarray:
    """A fake time-stretch: keeps every n-th sample (length / speed), as atempo would shorten it."""
    return audio[: round(len(audio) / speed)]


def track(**kw: float) -> DubTrack:
    return DubTrack(RATE, shorten, **{"max_late_s": 1.5, "max_speedup": 1.3, "breath_s": 0.1, "fade_s": 0.05, **kw})


def clip(seq: int, start: int, length: int, value: float = 0.5) -> DubClip:
    return DubClip(seq, start, np.full(length, value, dtype=np.float32))


def test_catch_up_speed_ends_on_schedule_within_the_cap() -> None:
    assert catch_up_speed(1000, 0, 1.3) == 1.0
    assert catch_up_speed(1000, 100, 1.3) == pytest.approx(1000 / 900)  # ends where it would have on time
    assert catch_up_speed(1000, 500, 1.3) == 1.3  # capped
    assert catch_up_speed(100, 500, 1.3) == 1.3  # later than its own length


def test_dub_on_time_plays_at_its_place_unchanged() -> None:
    t = track()
    placed = t.place(clip(0, 2000, 800), earliest=500)
    assert placed is not None and placed.start == 2000 and placed.speed == 1.0 and placed.late_samples == 0
    assert len(placed.audio) == 800


def test_dub_queues_behind_the_one_playing_and_catches_up() -> None:
    t = track()
    first = t.place(clip(0, 1000, 2000), earliest=0)  # plays 1000..3000, overrunning its phrase
    second = t.place(clip(1, 2500, 1000), earliest=0)  # wanted at 2500, while the first still plays
    assert first is not None and second is not None
    assert second.start == 3000 + 100  # behind the first, after a breath
    assert second.late_samples == 600
    assert second.speed == 1.3  # 600 of 1000 samples late: the cap
    assert len(second.audio) == round(1000 / 1.3)
    third = t.place(clip(2, 5000, 500), earliest=0)  # back on schedule: no speed-up
    assert third is not None and third.start == 5000 and third.speed == 1.0


def test_late_dub_starts_at_the_first_free_sample_and_too_late_is_dropped() -> None:
    t = track()
    late = t.place(clip(0, 1000, 1000), earliest=1800)  # the output already passed its place
    assert late is not None and late.start == 1800 and late.speed > 1.0
    assert t.place(clip(1, 3000, 1000), earliest=4600) is None  # 1.6 s after its place > 1.5 s bound
    assert t.queue_end == late.end  # a dropped dub leaves the track as it was


def test_render_mixes_dubs_and_gives_the_background_envelope_with_fades() -> None:
    t = track(fade_s=0.1)
    t.place(clip(0, 1000, 500, value=0.25), earliest=0)
    dub, weight = t.render(800, 1000)  # samples 800..1800
    assert dub[:200].sum() == 0 and (dub[200:700] == 0.25).all() and dub[700:].sum() == 0
    assert weight[0] == 0.0  # before the fade
    assert weight[150] == pytest.approx(0.5)  # halfway through the fade-in (900..1000)
    assert (weight[200:700] == 1.0).all()  # full duck while the dub plays
    assert weight[750] == pytest.approx(0.5) and weight[900] == 0.0  # fade-out 1500..1600
    t.forget_before(1700)
    assert t.placed == []


def test_render_of_a_block_straddling_two_dubs() -> None:
    t = track(fade_s=0.01, breath_s=0.0)
    t.place(clip(0, 0, 100, value=0.1), earliest=0)
    t.place(clip(1, 100, 100, value=0.2), earliest=0)
    dub, weight = t.render(50, 100)
    assert (dub[:50] == pytest.approx(0.1)) and (dub[50:] == pytest.approx(0.2))
    assert (weight == 1.0).all()


def test_ducked_background_level() -> None:
    source = np.full((10, 2), 0.5, dtype=np.float32)
    under = DuckedBackground(-15.0).under_dub(0, source)
    assert under == pytest.approx(source * db_to_gain(-15.0))
    assert 20 * np.log10(under[0, 0] / 0.5) == pytest.approx(-15.0)


class HalfModel:
    """A fake DeepFilterNet: 'speech' is half the input, delayed by one 480-sample frame."""

    frame_length = 480
    delay = 480

    def __init__(self) -> None:
        self.previous = np.zeros(480, np.float32)

    def process_frame(self, frame: np.ndarray) -> np.ndarray:
        out, self.previous = self.previous, frame * 0.5
        return out

    def close(self) -> None:
        return None


def test_separated_background_is_the_bed_aligned_with_the_input() -> None:
    from livedub.media.pipeline.background import SeparatedBackground
    from livedub.media.pipeline.separation import BedSeparator

    background = SeparatedBackground(BedSeparator(48000, 2, model=HalfModel()))
    ramp = (np.arange(48000 * 2).reshape(-1, 2) % 20000).astype(np.int16)
    for start in range(0, 48000, 4800):
        background.feed(1000 + start, ramp[start : start + 4800])
    background.flush()
    under = background.under_dub(1000 + 9600, np.zeros((4800, 2), np.float32))
    expected = ramp[9600 : 9600 + 4800].astype(np.float32) / 32768 * 0.5  # the bed: input minus half of it
    np.testing.assert_allclose(under, expected, atol=2 / 32768)


# ---- a dub that comes in chunks: it starts on the first and grows ------------------------------------------------


def tone(length: int, value: float) -> np.ndarray:
    return np.full(length, value, dtype=np.float32)


def test_a_contiguous_chunk_is_appended_without_gap_overlap_or_dip() -> None:
    t = track()
    first = t.place(clip(0, 1000, 500, value=0.25), earliest=0, grows=True)
    assert first is not None and first.start == 1000
    piece = t.extend(0, tone(300, 0.5), wanted_start=1500, earliest=1200)
    assert piece is not None and (piece.start, piece.end, piece.outcome) == (1500, 1800, "appended")
    assert len(t.placed) == 1 and t.placed[0].end == 1800  # one dub, grown
    assert t.queue_end == 1800
    dub, weight = t.render(1400, 200)  # across the join at 1500
    assert (dub[:100] == 0.25).all() and (dub[100:] == 0.5).all()
    assert (weight == 1.0).all()  # the background does not come up at the join
    # a chunk due a few samples off the end (time-stretch rounding) still joins it exactly
    near = t.extend(0, tone(100, 0.5), wanted_start=1805, earliest=1200)
    assert near is not None and (near.start, near.end) == (1800, 1900)
    # one due later than that: the gap between is the dub's own silence, still one dub
    later = t.extend(0, tone(100, 0.5), wanted_start=2000, earliest=1200)
    assert later is not None and (later.start, later.end, later.outcome) == (2000, 2100, "appended")
    dub, weight = t.render(1900, 100)
    assert (dub == 0).all() and (weight == 1.0).all()


def test_a_chunk_after_a_catch_up_speed_up_keeps_its_offset_scaled_and_the_speed() -> None:
    t = track()
    first = t.place(clip(0, 1000, 1000), earliest=1300, grows=True)  # 300 late: sped up 1.3 (the cap)
    assert first is not None and first.speed == 1.3 and (first.start, first.end) == (1300, 1300 + round(1000 / 1.3))
    piece = t.extend(0, tone(520, 0.5), wanted_start=2000, earliest=1400)  # contiguous with the first chunk
    assert piece is not None and piece.outcome == "appended"
    assert piece.start == first.end  # (2000 - 1000) / 1.3 after the first's start: its end
    assert piece.end - piece.start == 400  # sped up as much as the first
    assert t.queue_end == piece.end


def test_a_chunk_too_late_for_its_join_starts_after_a_gap_with_the_background_fading_up_and_down() -> None:
    t = track()  # fade 50, max late 1500
    t.place(clip(0, 1000, 500, value=0.25), earliest=0, grows=True)  # 1000..1500
    # the output already rendered past 1500 (the first free sample is 1700): the join is gone
    piece = t.extend(0, tone(1000, 0.5), wanted_start=1500, earliest=1700)
    assert piece is not None and piece.outcome == "late_start"
    assert piece.start == 1700 + 50  # where the background can fade down again
    assert piece.end - piece.start == round(1000 / catch_up_speed(1000, 250, 1.3))  # catches up like a late dub
    dub, weight = t.render(1450, 400)  # 1450..1850
    assert (weight[:50] == 1.0).all()  # the first chunk plays until 1500
    assert weight[75] == pytest.approx(0.5)  # fading up (1500..1550)
    assert (weight[100:250] == 0.0).all()  # the background alone in the gap (1550..1700)
    assert weight[275] == pytest.approx(0.5)  # fading down (1700..1750)
    assert (weight[300:] == 1.0).all() and (dub[300:] == 0.5).all()
    assert t.queue_end == piece.end
    # the next chunk joins the late one
    more = t.extend(0, tone(100, 0.5), wanted_start=2500, earliest=1800)
    assert more is not None and more.outcome == "appended" and more.start == piece.end


def test_a_chunk_later_than_the_bound_or_into_the_next_dub_is_dropped() -> None:
    t = track()
    t.place(clip(0, 1000, 500), earliest=0, grows=True)
    assert t.extend(0, tone(300, 0.5), wanted_start=1500, earliest=3100) is None  # 1.65 s after its place > 1.5 s
    assert len(t.placed) == 1 and t.queue_end == 1500  # the track as it was
    nxt = t.place(clip(1, 1550, 400), earliest=0)  # the next phrase's dub, queued behind (1500 + breath)
    assert nxt is not None and nxt.start == 1600
    assert t.extend(0, tone(300, 0.5), wanted_start=1500, earliest=1200) is None  # it would run into the next dub
    t.end_growth(0)
    assert t.extend(0, tone(300, 0.5), wanted_start=2500, earliest=1200) is None  # a dub that no longer grows


def test_the_next_dub_queues_behind_the_grown_dub() -> None:
    t = track()
    t.place(clip(0, 1000, 500), earliest=0, grows=True)
    t.extend(0, tone(700, 0.5), wanted_start=1500, earliest=1200)  # grows to 2200
    assert t.queue_end == 2200
    nxt = t.place(clip(1, 1800, 500), earliest=0)  # wanted while the grown dub still plays
    assert nxt is not None and nxt.start == 2200 + 100  # behind it, after a breath
