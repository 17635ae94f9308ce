"""DubbingPipeline / EchoPipeline logic with stand-in backends (no models): stages, errors, silence, duration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livedub.deadline import Deadline
from livedub.dubbing import SpeakingPace
from livedub.dubbing.interfaces import NO_CONTEXT, FloatAudio, Transcript, TranslationContext, UnsupportedLanguageError
from livedub.dubbing.translate import TranslationError
from livedub.dubbing.translate.registry import TranslatorCapabilities
from livedub.dubbing.tts.registry import TTSCapabilities
from livedub.protocol import AudioFormat, AudioPayload, ErrorCode, FragmentData, FragmentStatus, StreamConfig
from livedub.sts.payload_audio import decode_audio, encode_audio
from livedub.sts.pipeline import DubbingPipeline, EchoPipeline, build_processor, fit_target
from livedub.sts.settings import StsSettings

pytestmark = pytest.mark.unit

RATE = 48000


class FakeASR:
    name = "fake-asr"
    sample_rate = 16000

    def __init__(self, text: str = "hello there", span: tuple[float, float] = (0.5, 4.5)) -> None:
        self.text, self.span, self.calls = text, span, 0

    def transcribe(self, audio: FloatAudio, language: str) -> Transcript:
        self.calls += 1
        if np.abs(audio).max() < 1e-3:  # what the VAD does: no speech, no segments
            return Transcript("", language)
        return Transcript(self.text, language, [(self.span[0], self.span[1], self.text)])


class FakeTranslator:
    name = "fake-mt"
    capabilities = TranslatorCapabilities(languages=frozenset({"en", "es", "fr", "it"}))

    def __init__(self, error: Exception | None = None) -> None:
        self.error, self.calls = error, 0
        self.contexts: list[TranslationContext] = []

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        self.calls += 1
        self.contexts.append(context)
        if self.error:
            raise self.error
        return f"[{target}] {text}"


class FakeTTS:
    """Speaks a tone of `seconds` (plus silence around it, which the pipeline trims)."""

    capabilities = TTSCapabilities(languages=None, speaking_rate=False)  # no rate control: time-stretched only

    name = "fake-tts"
    sample_rate = 24000

    def __init__(self, seconds: float = 4.0, error: Exception | None = None) -> None:
        self.seconds, self.error = seconds, error

    def synthesize(self, text: str, language: str, voice: str = "default") -> FloatAudio:
        if self.error:
            raise self.error
        t = np.arange(round(self.seconds * self.sample_rate)) / self.sample_rate
        speech = (0.4 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
        return np.concatenate([np.zeros(2400, np.float32), speech, np.zeros(2400, np.float32)])


def pipeline(
    asr: FakeASR | None = None, translator: FakeTranslator | None = None, tts: FakeTTS | None = None
) -> DubbingPipeline:
    translator = translator or FakeTranslator()
    tts = tts or FakeTTS()
    return DubbingPipeline(
        StsSettings(STS_VOICE_MATCH=False),  # no speaker embedder in unit tests
        asr=asr or FakeASR(),
        translators={("en", "es"): translator, ("es", "en"): translator},
        tts={"en": tts, "es": tts},
    )


def fragment(
    seconds: float = 6.0, fmt: AudioFormat = AudioFormat.PCM_S16LE, silent: bool = False, seq: int = 3
) -> FragmentData:
    t = np.arange(round(seconds * RATE)) / RATE
    audio = np.zeros_like(t, dtype=np.float32) if silent else (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    payload = AudioPayload.from_bytes(
        encode_audio(audio, RATE, fmt), format=fmt, sample_rate_hz=RATE, channels=1, duration_ms=seconds * 1000
    )
    return FragmentData(fragment_id=f"frag-{seq}", stream_id="stream-1", sequence_number=seq, audio=payload)


EN_ES = StreamConfig(source_language="en", target_language="es")


@pytest.mark.parametrize("fmt", [AudioFormat.PCM_S16LE, AudioFormat.M4A])
def test_dub_fits_the_speech_span_and_has_the_fragment_length(fmt: AudioFormat) -> None:
    result = pipeline(tts=FakeTTS(seconds=4.6)).process(fragment(6.0, fmt), EN_ES)
    assert result.status is FragmentStatus.SUCCESS, result.error
    assert (result.fragment_id, result.stream_id, result.sequence_number) == ("frag-3", "stream-1", 3)
    assert result.transcript == "hello there"
    assert result.translated_text == "[es] hello there"
    meta = result.metadata
    assert meta.original_duration_ms == meta.dubbed_duration_ms == 6000.0
    assert meta.speed_ratio == pytest.approx(4.6 / 4.0, abs=0.01)  # sped up to the 4 s speech span
    assert abs(meta.duration_variance_percent) < 3
    assert result.dubbed_audio is not None and result.dubbed_audio.format is fmt
    dub = decode_audio(result.dubbed_audio.decode_bytes(), fmt, RATE, 1, RATE)[: 6 * RATE]
    assert len(dub) == 6 * RATE if fmt is AudioFormat.PCM_S16LE else len(dub) >= 6 * RATE - 1024
    loud = np.flatnonzero(np.abs(dub) > 0.05)
    assert abs(loud[0] / RATE - 0.5) < 0.05  # placed where the speech started
    assert result.processing_time_ms > 0
    assert (meta.speech_start_ms, meta.speech_end_ms) == (500.0, 4500.0)  # where the ASR heard speech
    assert meta.voice and result.target_language == "es"


def test_each_target_gets_its_answer_from_one_transcription() -> None:
    asr = FakeASR()
    translator = FakeTranslator()
    tts = FakeTTS(seconds=4.0)
    many = DubbingPipeline(
        StsSettings(STS_VOICE_MATCH=False),  # no speaker embedder in unit tests
        asr=asr,
        translators={("en", "es"): translator, ("en", "fr"): translator},
        tts={"es": tts, "fr": tts},
    )
    config = StreamConfig(source_language="en", target_languages=["es", "fr"])
    assert config.target_language == "es" and config.targets == ["es", "fr"]
    answers = list(many.process_each(fragment(6.0), config))
    assert [(a.target_language, a.status, a.translated_text) for a in answers] == [
        ("es", FragmentStatus.SUCCESS, "[es] hello there"),
        ("fr", FragmentStatus.SUCCESS, "[fr] hello there"),
    ]
    assert asr.calls == 1
    refused = list(many.process_each(fragment(6.0), StreamConfig(source_language="en", target_languages=["es", "de"])))
    assert [(a.target_language, a.error and a.error.code) for a in refused] == [
        ("es", ErrorCode.UNSUPPORTED_LANGUAGE),
        ("de", ErrorCode.UNSUPPORTED_LANGUAGE),
    ]


def test_too_long_dub_after_the_speedup_cap_fails_with_its_audio() -> None:
    # Span 0.5-4.5 s, room 0.5-6 s: 9.5 s / 1.35 = 7.0 s is 28 % over the 5.5 s room.
    result = pipeline(tts=FakeTTS(seconds=9.5)).process(fragment(), EN_ES)
    assert result.status is FragmentStatus.FAILED
    assert result.metadata.speed_ratio == pytest.approx(1.35)
    assert result.metadata.duration_variance_percent > 20
    assert result.error is not None and result.error.stage == "fit"
    assert result.dubbed_audio is not None


def test_slightly_long_dub_is_partial() -> None:
    result = pipeline(tts=FakeTTS(seconds=8.5)).process(fragment(), EN_ES)  # 8.5 / 1.35 = 6.3 s: +14.5 % of 5.5 s
    assert result.status is FragmentStatus.PARTIAL
    assert result.error is None


def test_silence_returns_silence_without_translating() -> None:
    translator = FakeTranslator()
    result = pipeline(translator=translator).process(fragment(silent=True), EN_ES)
    assert result.status is FragmentStatus.SUCCESS
    assert translator.calls == 0
    assert result.transcript == ""
    assert result.dubbed_audio is not None
    dub = decode_audio(result.dubbed_audio.decode_bytes(), "pcm_s16le", RATE, 1, RATE)
    assert len(dub) == 6 * RATE and not dub.any()


@pytest.mark.parametrize(
    ("kwargs", "stage", "code", "retryable"),
    [
        (
            {"translator": FakeTranslator(TranslationError("quota", retryable=False))},
            "translation",
            ErrorCode.TRANSLATION_FAILED,
            False,
        ),
        ({"translator": FakeTranslator(RuntimeError("boom"))}, "translation", ErrorCode.TRANSLATION_FAILED, True),
        ({"tts": FakeTTS(error=RuntimeError("no voice"))}, "tts", ErrorCode.TTS_SYNTHESIS_FAILED, True),
        ({"tts": FakeTTS(seconds=0.0)}, "tts", ErrorCode.TTS_SYNTHESIS_FAILED, True),
    ],
)
def test_stage_failures_map_to_protocol_errors(kwargs: dict, stage: str, code: ErrorCode, retryable: bool) -> None:
    result = pipeline(**kwargs).process(fragment(), EN_ES)
    assert result.status is FragmentStatus.FAILED
    assert result.error is not None
    assert (result.error.stage, result.error.code, result.error.retryable) == (stage, code, retryable)
    assert result.transcript == "hello there"  # what was done before the failure is reported


def test_asr_failure() -> None:
    class BrokenASR(FakeASR):
        def transcribe(self, audio: FloatAudio, language: str) -> Transcript:
            raise RuntimeError("decoder crashed")

    result = pipeline(asr=BrokenASR()).process(fragment(), EN_ES)
    assert result.error is not None
    assert (result.error.stage, result.error.code) == ("asr", ErrorCode.ASR_FAILED)
    assert "decoder crashed" in result.error.message


@pytest.mark.parametrize("processor", [pipeline()], ids=["dub"])  # echo mirrors any bytes (seed echo, issue 9)
def test_bad_audio_is_invalid_audio_format(processor: DubbingPipeline) -> None:
    good = fragment()
    cases = [
        good.model_copy(update={"audio": good.audio.model_copy(update={"data_base64": "***not base64***"})}),
        good.model_copy(update={"audio": good.audio.model_copy(update={"format": AudioFormat.M4A})}),
        good.model_copy(update={"audio": good.audio.model_copy(update={"duration_ms": 2000.0})}),  # not what it is
    ]
    for case in cases:
        result = processor.process(case, EN_ES)
        assert result.status is FragmentStatus.FAILED
        assert result.error is not None and result.error.code is ErrorCode.INVALID_AUDIO_FORMAT
        assert result.error.stage == "decode" and not result.error.retryable


def test_echo_returns_the_original_audio() -> None:
    frag = fragment(fmt=AudioFormat.M4A)
    result = EchoPipeline().process(frag, EN_ES)
    assert result.status is FragmentStatus.SUCCESS
    assert result.dubbed_audio == frag.audio
    assert result.metadata.original_duration_ms == 6000.0


def test_language_pairs() -> None:
    dub = pipeline()
    dub.check_languages("en", "es")
    dub.check_languages("es", "en")
    for source, target in [("en", "fr"), ("es", "es"), ("xx", "en")]:
        with pytest.raises(UnsupportedLanguageError):
            dub.check_languages(source, target)
    result = dub.process(fragment(), StreamConfig(source_language="en", target_language="de"))
    assert result.error is not None and result.error.code is ErrorCode.UNSUPPORTED_LANGUAGE


def test_build_processor_follows_the_settings() -> None:
    assert isinstance(build_processor(StsSettings(STS_PIPELINE="echo")), EchoPipeline)
    dub = build_processor(StsSettings(STS_PIPELINE="dub"))
    assert isinstance(dub, DubbingPipeline)
    assert dub.describe()["loaded"] is False  # models load at warmup, not at construction


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STS_TRANSLATOR_OVERRIDES", "en-es=apertium")
    monkeypatch.setenv("STS_TTS_VOICES", "es=espeak-ng")
    monkeypatch.setenv("STS_MAX_SPEEDUP", "1.2")
    settings = StsSettings()
    assert settings.translator_override_map() == {("en", "es"): "apertium"}
    assert (settings.tts_voices, settings.max_speedup) == ("es=espeak-ng", 1.2)
    monkeypatch.setenv("STS_TRANSLATOR", "babelfish")
    with pytest.raises(ValueError):
        StsSettings()


class SpeedTTS(FakeTTS):
    capabilities = TTSCapabilities(languages=None, speaking_rate=True)
    """A synthesiser that can speak slower: `speed` < 1 lengthens the speech."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.speeds: list[float] = []

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        self.speeds.append(speed)
        return FakeTTS(self.seconds / speed).synthesize(text, language, voice)


