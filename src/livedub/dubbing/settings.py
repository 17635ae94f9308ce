"""The engine's own settings: which translators and voices it builds, and each backend's settings by name.

The STS maps its settings (environment variables) to these (livedub.sts.backends); `livedub dub-file` and the
benchmarks do the same. Nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from livedub.dubbing.device import DeviceSetting, WhisperDevice
from livedub.languages import VoiceRef

Pair = tuple[str, str]


@dataclass(frozen=True)
class WhisperSettings:
    model: str = "whisper-base"  # a CTranslate2 model directory, or the name of one in the livedub cache
    device: DeviceSetting | WhisperDevice = "auto"  # a setting (this machine's device plan resolves it) or resolved
    beam_size: int = 5
    vad: bool = True
    threads: int = 0
    min_window_s: float = 15.0


@dataclass(frozen=True)
class EngineSettings:
    """`translator`: the main translator where it can translate the pair (else the target language's preferred
    ones); `translator_overrides`: one per pair; `fast_translator`: the stand-in under deadline pressure, one of
    the translators that declare the fast role ("" for none). `voice_pins`: a language's voices instead of the
    table's; `fast_voice`: the fast voices the voice backends declare, as stand-ins. `backends`: each translator's
    or voice backend's own settings by its registered name (absent: its defaults)."""

    translator: str = "llm"
    translator_overrides: Mapping[Pair, str] = field(default_factory=dict)
    fast_translator: str = "apertium"
    voice_pins: Mapping[str, tuple[VoiceRef, ...]] = field(default_factory=dict)
    fast_voice: bool = True
    max_speedup: float = 1.35
    max_slowdown: float = 1.35
    asr: WhisperSettings = WhisperSettings()
    backends: Mapping[str, Any] = field(default_factory=dict)

    def backend_settings(self, name: str, settings_type: type[Any]) -> Any:
        """The settings of backend `name`: those given, else its defaults."""
        given = self.backends.get(name)
        return given if given is not None else settings_type()


__all__ = ["EngineSettings", "WhisperSettings"]
