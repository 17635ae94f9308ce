"""The asterisk prompt corpus (needs the Debian asterisk-core-sounds-{en,es,fr,it} and their -wav packages)."""

from __future__ import annotations

import pytest

from livedub import fixture
from livedub.testing import corpus

pytestmark = pytest.mark.unit


def test_prompts_have_audio_and_spoken_text() -> None:
    english = corpus.load_prompts("en")
    assert len(english) > 300
    prompt = english["agent-pass"]
    assert prompt.text == "Please enter your password followed by the pound key."
    assert prompt.path.exists() and 2.0 < prompt.duration_s < 6.0
    assert all("[" not in p.text for p in english.values())  # "[ascending tones]" and the like are not speech


def test_shared_prompts_pair_english_and_spanish() -> None:
    pairs = corpus.shared_prompts("en", "es")
    assert len(pairs) > 250
    names = {en.name for en, _ in pairs}
    assert "agent-pass" in names
    en, es = next((en, es) for en, es in pairs if en.name == "agent-pass")
    assert (en.language, es.language) == ("en", "es")
    assert "contrasena" in es.text.lower()


def test_speech_clips_are_about_six_seconds_with_their_transcripts() -> None:
    clips = corpus.speech_clips("en", 6.0, reference_language="es", limit=5)
    assert len(clips) == 5
    for clip in clips:
        assert 4.5 <= clip.duration_s <= 7.5 + 0.3 * len(clip.names)
        assert clip.sample_rate == 16000 and clip.audio.dtype.name == "float32"
        assert clip.reference and clip.text.count(".") >= len(clip.names)
    assert clips[0].text.startswith("That agent is already logged on.")


@pytest.fixture
def uncached_corpus():
    corpus.load_prompts.cache_clear()
    yield
    corpus.load_prompts.cache_clear()


def test_missing_transcripts_name_the_package_that_has_them(
    uncached_corpus: None, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The -wav packages only recommend the packages with the transcripts: the message must name the latter."""
    monkeypatch.setattr(corpus, "TRANSCRIPTS", str(tmp_path / "core-sounds-{lang}.txt.gz"))
    with pytest.raises(corpus.CorpusMissingError, match=r"install the Debian package asterisk-core-sounds-es$"):
        corpus.load_prompts("es")
    with pytest.raises(RuntimeError, match=r"apt-get install asterisk-core-sounds-en \(or make setup\)$"):
        fixture.load_transcripts(tmp_path / "core-sounds-en.txt.gz")


def test_missing_sounds_link_names_both_packages(uncached_corpus: None, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(corpus, "SOUNDS_DIR", tmp_path)
    with pytest.raises(corpus.CorpusMissingError, match=r"asterisk-core-sounds-en asterisk-core-sounds-en-wav$"):
        corpus.load_prompts("en")


def test_french_and_italian_prompts_share_names_with_english() -> None:
    for language, word in (("fr", "passe"), ("it", "password")):
        pairs = dict((en.name, other) for en, other in corpus.shared_prompts("en", language))
        assert len(pairs) > 300
        assert pairs["agent-pass"].language == language and word in pairs["agent-pass"].text.lower()
        assert pairs["agent-pass"].path.exists() and pairs["agent-pass"].duration_s > 1.0
