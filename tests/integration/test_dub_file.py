"""`livedub dub-file` on a short audio file and a short video (fast backends: apertium + espeak-ng)."""

from __future__ import annotations

import itertools
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from livedub.dubbing.audio import resample
from livedub.sts.dub_file import RATE, cli_main, cut_points
from livedub.testing import corpus

pytestmark = pytest.mark.integration


def write_wav(path: Path, audio: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def test_pieces_are_cut_in_pauses_near_the_target() -> None:
    clips = corpus.speech_clips("en", 6.0, limit=3)
    gap = np.zeros(RATE // 2, np.float32)
    parts = [resample(c.audio, c.sample_rate, RATE) for c in clips]
    audio = np.concatenate([parts[0], gap, parts[1], gap, parts[2]])
    pieces = cut_points(audio, 6.0)
    assert pieces[0].start == 0 and pieces[-1].end == len(audio)
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
    assert all(3 * RATE <= p.end - p.start <= 9 * RATE for p in pieces[:-1])
    # The first cut falls in the half-second gap between the first two clips.
    assert len(parts[0]) <= pieces[0].end <= len(parts[0]) + len(gap)


def test_dub_file_writes_audio_and_video(tmp_path: Path) -> None:
    clip = corpus.speech_clips("es", 6.0, limit=1)[0]
    source = tmp_path / "in.wav"
    write_wav(source, clip.audio, clip.sample_rate)
    out_audio = tmp_path / "out.m4a"
    argv = ["--from", "es", "--to", "en", "--translator", "apertium", "--tts", "espeak-ng"]
    assert cli_main([str(source), *argv, "-o", str(out_audio)]) == 0
    with av.open(str(out_audio)) as result:
        assert abs(float(result.duration / av.time_base) - clip.duration_s) < 0.1

    video = tmp_path / "in.mp4"
    seconds = 3
    with av.open(str(video), "w") as out:  # 3 s of black H.264 with the speech's start as AAC
        v = out.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 64, 64, "yuv420p"
        a = out.add_stream("aac", rate=RATE, layout="mono")
        speech = resample(clip.audio, clip.sample_rate, RATE)[: seconds * RATE]
        for start in range(0, len(speech), 1024):
            frame = av.AudioFrame.from_ndarray(speech[np.newaxis, start : start + 1024].copy(), "flt", "mono")
            frame.sample_rate, frame.pts = RATE, start
            for packet in a.encode(frame):
                out.mux(packet)
        for i in range(10 * seconds):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in v.encode(frame):
                out.mux(packet)
        for stream in (a, v):
            for packet in stream.encode(None):
                out.mux(packet)
    dubbed_video = tmp_path / "out.mp4"
    assert cli_main([str(video), *argv, "-o", str(dubbed_video)]) == 0
    with av.open(str(video)) as before, av.open(str(dubbed_video)) as after:
        assert [s.type for s in after.streams] == ["video", "audio"]
        # The video is copied packet for packet, not re-encoded.
        assert [bytes(p) for p in before.demux(video=0) if p.size] == [bytes(p) for p in after.demux(video=0) if p.size]
    with av.open(str(dubbed_video)) as after:
        dub = np.concatenate([f.to_ndarray().reshape(-1) for f in after.decode(audio=0)])
    assert abs(len(dub) / RATE - seconds) < 0.1
    assert np.abs(dub).max() > 0.05  # there is speech in it
    n = min(len(dub), len(speech))
    assert abs(np.corrcoef(dub[:n], speech[:n])[0, 1]) < 0.5  # and it is not the original speech
