"""Rule-based translation with the Debian `apertium-eng-spa` package: fast (~0.1 s), lower quality than the LLM."""

from __future__ import annotations

import shutil
import subprocess

from livedub.sts.translate.base import TranslationError

# (source, target) -> apertium mode of apertium-eng-spa.
MODES = {("en", "es"): "eng-spa", ("es", "en"): "spa-eng"}


class ApertiumTranslator:
    name = "apertium"

    def __init__(self, binary: str = "apertium", timeout_s: float = 10.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary!r} not found: install the Debian packages apertium and apertium-eng-spa")
        self.binary = path
        self.timeout_s = timeout_s

    def supports(self, source: str, target: str) -> bool:
        return (source, target) in MODES

    def translate(self, text: str, source: str, target: str) -> str:
        mode = MODES.get((source, target))
        if mode is None:
            raise TranslationError(f"apertium has no {source}->{target} mode")
        if not text.strip():
            return ""
        try:
            # -u: no '*' marks on unknown words (they would be spoken).
            result = subprocess.run(
                [self.binary, "-u", mode],
                input=text,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise TranslationError(f"apertium timed out after {self.timeout_s} s", retryable=True) from exc
        if result.returncode != 0:
            raise TranslationError(f"apertium {mode} failed: {result.stderr.strip()[:300]}")
        return " ".join(result.stdout.split())
