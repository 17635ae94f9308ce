"""The ASR section's choice of prompts (bench/sts_bench.py): the same sentences in every language, never the
one-word prompts the English and French corpora start with (their WER was over two words)."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from livedub.testing.corpus import Prompt
from sts_bench import asr_prompt_names

pytestmark = pytest.mark.unit


def prompt(folder: Path, language: str, name: str, text: str, seconds: float = 2.0) -> Prompt:
    path = folder / f"{language}-{name}.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * round(seconds * 8000))
    return Prompt(name=name, language=language, path=path, text=text)


def corpus_of(folder: Path, language: str, texts: dict[str, str]) -> dict[str, Prompt]:
    return {name: prompt(folder, language, name, text) for name, text in texts.items()}


def test_one_word_prompts_are_left_out_and_languages_share_the_names(tmp_path: Path) -> None:
    english = {"activated": "Activated.", "added": "Added.", "agent-pass": "Please enter your password."}
    english |= {"agent-user": "Please enter your agent number.", "only-english": "This one is English only."}
    spanish = {"agent-pass": "Por favor ingrese su contraseña.", "agent-user": "Ingrese su número de agente."}
    french = {"activated": "activé", "added": "ajouté", "agent-pass": "Composez votre mot de passe."}
    french |= {"agent-user": "Composez votre numéro d'agent."}
    by_language = {
        "en": corpus_of(tmp_path, "en", english),
        "es": corpus_of(tmp_path, "es", spanish),
        "fr": corpus_of(tmp_path, "fr", french),
    }
    assert asr_prompt_names(by_language, 4) == ["agent-pass", "agent-user"]
    assert asr_prompt_names(by_language, 1) == ["agent-pass"]


def test_a_name_short_in_one_language_or_too_long_is_left_out(tmp_path: Path) -> None:
    by_language = {
        "en": {
            "a": prompt(tmp_path, "en", "a", "Agent logged off."),
            "b": prompt(tmp_path, "en", "b", "Please hold the line."),
            "c": prompt(tmp_path, "en", "c", "A menu that goes on for a while.", seconds=29.0),
        },
        "es": {
            "a": prompt(tmp_path, "es", "a", "Agente desconectado"),
            "b": prompt(tmp_path, "es", "b", "Por favor espere en la línea."),
            "c": prompt(tmp_path, "es", "c", "Un menú que dura un buen rato."),
        },
    }
    assert asr_prompt_names(by_language, 10) == ["b"]
