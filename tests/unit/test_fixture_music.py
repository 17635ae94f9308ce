"""The speech-over-music fixture's layout and mix (no encoding; needs the Debian sound packages, like the corpus)."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.testing import corpus, fixture_music
from livedub.testing.fixture_music import GAPS_S, PROMPTS, level_dbfs, mix_tracks, trim_silence

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def mixed() -> tuple[np.ndarray, np.ndarray, int, list, float]:
    return mix_tracks()


def test_layout_is_a_dozen_prompts_with_natural_and_long_pauses() -> None:
    assert 9 <= len(PROMPTS) <= 12 and len(GAPS_S) == len(PROMPTS) - 1
    short = [g for g in GAPS_S if g < 2.0]
    assert all(0.6 <= g <= 1.2 for g in short)
    assert len(GAPS_S) - len(short) >= 2  # long pauses: music alone at full level
    assert all(name in corpus.load_prompts("es") for name in PROMPTS)  # each has its Spanish reference


def test_trim_keeps_the_voice_and_drops_the_recording_silence() -> None:
    rate = 8000
    voice = 0.3 * np.sin(np.arange(rate) * 2 * np.pi * 200 / rate)
    audio = np.concatenate([np.zeros(rate // 2), voice, np.zeros(rate // 4)])
    trimmed = trim_silence(audio, rate)
    assert rate <= len(trimmed) <= rate + 2 * round(fixture_music.TRIM_MARGIN_S * rate) + rate // 100


def test_speech_sits_5_to_10_db_over_the_music(mixed) -> None:
    speech, music, rate, placed, gain_db = mixed
    assert speech.shape == music.shape == (round(fixture_music.DURATION_S * rate),)
    spans = [(p.start, p.start + len(p.audio)) for p in placed]
    speech_db = level_dbfs(np.concatenate([speech[a:b] for a, b in spans]), rate)
    music_db = level_dbfs(np.concatenate([music[a:b] for a, b in spans]), rate)
    assert 5.0 <= speech_db - music_db <= 10.0
    assert gain_db < 0  # the bed is turned down, never up
    assert np.max(np.abs(speech + music)) <= fixture_music.PEAK_LIMIT + 1e-3


def test_pauses_hold_only_music_at_a_steady_audible_level(mixed) -> None:
    speech, music, rate, placed, _ = mixed
    ends = [(p.start + len(p.audio)) / rate for p in placed]
    starts = [p.start / rate for p in placed]
    assert starts[0] == pytest.approx(fixture_music.LEAD_IN_S, abs=1 / rate)
    gaps = [b - a for a, b in zip(ends, starts[1:], strict=False)]
    assert gaps == pytest.approx(list(GAPS_S), abs=1 / rate)
    assert fixture_music.DURATION_S - ends[-1] >= 2.0
    for a, b in zip(ends, starts[1:], strict=False):
        assert not np.any(speech[round(a * rate) + 1 : round(b * rate) - 1])
        assert -40.0 < level_dbfs(music, rate, a, b) < -20.0


def test_mix_is_deterministic(mixed) -> None:
    speech, music, *_ = mix_tracks()
    assert np.array_equal(speech, mixed[0]) and np.array_equal(music, mixed[1])
