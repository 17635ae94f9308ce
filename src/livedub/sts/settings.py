"""STS service settings: environment variables or a `.env` file.

Defaults follow the quality measured on this machine (docs/benchmarks-sts.md): the LLM translates better than
apertium in both directions, and Kokoro sounds better and is understood better than espeak-ng for Spanish.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

TranslatorName = Literal["llm", "apertium", "deepl"]


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
    cpu_threads: int = Field(
        0,
        ge=0,
        validation_alias="STS_CPU_THREADS",
        description="Threads each model may use for inference; 0 = number of CPU cores.",
    )

    # ASR.
    asr_model: str = Field(
        "whisper-base",
        validation_alias="STS_ASR_MODEL",
        description="CTranslate2 Whisper model directory, or the name of a model in the livedub cache.",
    )
    asr_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", validation_alias="STS_ASR_DEVICE", description="Inference device of the ASR model."
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
    translator_en_es: TranslatorName = Field(
        "llm", validation_alias="STS_TRANSLATOR_EN_ES", description="Translator for English → Spanish."
    )
    translator_es_en: TranslatorName = Field(
        "llm", validation_alias="STS_TRANSLATOR_ES_EN", description="Translator for Spanish → English."
    )
    fast_translator: TranslatorName | Literal[""] = Field(
        "apertium",
        validation_alias="STS_FAST_TRANSLATOR",
        description="Translator for a phrase whose dub the main one could not finish in time (plainer words beat"
        " the original voice); empty: such phrases are dropped.",
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
    apertium_binary: str = Field("apertium", validation_alias="STS_APERTIUM_BINARY", description="apertium command.")

    # Speech synthesis.
    tts_en: Literal["piper", "espeak-ng"] = Field(
        "piper", validation_alias="STS_TTS_EN", description="Speech synthesiser for English."
    )
    tts_es: Literal["kokoro", "espeak-ng"] = Field(
        "kokoro", validation_alias="STS_TTS_ES", description="Speech synthesiser for Spanish."
    )
    piper_voice: str = Field(
        "piper-en_US-joe-medium",
        validation_alias="STS_PIPER_VOICE",
        description="Piper voice .onnx file, or the name of a Piper voice in the livedub cache.",
    )
    kokoro_model: str = Field(
        "kokoro-82m-int8",
        validation_alias="STS_KOKORO_MODEL",
        description="Directory with kokoro-v1.0.int8.onnx, vocab.json and a voices .npz, or a cache name.",
    )
    kokoro_voice: str = Field(
        "jm_kumo",
        validation_alias="STS_KOKORO_VOICE",
        description="Kokoro voice style in the voices .npz (empty = the first). jm_kumo is understood best in Spanish.",
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
