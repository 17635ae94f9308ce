"""Piper neural TTS (piper-tts) with any voice .onnx (+ .onnx.json next to it)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedub.dubbing.device import CUDA_PROVIDER, DeviceSetting, OnnxDevice, as_device, load_placed, record
from livedub.dubbing.interfaces import FloatAudio
from livedub.dubbing.model_files import resolve_model
from livedub.dubbing.tts.registry import FastVoices, TTSCapabilities, VoiceBackendSpec, register
from livedub.languages import VoiceRef


class PiperTTS:
    name = "piper"
    capabilities: TTSCapabilities  # the language of its voice model

    def __init__(self, voice_file: str | Path, device: DeviceSetting | OnnxDevice = "auto") -> None:
        """`device`: a setting (resolved by this machine's device plan) or resolved onnxruntime providers (Piper
        itself only asks for CUDA or not)."""
        from piper import PiperVoice

        self.voice_file = Path(voice_file)
        if not self.voice_file.is_file():
            raise FileNotFoundError(f"Piper voice {self.voice_file} not found")
        model = f"tts piper:{self.voice_file.stem}"
        wanted = as_device(device, lambda plan: plan.onnx)
        self._voice, self.placement = load_placed(
            model, wanted, lambda placed: PiperVoice.load(self.voice_file, use_cuda=placed.device == "cuda")
        )
        if self.placement.device == "cuda" and CUDA_PROVIDER not in self._voice.session.get_providers():
            self.placement = self.placement.on_cpu("onnxruntime could not start CUDAExecutionProvider; on the CPU")
            record(model, self.placement)
        self.sample_rate = int(self._voice.config.sample_rate)
        # A Piper voice speaks the one language it was trained on (its config names it, e.g. en_US).
        code = str(self._voice.config.espeak_voice or "en").split("-")[0].split("_")[0]
        self.capabilities = TTSCapabilities(languages=frozenset({code}), speaking_rate=True)
        self.name = f"piper:{self.voice_file.stem}"
        self._lock = threading.Lock()  # the voice's phonemizer (espeak-ng) is process-global and not thread-safe

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        """`speed` < 1 speaks slower (Piper's length scale), with natural prosody rather than a time-stretch."""
        from piper import SynthesisConfig

        if not text.strip():
            return np.zeros(0, dtype=np.float32)
        length_scale = (self._voice.config.length_scale or 1.0) / speed
        with self._lock:
            chunks = [
                chunk.audio_float_array
                for chunk in self._voice.synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale))
            ]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)


@dataclass(frozen=True)
class PiperSettings:
    """Each voice names its model (a cache name or an .onnx path); the device is all Piper has of its own."""

    device: DeviceSetting | OnnxDevice = "auto"


def _no_default_voice(language: str) -> VoiceRef:
    raise ValueError(f"no Piper voice is known for {language!r}: pin one as piper:<model name or .onnx path>")


register(
    VoiceBackendSpec(
        "piper",
        # Each Piper voice speaks the one language of its model (the built backend's own capabilities say which).
        TTSCapabilities(languages=None, speaking_rate=True),
        PiperSettings,
        build=lambda settings, voice: PiperTTS(resolve_model(voice.voice), settings.device),
        instance_of=lambda voice: voice.voice,  # one backend per voice model
        default_voice=_no_default_voice,
        # English's usual voice is already cheap (~0.1 s CPU per s of speech): it stands in for Kokoro's (0.9 % WER).
        fast_voices=(FastVoices("en", (VoiceRef("piper", "piper-en_US-joe-medium", "male"),), loss=0.009),),
    )
)
