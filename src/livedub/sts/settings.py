"""STS service settings: environment variables (the seed's names where they exist) or a `.env` file.

Defaults follow the quality measured on this machine (docs/benchmarks-sts.md, docs/benchmarks-languages.md): the
LLM translates better than apertium, and each language's voices (livedub.languages) are those understood best.
Backends are named per language or pair by a few settings (STS_TRANSLATOR, STS_TRANSLATOR_OVERRIDES,
STS_TTS_VOICES), not one setting per pair.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from livedub.dubbing.tts.registry import TTS_BACKENDS
from livedub.languages import VoiceRef, parse_pair
from livedub.sts.glossary_file import load_glossary_file

TranslatorName = Literal["llm", "apertium", "deepl", "google"]
TRANSLATOR_NAMES: tuple[str, ...] = get_args(TranslatorName)


class StsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Server.
    host: str = Field("0.0.0.0", validation_alias="STS_HOST", description="Address the STS server binds to.")
    port: int = Field(3000, ge=1, le=65535, validation_alias="STS_PORT", description="Port of the STS server.")
    api_key: str = Field(
        "", validation_alias="STS_API_KEY", description="When set, clients must present this key at connect."
    )
    monitor_key: str = Field(
        "",
        validation_alias="STS_MONITOR_KEY",
        description="Key that `monitor:subscribe` needs (the API key also works); with neither set, only loopback "
        "clients may monitor.",
    )
    max_fragment_bytes: int = Field(
        2_000_000,
        ge=1,
        validation_alias="STS_MAX_FRAGMENT_BYTES",
        description="Largest decoded (base64-decoded) audio payload accepted per fragment, in bytes.",
    )
    pipeline: Literal["dub", "echo"] = Field(
        "dub",
        validation_alias="STS_PIPELINE",
        description="`dub` runs ASR, translation and TTS; `echo` returns the original audio as the dub (A/V tests).",
    )
    worker_threads: int = Field(
        1,
        ge=1,
        le=16,
        validation_alias="STS_WORKER_THREADS",
        description="How many fragments are processed at once (inference concurrency).",
    )
    warmup_pairs: str = Field(
        "en-es,es-en",
        validation_alias="STS_WARMUP_PAIRS",
        description="Language pairs warmed up at start (comma-separated, e.g. `en-es,en-fr`). Any other pair of the "
        "language table is served too: the first `stream:init` that asks for it waits for its warm-up (a few seconds"
        " per pair on 2 cores).",
    )
    voice_match: bool = Field(
        True,
        validation_alias="STS_VOICE_MATCH",
        description="Per stream, each target language speaks with its voice (of the language table or "
        "STS_TTS_VOICES) nearest to the speaker (a speaker embedding; the voice changes when the speaker does, "
        "after two phrases). false: always the language's first voice. A stream's `voice_profile` "
        "(`backend:voice`) pins a voice either way.",
    )
    fast_voice: bool = Field(
        True,
        validation_alias="STS_FAST_VOICE",
        description="A phrase that its voice could not speak in time (a busy machine) is spoken by the language's fast "
        "voice (language table: SVOX Pico for Spanish, French and Italian, Piper for English; cheap, less natural, "
        "understood less well). false: such phrases keep the original speech.",
    )
    auto_disconnect_delay_s: float = Field(
        5.0,
        ge=0.0,
        validation_alias="AUTO_DISCONNECT_DELAY",
        description="Seconds after a stream's `stream:complete` at which the server closes its connection, unless "
        "the connection has opened another stream by then (the seed's name and default); 0: never.",
    )
    cpu_threads: int = Field(
        0,
        ge=0,
        validation_alias="STS_CPU_THREADS",
        description="Threads each model may use for inference; 0 = the CPU cores shared out among the"
        " STS_WORKER_THREADS (2 cores, 2 workers: one each, so that two phrases in different stages run at once).",
    )

    # ASR.
    asr_model: str = Field(
        "whisper-base",
        validation_alias="STS_ASR_MODEL",
        description="CTranslate2 Whisper model directory, or the name of a model in the livedub cache.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        validation_alias="STS_DEVICE",
        description="Where the models run (Whisper, the LLM, the voices; the speaker embedder always takes auto): "
        "auto = CUDA when a CUDA device is present and the model's library can use it (llama.cpp built "
        "with GPU offload, onnxruntime-gpu), cuda = the same with a warning for each model left on the "
        "CPU, cpu = never the GPU. A model the GPU cannot take (library without CUDA, out of memory) runs"
        " on the CPU with the reason logged; /health shows where each one runs.",
    )
    asr_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        validation_alias="STS_ASR_DEVICE",
        description="Whisper's device alone, over STS_DEVICE (auto: STS_DEVICE's).",
    )
    asr_beam_size: int = Field(
        5, ge=1, le=10, validation_alias="STS_ASR_BEAM_SIZE", description="Beam size of Whisper decoding."
    )
    asr_vad: bool = Field(
        True, validation_alias="STS_ASR_VAD", description="Skip silence with faster-whisper's Silero VAD filter."
    )
    asr_min_window_s: float = Field(
        15.0,
        ge=0.0,
        le=30.0,
        validation_alias="STS_ASR_MIN_WINDOW_S",
        description="Shortest window Whisper's encoder is given (the audio plus 5 s of padding, at least this); 30 = "
        "always the full 30 s window. The encoder is most of the ASR time: 15 s makes the ASR 2-2.5x faster "
        "(WER in docs/benchmarks-sts.md).",
    )

    # Translation.
    translator: TranslatorName = Field(
        "llm",
        validation_alias="STS_TRANSLATOR",
        description="Translator of every language pair (unless overridden); a pair it cannot translate gets the "
        "first of the target language's preferred translators that can (livedub.languages).",
    )
    translator_overrides: str = Field(
        "",
        validation_alias="STS_TRANSLATOR_OVERRIDES",
        description="Translator per pair, e.g. `en-es=apertium,es-en=deepl` (pairs not named use STS_TRANSLATOR).",
    )
    fast_translator: TranslatorName | Literal[""] = Field(
        "apertium",
        validation_alias="STS_FAST_TRANSLATOR",
        description="Translator for a phrase whose dub the main one could not finish in time (plainer words beat"
        " the original voice), on the pairs it can translate (apertium: en-es, es-en, es-fr, fr-es); empty: such"
        " phrases are dropped.",
    )
    llm_model: str = Field(
        "qwen2.5-coder-1.5b-instruct-gguf",
        validation_alias="STS_LLM_MODEL",
        description="GGUF file of the translation LLM, or the name of a model in the livedub cache.",
    )
    llm_context: int = Field(1024, ge=256, validation_alias="STS_LLM_CONTEXT", description="LLM context length.")
    deepl_api_key: str = Field("", validation_alias="DEEPL_API_KEY", description="DeepL API key (translator deepl).")
    deepl_api_url: str = Field(
        "https://api-free.deepl.com/v2/translate",
        validation_alias="DEEPL_API_URL",
        description="DeepL translate endpoint (free or pro API).",
    )
    google_api_key: str = Field(
        "", validation_alias="GOOGLE_API_KEY", description="Google Cloud Translation API key (translator google)."
    )
    google_translate_url: str = Field(
        "https://translation.googleapis.com/language/translate/v2",
        validation_alias="GOOGLE_TRANSLATE_URL",
        description="Google Cloud Translation (Basic, v2) endpoint.",
    )
    apertium_binary: str = Field("apertium", validation_alias="STS_APERTIUM_BINARY", description="apertium command.")
    context_phrases: int = Field(
        0,
        ge=0,
        le=8,
        validation_alias="STS_CONTEXT_PHRASES",
        description="Most of the stream's previous phrases the LLM sees with each sentence (pronouns, gender and "
        "terms stay consistent): a window that grows by a phrase and starts again when full, so that llama.cpp reuses"
        " the prompt it evaluated for the phrase before; 0: none. Measured on 2 cores (12 prompts in order, en→es):"
        " 3 costs ~1 s more per phrase (p50 2.8 s vs 1.8 s) for +1.2 chrF, so it is off by default.",
    )
    glossary_file: str = Field(
        "",
        validation_alias="STS_GLOSSARY_FILE",
        description="Terms every translator must translate a given way (or keep: translation = term), per pair: "
        'JSON `{"en-es": [{"source": "voicemail", "target": "buzón de voz"}]}` (a `.json` file) or '
        "TSV lines `en-es<TAB>term<TAB>translation`. Checked at start; a stream's `config.glossary` overrides it per "
        "term.",
    )

    # Speech synthesis.
    tts_voices: str = Field(
        "",
        validation_alias="STS_TTS_VOICES",
        description="Pinned voices per language, e.g. `fr=espeak-ng:fr-fr,en=piper:default,en=kokoro:jf_alpha` "
        "(backend:voice, or a backend alone for its default voice; a language named twice keeps both voices, the "
        "first is its default). Languages not named speak with the voices of the language table "
        "(livedub.languages, chosen by round-trip intelligibility).",
    )
    kokoro_model: str = Field(
        "kokoro-82m-int8",
        validation_alias="STS_KOKORO_MODEL",
        description="Directory with kokoro-v1.0.int8.onnx, vocab.json and a voices .npz, or a cache name.",
    )
    espeak_binary: str = Field("espeak-ng", validation_alias="STS_ESPEAK_BINARY", description="espeak-ng command.")

    # Duration fit.
    max_speedup: float = Field(
        1.35,
        ge=1.0,
        le=4.0,
        validation_alias="STS_MAX_SPEEDUP",
        description="Largest time-stretch speed-up applied to make the dub fit its fragment.",
    )
    max_slowdown: float = Field(
        1.35,
        ge=1.0,
        le=4.0,
        validation_alias="STS_MAX_SLOWDOWN",
        description="Largest slow-down factor applied to a dub shorter than the speech it replaces (1.35: to 74 %).",
    )

    @field_validator("translator_overrides")
    @classmethod
    def _check_overrides(cls, value: str) -> str:
        for pair, name in parse_assignments(value):
            parse_pair(pair)
            if name not in TRANSLATOR_NAMES:
                raise ValueError(f"unknown translator {name!r} for {pair} (have {', '.join(TRANSLATOR_NAMES)})")
        return value

    @field_validator("tts_voices")
    @classmethod
    def _check_voices(cls, value: str) -> str:
        for _language, voice in parse_assignments(value):
            backend = voice.partition(":")[0]
            if backend not in TTS_BACKENDS:
                raise ValueError(f"unknown TTS backend {backend!r} in {voice!r} (have {', '.join(TTS_BACKENDS)})")
        return value

    @field_validator("glossary_file")
    @classmethod
    def _check_glossary_file(cls, value: str) -> str:
        if value.strip():
            load_glossary_file(value.strip())  # GlossaryFileError (a ValueError) names the bad line
        return value.strip()

    def glossary(self) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
        """STS_GLOSSARY_FILE as {(source, target): ((term, translation), ...)}; {} without one."""
        return load_glossary_file(self.glossary_file) if self.glossary_file else {}

    def translator_override_map(self) -> dict[tuple[str, str], str]:
        """STS_TRANSLATOR_OVERRIDES as {(source, target): translator}."""
        return {parse_pair(pair): name for pair, name in parse_assignments(self.translator_overrides)}

    def voice_pins(self) -> dict[str, list[VoiceRef]]:
        """STS_TTS_VOICES as {language: [voices]} in the order given (`backend` alone: voice `default`)."""
        pins: dict[str, list[VoiceRef]] = {}
        for language, voice in parse_assignments(self.tts_voices):
            ref = VoiceRef.parse(voice if ":" in voice else f"{voice}:default")
            pins.setdefault(language, []).append(ref)
        return pins


def parse_assignments(text: str) -> list[tuple[str, str]]:
    """`a=x, b=y` -> [("a", "x"), ("b", "y")] (order kept, repeats kept)."""
    items = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{item.strip()!r} is not key=value")
        items.append((key.strip(), value.strip()))
    return items