def test_a_much_too_short_dub_is_spoken_more_slowly_in_one_synthesis() -> None:
    tts = SpeedTTS(seconds=2.4)  # for a 4 s speech span: even a 1.35x slow-down leaves it 19 % short
    result = pipeline(tts=tts).process(fragment(), EN_ES)
    assert tts.speeds == [0.75]  # the rate was chosen from the text before synthesis
    assert result.status is FragmentStatus.SUCCESS
    assert result.metadata.speed_ratio == pytest.approx(3.2 / 4.0, abs=0.01)

    plain = pipeline(tts=FakeTTS(seconds=2.4)).process(fragment(), EN_ES)  # cannot slow down natively
    assert plain.status is FragmentStatus.PARTIAL
    assert plain.metadata.speed_ratio == pytest.approx(1 / 1.35, abs=0.01)


def test_warmup_runs_every_backend_once_also_for_a_single_pair() -> None:
    EchoPipeline().warmup()
    asr, translator = FakeASR(), FakeTranslator()
    single = DubbingPipeline(
        StsSettings(STS_VOICE_MATCH=False),
        asr=asr,
        translators={("es", "en"): translator},
        tts={"en": FakeTTS(1.0)},
        pairs=(("es", "en"),),
    )
    single.warmup()
    assert (asr.calls, translator.calls) == (1, 1)
    assert single.describe()["warm"] is True and single.describe()["supported_pairs"] == ["es-en"]
    with pytest.raises(UnsupportedLanguageError):
        single.check_languages("en", "es")


