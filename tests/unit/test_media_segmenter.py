"""Segmenter policies: exact sample positions, fixed lengths, speech cuts at pauses within [min, max]."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from livedub.media.pipeline.segmenter import FixedSegmenter, SileroSpeechDetector, SpeechSegmenter, make_segmenter
from livedub.media.settings import MediaSettings
from livedub.media.types import Pcm

pytestmark = pytest.mark.unit

RATE = 48000


def pcm(samples: int, channels: int = 2, value: int = 0, start: int = 0) -> Pcm:
    """Ramp (so every sample is identifiable) or a constant."""
    if value:
        return np.full((samples, channels), value, dtype=np.int16)
    ramp = (np.arange(start, start + samples) % 30000).astype(np.int16)
    return np.repeat(ramp[:, None], channels, axis=1)


def feed(segmenter: FixedSegmenter | SpeechSegmenter, total: int, chunk: int) -> list:
    out = []
    pos = 0
    while pos < total:
        n = min(chunk, total - pos)
        out += segmenter.push(pos, pcm(n, start=pos))
        pos += n
    return out + segmenter.flush()


def test_fixed_segments_are_contiguous_exact_and_keep_content() -> None:
    seg = FixedSegmenter("s", RATE, 6 * RATE)
    total = 20 * RATE + 777
    segments = feed(seg, total, 1024)  # AAC-sized chunks: 6 s is not a multiple of them
    assert [s.num_samples for s in segments] == [6 * RATE] * 3 + [2 * RATE + 777]
    assert [s.start_sample for s in segments] == [0, 6 * RATE, 12 * RATE, 18 * RATE]
    assert [s.sequence_number for s in segments] == [0, 1, 2, 3]
    whole = np.concatenate([s.pcm for s in segments])
    np.testing.assert_array_equal(whole, pcm(total))


def test_fixed_segmenter_fills_holes_and_drops_overlaps() -> None:
    seg = FixedSegmenter("s", RATE, 400)
    seg.push(0, pcm(100))
    seg.push(150, pcm(100))  # a hole of 50 samples: silence, the stream goes on
    seg.push(200, pcm(100))  # overlaps the last 50: dropped
    [segment] = seg.push(300, pcm(150))
    assert segment.start_sample == 0 and segment.num_samples == 400
    assert not segment.pcm[100:150].any() and segment.pcm[150:].any()
    [rest] = seg.flush()
    assert rest.start_sample == 400 and rest.num_samples == 50


class ScriptedDetector:
    """Speech probability per 32 ms window from a script of (seconds, speaking) spans."""

    def __init__(self, spans: list[tuple[float, bool]]) -> None:
        self.window_samples = 512 * RATE / 16000
        self.labels: list[bool] = []
        for seconds, speaking in spans:
            self.labels += [speaking] * round(seconds * RATE / self.window_samples)
        self.fed = 0
        self.emitted = 0

    def feed(self, audio: Pcm) -> npt.NDArray[np.float32]:
        self.fed += audio.shape[0]
        complete = min(int(self.fed // self.window_samples), len(self.labels))
        out = np.array([0.9 if x else 0.05 for x in self.labels[self.emitted : complete]], dtype=np.float32)
        self.emitted = complete
        return out


def test_speech_cuts_in_the_middle_of_the_first_pause_after_min() -> None:
    # speech 1.0 s, pause 0.4 s (too early), speech 1.2 s, pause 0.6 s, speech ...
    det = ScriptedDetector([(1.0, True), (0.4, False), (1.2, True), (0.6, False), (3.0, True), (1.0, False)])
    seg = SpeechSegmenter("s", RATE, min_samples=int(1.5 * RATE), max_samples=4 * RATE, detector=det)
    segments = feed(seg, int(7.2 * RATE), 960)
    first = segments[0]
    # the pause at 2.6-3.2 s: cut inside it, once 250 ms of it were seen (middle of those: ~2.72 s), not at its edge
    cut_s = first.num_samples / RATE
    assert 2.6 + 0.08 <= cut_s <= 2.6 + 0.25
    assert all(s.num_samples <= 4 * RATE for s in segments)
    assert all(s.num_samples >= 1.5 * RATE for s in segments[:-1])
    assert [s.start_sample for s in segments[1:]] == list(np.cumsum([s.num_samples for s in segments[:-1]]))
    assert sum(s.num_samples for s in segments) == int(7.2 * RATE)


def test_each_phrase_says_where_its_speech_starts() -> None:
    # pause 0.5 s, speech 1.5 s, pause 0.6 s, speech 2.0 s, pause 1.0 s
    det = ScriptedDetector([(0.5, False), (1.5, True), (0.6, False), (2.0, True), (1.0, False)])
    seg = SpeechSegmenter("s", RATE, min_samples=RATE, max_samples=4 * RATE, detector=det)
    first, second, *_ = feed(seg, int(5.6 * RATE), 960) + seg.flush()
    assert first.speech_start_ms == pytest.approx(500, abs=40)  # one 32 ms window
    second_onset_s = (second.start_sample + second.speech_start_ms * RATE / 1000) / RATE
    assert second_onset_s == pytest.approx(2.6, abs=0.04)  # the cut came inside the pause, before this speech


def test_speech_without_pause_cuts_at_max_or_the_quietest_point() -> None:
    det = ScriptedDetector([(10.0, True)])
    seg = SpeechSegmenter("s", RATE, min_samples=RATE, max_samples=3 * RATE, detector=det)
    segments = feed(seg, 10 * RATE, 1024)
    assert all(RATE <= s.num_samples <= 3 * RATE for s in segments[:-1])
    assert sum(s.num_samples for s in segments) == 10 * RATE


def test_speech_pause_spanning_min_cuts_at_min() -> None:
    det = ScriptedDetector([(0.5, True), (3.0, False), (2.0, True)])
    seg = SpeechSegmenter("s", RATE, min_samples=RATE, max_samples=4 * RATE, detector=det)
    segments = feed(seg, int(5.5 * RATE), 1024)
    assert segments[0].num_samples == RATE


def test_silero_detector_scores_silence_low_and_counts_windows() -> None:
    det = SileroSpeechDetector(RATE, 2)
    probs = np.concatenate([det.feed(pcm(4800, value=0)) for _ in range(10)])  # 1 s of silence
    assert 29 <= probs.shape[0] <= 31  # 1 s / 32 ms windows (the resampler holds back a few samples)
    assert float(probs.max()) < 0.2


def test_make_segmenter_follows_settings() -> None:
    fixed = make_segmenter("s", MediaSettings(segment_policy="fixed", segment_duration_ms=2000), 2)
    assert isinstance(fixed, FixedSegmenter) and fixed.segment_samples == 2 * RATE
    speech = make_segmenter("s", MediaSettings(segment_policy="speech", segment_min_ms=1000, segment_max_ms=3000), 1)
    assert isinstance(speech, SpeechSegmenter)
    assert (speech.min_samples, speech.max_samples) == (RATE, 3 * RATE)
