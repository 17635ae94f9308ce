"""The `speech` policy on real speech (espeak-ng sentences with pauses) and the real Silero VAD: every cut falls in a
pause, none inside a word, and the slots respect SEGMENT_MIN_MS / SEGMENT_MAX_MS."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from livedub.media.pipeline.segmenter import SileroSpeechDetector, SpeechSegmenter
from livedub.media.types import Pcm

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng"),
]

RATE = 48000
SENTENCES = [
    "Thank you for calling the support line.",
    "Please enter your account number.",
    "Then press the pound key.",
    "An agent will be with you shortly.",
]
PAUSE_S = 0.7


def speak(text: str, path: Path) -> Pcm:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(path), text], check=True)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    with av.open(str(path)) as container:
        parts = [f.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).reshape(-1, 1)


def test_speech_cuts_fall_in_pauses(tmp_path: Path) -> None:
    pieces: list[Pcm] = []
    speech_spans: list[tuple[int, int]] = []  # where the voice actually is, in samples
    pos = 0
    for i, sentence in enumerate(SENTENCES):
        pcm = speak(sentence, tmp_path / f"s{i}.wav")
        loud = np.flatnonzero(np.abs(pcm[:, 0].astype(np.int32)) > 500)
        speech_spans.append((pos + int(loud[0]), pos + int(loud[-1])))
        pieces += [pcm, np.zeros((int(PAUSE_S * RATE), 1), dtype=np.int16)]
        pos += pcm.shape[0] + int(PAUSE_S * RATE)
    audio = np.concatenate(pieces)
    assert all(end - start < 3.5 * RATE for start, end in speech_spans)  # each sentence fits a slot

    segmenter = SpeechSegmenter(
        "s", RATE, min_samples=RATE, max_samples=4 * RATE, detector=SileroSpeechDetector(RATE, 1)
    )
    segments = []
    for start in range(0, audio.shape[0], 1024):
        segments += segmenter.push(start, audio[start : start + 1024])
    segments += segmenter.flush()

    cuts = [s.start_sample for s in segments[1:]]
    assert len(cuts) == len(SENTENCES) - 1 or len(cuts) == len(SENTENCES)  # one per pause (the last may trail)
    tolerance = int(0.03 * RATE)
    for cut in cuts:
        inside = [(a, b) for a, b in speech_spans if a + tolerance < cut < b - tolerance]
        assert not inside, f"cut at {cut / RATE:.2f} s falls inside speech {[(a / RATE, b / RATE) for a, b in inside]}"
    assert all(RATE <= s.num_samples <= 4 * RATE for s in segments[:-1])
    assert sum(s.num_samples for s in segments) == audio.shape[0]