def test_a_dub_longer_than_the_span_runs_into_the_pause_after_it() -> None:
    result = pipeline(tts=FakeTTS(seconds=6.0)).process(fragment(), EN_ES)  # 6 / 1.35 = 4.44 s: past the 4 s span
    assert result.status is FragmentStatus.SUCCESS
    assert result.metadata.speed_ratio == pytest.approx(1.35, abs=0.01)
    assert result.metadata.dubbed_duration_ms == 6000.0


def test_a_dub_predicted_too_long_is_spoken_faster_in_one_synthesis() -> None:
    tts = SpeedTTS(seconds=9.5)  # at 1.25x: 7.6 s, then / 1.35 = 5.63 s for the 5.5 s room (+2 %)
    dubber = pipeline(tts=tts)
    dubber.engine.synthesise["es"].pace = SpeakingPace(chars_per_s=len("[es] hello there") / 9.5)  # learnt
    result = dubber.process(fragment(), EN_ES)
    assert tts.speeds == [1.25]
    assert result.status is FragmentStatus.SUCCESS
    assert result.metadata.speed_ratio == pytest.approx(1.35, abs=0.01)


def test_with_overrun_a_long_dub_runs_past_the_fragment_end() -> None:
    config = EN_ES.model_copy(update={"dub_overrun_ms": 2000})
    result = pipeline(tts=FakeTTS(seconds=9.5)).process(fragment(), config)  # 9.5 / 1.35 = 7.04 s from 0.5 s
    assert result.status is FragmentStatus.SUCCESS, result.error
    assert result.metadata.original_duration_ms == 6000.0
    assert result.metadata.dubbed_duration_ms == pytest.approx(7537, abs=25)
    assert result.dubbed_audio is not None and result.dubbed_audio.duration_ms == result.metadata.dubbed_duration_ms
    dub = decode_audio(result.dubbed_audio.decode_bytes(), "pcm_s16le", RATE, 1, RATE)
    assert len(dub) == pytest.approx(7.537 * RATE, abs=0.025 * RATE)
    assert np.abs(dub[: round(0.45 * RATE)]).max() < 0.01  # still placed at the speech start

    seed = pipeline(tts=FakeTTS(seconds=9.5)).process(fragment(), EN_ES)  # overrun 0: exactly the fragment
    assert seed.metadata.dubbed_duration_ms == 6000.0 and seed.status is FragmentStatus.FAILED


