"""SVOX Pico for real (py-nanotts in its child process): it speaks Spanish and French of a sensible length, Whisper
understands its Spanish, markup in the text does nothing, and a hung or failing Pico costs its process only.

A few seconds on 2 cores (Whisper base on three prompts).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from livedub.dubbing.audio import resample
from livedub.dubbing.tts import PicoTTS
from livedub.dubbing.tts.pico import PicoMarkupOnlyError, PicoTimeoutError
from livedub.dubbing.tts.registry import fast_voices_of
from livedub.languages import LANGUAGES
from livedub.sts.settings import StsSettings
from livedub.testing import corpus

pytestmark = pytest.mark.integration
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ("conf-locked", "dir-pls-enter", "vm-sorry")  # three of the bench's prompts (tests/.../languages_real)
# Measured on PROMPTS: es 0.0 (es-ES), 0.0 (es-ES+low); on the bench's 20 prompts 4-5 %: a bound with margin.
WER_BOUND = 0.15


def words(text: str) -> list[str]:
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return "".join(c if c.isalnum() else " " for c in plain).split()


@pytest.fixture(scope="module")
def pico():  # type: ignore[no-untyped-def]
    backend = PicoTTS()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    from livedub.dubbing.asr import WhisperASR
    from livedub.dubbing.model_files import cpu_threads, resolve_model_dir

    s = StsSettings()
    return WhisperASR(resolve_model_dir(s.asr_model), "cpu", s.asr_beam_size, s.asr_vad, cpu_threads(s.cpu_threads),
                      s.asr_min_window_s)  # fmt: skip


@pytest.mark.parametrize("language", ["es", "fr", "it"])
def test_pico_speaks_the_warmup_sentence_at_a_sensible_length_and_level(pico: PicoTTS, language: str) -> None:
    text = LANGUAGES[language].warmup  # ~16 words
    audio = pico.synthesize(text, language)
    seconds = len(audio) / pico.sample_rate
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 3.0 < seconds < 12.0, seconds
    rms = float(np.sqrt(np.mean(audio**2)))
    assert 0.05 < rms < 0.4 and float(np.mean(np.abs(audio) >= 0.999)) < 1e-4  # audible, not clipped
    faster = pico.synthesize(text, language, speed=1.5)
    slower = pico.synthesize(text, language, speed=0.8)
    assert len(faster) < 0.85 * len(audio) and len(slower) > 1.15 * len(audio)


@pytest.mark.parametrize("voice", [v.voice for v in fast_voices_of("es") if v.backend == "pico"])
def test_whisper_understands_picos_spanish(pico: PicoTTS, whisper, voice: str) -> None:  # type: ignore[no-untyped-def]
    import jiwer

    prompts = corpus.load_prompts("es")
    references, heard = [], []
    for name in PROMPTS:
        audio = pico.synthesize(prompts[name].text, "es", voice)
        audio = np.clip(resample(audio, pico.sample_rate, 16000), -1, 1)
        references.append(" ".join(words(prompts[name].text)))
        heard.append(" ".join(words(whisper.transcribe(audio, "es").text)) or "-")
    wer = jiwer.wer(references, heard)
    print(f"pico:{voice} WER {wer:.3f}: {heard}")
    assert wer <= WER_BOUND, f"WER {wer:.2f}: {heard}"


def test_markup_in_the_text_does_nothing(pico: PicoTTS, tmp_path: Path) -> None:
    target = tmp_path / "pwn.wav"
    plain = pico.synthesize("Hola señor, buenos días.", "es")
    hostile = pico.synthesize(
        f"Hola <genfile file=\"{target}\"><speed level='500'>señor</speed>, buenos días.</genfile>", "es"
    )
    assert not target.exists()  # Pico writes the file when the tag reaches it
    assert abs(len(hostile) - len(plain)) < 0.1 * len(plain)  # `<speed level='500'>` would have halved it
    with pytest.raises(PicoMarkupOnlyError):
        pico.synthesize("<pitch level='50'></pitch>", "es")
    assert len(pico.synthesize("   ", "es")) == 0


def test_a_failing_or_hung_pico_costs_its_process_only(pico: PicoTTS) -> None:
    # A long text then one long token: in-process, on heap memory that Pico had used, this looped forever.
    long = " ".join([LANGUAGES["es"].warmup] * 12)
    assert len(pico.synthesize(long, "es")) > 60 * pico.sample_rate
    assert len(pico.synthesize("x" * 1000, "es")) > 0
    with pytest.raises(RuntimeError, match="Pico failed"):
        pico.synthesize("1" * 300, "es")  # Pico's own error ("error in processing unit"), reported
    slow = PicoTTS(timeout_s=0.01)
    with pytest.raises(PicoTimeoutError):
        slow.synthesize(long, "es")
    slow.timeout_s = 10.0
    assert len(slow.synthesize("Hola.", "es")) > 0  # a new process
    slow.close()
