"""Build the speech-over-music fixture for real (ffmpeg) and check the file against its own timeline.

About 30 s of CPU for the encode on 2 cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from livedub.testing.fixture_music import MusicFixture, ensure_music_fixture, level_dbfs, music_fixture_paths

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (make setup)"),
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> MusicFixture:
    return ensure_music_fixture(tmp_path_factory.mktemp("fixtures"))


def _decode_audio(path: Path) -> tuple[np.ndarray, int, dict[str, object]]:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        info = {
            "video_codec": video.codec_context.name,
            "video_s": float(video.duration * video.time_base),
            "audio_codec": audio.codec_context.name,
            "rate": audio.rate,
        }
        resampler = av.AudioResampler(format="flt", layout="mono", rate=audio.rate)
        chunks = [out.to_ndarray().reshape(-1) for f in container.decode(audio) for out in resampler.resample(f)]
    return np.concatenate(chunks), int(info["rate"]), info


def test_file_is_h264_and_aac_for_sixty_seconds(built: MusicFixture) -> None:
    samples, rate, info = _decode_audio(built.path)
    assert (info["video_codec"], info["audio_codec"], rate) == ("h264", "aac", 48000)
    assert info["video_s"] == pytest.approx(60.0, abs=0.1)
    assert len(samples) / rate == pytest.approx(60.0, abs=0.1)


def test_timeline_matches_the_audio(built: MusicFixture) -> None:
    samples, rate, _ = _decode_audio(built.path)
    assert 9 <= len(built.prompts) <= 12 and len(built.long_pauses()) >= 2
    assert 5.0 <= built.speech_over_music_db <= 10.0
    for pause in built.pauses:  # AAC keeps the music's level (edges left out: the codec's pre-echo)
        measured = level_dbfs(samples, rate, pause.start_s + 0.05, pause.end_s - 0.05)
        assert measured == pytest.approx(pause.music_dbfs, abs=1.5)
    for prompt in built.prompts:
        assert prompt.text and prompt.reference and prompt.speech_dbfs - prompt.music_dbfs > 3.0
        assert level_dbfs(samples, rate, prompt.start_s, prompt.end_s) > prompt.music_dbfs + 3.0


def test_isolated_tracks_sum_to_the_mix(built: MusicFixture) -> None:
    music, speech = built.music_audio(), built.speech_audio()
    assert len(music) == len(speech) == round(built.duration_s * built.sample_rate)
    for pause in built.pauses:
        assert level_dbfs(music, built.sample_rate, pause.start_s, pause.end_s) == pytest.approx(
            pause.music_dbfs, abs=0.01
        )
    for prompt in built.prompts:
        assert level_dbfs(speech, built.sample_rate, prompt.start_s, prompt.end_s) == pytest.approx(
            prompt.speech_dbfs, abs=0.01
        )


def test_second_call_uses_the_cache(built: MusicFixture) -> None:
    before = built.path.stat().st_mtime_ns
    again = ensure_music_fixture(built.path.parent)
    assert again == built and again.path.stat().st_mtime_ns == before
    assert set(music_fixture_paths(built.path.parent).values()) <= set(built.path.parent.iterdir())