def test_work_past_its_deadline_is_answered_with_timeout_at_once() -> None:
    asr = FakeASR()
    result = pipeline(asr=asr).process(fragment(), EN_ES, deadline=Deadline.after(0.05))  # 6 s needs ~2 s
    assert result.status is FragmentStatus.FAILED and result.error is not None
    assert (result.error.stage, result.error.code, result.error.retryable) == ("timeout", ErrorCode.TIMEOUT, True)
    assert asr.calls == 0 and result.dubbed_audio is None
    assert result.processing_time_ms < 500
    assert pipeline().process(fragment(), EN_ES, deadline=Deadline.after(60)).status is FragmentStatus.SUCCESS
    assert EchoPipeline().process(fragment(), EN_ES, deadline=Deadline.after(0)).status is FragmentStatus.SUCCESS


def test_fit_target() -> None:
    assert fit_target(4.6, 4.0, 5.5, 1.35) == 4.0  # reachable within the cap: the span
    assert fit_target(6.0, 4.0, 5.5, 1.35) == pytest.approx(6.0 / 1.35)  # into the pause
    assert fit_target(9.0, 4.0, 5.5, 1.35) == 5.5  # never past the fragment's end


def test_each_target_is_given_the_streams_previous_phrases_and_glossary(tmp_path: Path) -> None:
    file = tmp_path / "glossary.tsv"
    file.write_text("en-es\tvoicemail\tbuzón de voz\nen-es\tpound\talmohadilla\nen-fr\tpound\tdièse\n", "utf-8")
    asr = FakeASR()
    failing_fr = FakeTranslator(error=TranslationError("down"))
    translator = FakeTranslator()
    tts = FakeTTS(seconds=4.0)
    dubber = DubbingPipeline(
        StsSettings(STS_VOICE_MATCH=False, STS_GLOSSARY_FILE=str(file), STS_CONTEXT_PHRASES=2),
        asr=asr,
        translators={("en", "es"): translator, ("en", "fr"): failing_fr},
        tts={"es": tts, "fr": tts},
    )
    config = StreamConfig.model_validate(
        {
            "source_language": "en",
            "target_languages": ["es", "fr"],
            "glossary": {"es": [{"source": "Pound", "target": "numeral"}]},
        }
    )
    for seq, said in enumerate(["first phrase", "second phrase", "third phrase"]):
        asr.text = said
        answers = list(dubber.process_each(fragment(6.0, seq=seq), config))
        assert answers[0].status is FragmentStatus.SUCCESS
    es = translator.contexts
    assert [c.previous for c in es] == [
        (),
        (("first phrase", "[es] first phrase"),),
        (("first phrase", "[es] first phrase"), ("second phrase", "[es] second phrase")),
    ]
    # The file's entries, the stream's winning for the same term (any case).
    assert es[0].glossary == (("voicemail", "buzón de voz"), ("Pound", "numeral"))
    # French failed every time: nothing remembered for it, and its file entry is its glossary.
    assert [c.previous for c in failing_fr.contexts] == [(), (), ()]
    assert failing_fr.contexts[0].glossary == (("pound", "dièse"),)
    # Another stream has its own memory; the stream's end forgets it.
    other = fragment(6.0, seq=9).model_copy(update={"stream_id": "stream-2"})
    list(dubber.process_each(other, config))
    assert es[-1].previous == ()
    dubber.end_stream("stream-1")
    list(dubber.process_each(fragment(6.0, seq=10), config))
    assert es[-1].previous == ()
