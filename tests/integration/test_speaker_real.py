"""Voices that follow the speaker, with the real embedder and the real Spanish voices of the language table.

Female human speech (the English Asterisk prompts, Allison) must get a female Spanish voice; male speech gets the
male one. No male human English speech ships here: the male input is synthetic (Piper joe), as the brief allows.
Needs the model cache (Kokoro, Piper joe) and asterisk-core-sounds-en; about 20 s of CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livedub.dubbing.speaker import SpeakerEmbedder
from livedub.dubbing.voices import VoicePicker
from livedub.testing import corpus

pytestmark = pytest.mark.integration

MALE_TEXTS = (
    "Please enter your password followed by the pound key.",
    "The person at extension two is not available. Please leave a message after the tone.",
    "Your call is important to us. Please stay on the line and an agent will be with you shortly.",
)


@pytest.fixture(scope="module")
def embedder() -> SpeakerEmbedder:
    try:
        return SpeakerEmbedder()
    except Exception as exc:  # the package is a dependency; say so plainly when it is missing
        pytest.skip(f"speaker embedder unavailable: {exc}")


@pytest.fixture(scope="module")
def bank():  # type: ignore[no-untyped-def]
    from livedub.models import ModelMissingError
    from livedub.sts.backends import load_voices
    from livedub.sts.settings import StsSettings

    try:
        return load_voices(StsSettings(), ["es", "en"])
    except (ModelMissingError, FileNotFoundError) as exc:
        pytest.skip(f"voice models missing: {exc}")


def female_phrases() -> list[np.ndarray]:
    try:
        prompts = corpus.load_prompts("en")
    except corpus.CorpusMissingError as exc:
        pytest.skip(str(exc))
    return [prompts[name].audio(16000) for name in ("agent-pass", "vm-intro", "conf-onlyperson")]


def male_phrases(bank) -> list[tuple[np.ndarray, int]]:  # type: ignore[no-untyped-def]
    joe = next(v for v in bank.voices("en") if v.backend == "piper")
    spoken = [bank.synthesize(text, "en", joe) for text in MALE_TEXTS]
    return [(s.audio, s.sample_rate) for s in spoken]


def test_female_speech_gets_a_female_voice_male_speech_the_male_voice(embedder, bank, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    picker = VoicePicker(bank, embedder, cache_dir=tmp_path)
    assert picker.warm_up(["es"]) == {"es": len(bank.voices("es"))}
    stream = picker.stream("studio")
    heard = []
    for audio in female_phrases():
        turn = stream.observe(audio, 16000)
        heard.append((turn.status, stream.decide("es")))
    assert [status for status, _ in heard] == ["first", "same", "same"]
    female = heard[-1][1]
    assert female.voice.gender == "female" and female.reason in {"matched", "kept"}, female

    for audio, rate in male_phrases(bank):
        turn = stream.observe(audio, rate)
        heard.append((turn.status, stream.decide("es")))
    statuses = [status for status, _ in heard[3:]]
    assert statuses == ["pending", "changed", "same"], statuses  # one phrase is not enough: hysteresis
    male = heard[-1][1]
    assert male.voice.gender == "male" and male.speaker == 1, male
    assert heard[4][1].changed and heard[4][1].voice == male.voice  # the voice changes with the confirmed speaker
    assert heard[3][1].voice == female.voice  # not before
    assert len(list(tmp_path.glob("*.npy"))) == len(bank.voices("es"))  # references cached for the next start
