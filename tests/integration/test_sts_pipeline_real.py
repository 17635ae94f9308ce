"""The STS pipeline with the real models on human speech (asterisk prompts): en→es and es→en.

Models load once per session. The dub is checked by listening to it with the ASR: its round trip must share
the content words of the translation.
"""

from __future__ import annotations

import os
import time
import unicodedata

import numpy as np
import pytest

from livedub.dubbing.audio import resample
from livedub.protocol import (
    AudioFormat,
    AudioPayload,
    DubChunk,
    ErrorCode,
    FragmentData,
    FragmentStatus,
    StreamConfig,
)
from livedub.sts.payload_audio import decode_audio, mono_payload
from livedub.sts.pipeline import DubbingPipeline
from livedub.sts.settings import StsSettings
from livedub.testing import corpus

pytestmark = pytest.mark.integration

RATE = 48000
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def content_words(text: str) -> set[str]:
    """Lower-case words of 4+ letters without accents (short words are mostly function words)."""
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return {w for w in "".join(c if c.isalpha() else " " for c in plain).split() if len(w) >= 4}


@pytest.fixture(scope="session")
def dubber() -> DubbingPipeline:
    pipeline = DubbingPipeline(StsSettings())
    pipeline.warmup()
    return pipeline


def make_fragment(audio: np.ndarray, fmt: AudioFormat, seq: int = 0) -> FragmentData:
    payload = mono_payload(audio, RATE, fmt)
    return FragmentData(fragment_id=f"it-{seq}", stream_id="it", sequence_number=seq, audio=payload)


def listen(dubber: DubbingPipeline, payload: AudioPayload, language: str) -> str:
    audio = decode_audio(payload.decode_bytes(), payload.format, payload.sample_rate_hz, payload.channels, 16000)
    return dubber.engine.recognise.asr.transcribe(audio, language).text


@pytest.mark.parametrize(
    ("source", "target", "fmt"), [("en", "es", AudioFormat.PCM_S16LE), ("es", "en", AudioFormat.M4A)]
)
def test_human_speech_is_dubbed_into_the_other_language(
    dubber: DubbingPipeline, source: str, target: str, fmt: AudioFormat
) -> None:
    clip = corpus.speech_clips(source, 6.0, limit=2)[1]
    fragment = make_fragment(resample(clip.audio, clip.sample_rate, RATE), fmt)
    result = dubber.process(fragment, StreamConfig(source_language=source, target_language=target, format=fmt))

    assert result.status in (FragmentStatus.SUCCESS, FragmentStatus.PARTIAL), result.error
    assert result.transcript and result.translated_text
    # The ASR heard the prompt; the translation is not the source text.
    heard = content_words(result.transcript)
    assert len(heard & content_words(clip.text)) >= 0.6 * len(content_words(clip.text))
    assert content_words(result.translated_text) != heard
    timings = result.stage_timings
    assert timings.asr_ms > 0 and timings.translation_ms > 0 and timings.tts_ms > 0
    assert result.metadata.original_duration_ms == pytest.approx(clip.duration_s * 1000, abs=1)
    assert result.dubbed_audio is not None and result.dubbed_audio.format is fmt

    # The dub speaks the translation: its ASR round trip shares the translation's content words.
    round_trip = listen(dubber, result.dubbed_audio, target)
    expected = content_words(result.translated_text)
    shared = expected & content_words(round_trip)
    assert len(shared) >= 0.5 * len(expected), (result.translated_text, round_trip)


def test_a_dub_in_chunks_is_heard_chunk_by_chunk_and_whole(dubber: DubbingPipeline) -> None:
    # The real LLM streams its words clause by clause; each clause is spoken and handed over at once, before the
    # fragment's answer, and the chunks together are the dub the answer carries.
    clip = corpus.speech_clips("en", 6.0, limit=2)[1]
    fragment = make_fragment(resample(clip.audio, clip.sample_rate, RATE), AudioFormat.PCM_S16LE)
    config = StreamConfig(source_language="en", target_language="es", format="pcm_s16le", dub_chunks=True)
    chunks: list[tuple[float, DubChunk]] = []
    started = time.monotonic()
    answers = dubber.process_each(fragment, config, on_chunk=lambda c: chunks.append((time.monotonic(), c)))
    [result] = list(answers)
    answered = time.monotonic()
    assert result.status in (FragmentStatus.SUCCESS, FragmentStatus.PARTIAL), result.error
    assert chunks and chunks[0][0] < answered
    texts = [chunk.text for _, chunk in chunks]
    assert " ".join(texts) == result.translated_text
    assert [chunk.index for _, chunk in chunks] == list(range(len(chunks))) and chunks[-1][1].final
    offsets = [chunk.offset_ms for _, chunk in chunks]
    assert offsets == sorted(offsets) and offsets[0] < clip.duration_s * 1000
    print(f"{len(chunks)} chunks, first after {chunks[0][0] - started:.2f} s, answer after {answered - started:.2f} s")
    # Each chunk says its clause: Whisper hears its content words in the chunk's audio alone.
    last = chunks[-1][1]
    heard = content_words(listen(dubber, last.audio, "es"))
    assert len(heard & content_words(last.text)) >= 0.5 * len(content_words(last.text)), (last.text, heard)


def test_silence_comes_back_as_silence_quickly(dubber: DubbingPipeline) -> None:
    started = time.perf_counter()
    result = dubber.process(make_fragment(np.zeros(6 * RATE, np.float32), AudioFormat.PCM_S16LE), StreamConfig())
    elapsed = time.perf_counter() - started
    assert result.status is FragmentStatus.SUCCESS and result.transcript == ""
    assert result.dubbed_audio is not None
    dub = decode_audio(result.dubbed_audio.decode_bytes(), "pcm_s16le", RATE, 1, RATE)
    assert len(dub) == 6 * RATE and not dub.any()
    assert elapsed < 1.0


def test_undecodable_audio_fails_with_invalid_audio_format(dubber: DubbingPipeline) -> None:
    good = make_fragment(np.zeros(RATE, np.float32), AudioFormat.PCM_S16LE)
    garbage = AudioPayload.from_bytes(
        b"\x00garbage" * 999, format=AudioFormat.M4A, sample_rate_hz=RATE, channels=1, duration_ms=1000
    )
    result = dubber.process(good.model_copy(update={"audio": garbage}), StreamConfig())
    assert result.status is FragmentStatus.FAILED
    assert result.error is not None and result.error.code is ErrorCode.INVALID_AUDIO_FORMAT
    assert result.dubbed_audio is None


def test_the_llm_keeps_each_directions_prompt_prefix(dubber: DubbingPipeline) -> None:
    from livedub.dubbing.translate import LlmTranslator

    llm = dubber.engine.translate.translators[("en", "es")]
    if not isinstance(llm, LlmTranslator) or llm is not dubber.engine.translate.translators[("es", "en")]:
        pytest.skip("needs one LLM serving both directions")
    first = llm.translate("Please enter your password.", "en", "es")
    llm.translate("Por favor, introduzca su contraseña.", "es", "en")  # the context now holds es→en
    started = time.perf_counter()
    again = llm.translate("Please enter your password.", "en", "es")  # en→es restored, not evaluated again
    switched_s = time.perf_counter() - started
    assert again == first
    started = time.perf_counter()
    llm.translate("Please enter your password.", "en", "es")
    # Restoring costs about what a cached call costs, not the prefix's evaluation (seconds on 2 cores).
    assert switched_s < 2 * (time.perf_counter() - started) + 0.5
