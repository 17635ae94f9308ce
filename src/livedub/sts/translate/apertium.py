"""Rule-based translation with the Debian apertium packages (`apertium-eng-spa`, `apertium-fr-es`): fast (~0.1 s),
lower quality than the LLM. Only the pairs with a mode: `apertium -l` lists the installed ones."""

from __future__ import annotations

import shutil
import subprocess

from livedub.sts.translate.base import TranslationError
from livedub.sts.translate.registry import TranslatorCapabilities

# (source, target) -> apertium mode: apertium-eng-spa (eng-spa, spa-eng) and apertium-fr-es (fr-es, es-fr).
MODES = {("en", "es"): "eng-spa", ("es", "en"): "spa-eng", ("fr", "es"): "fr-es", ("es", "fr"): "es-fr"}


class ApertiumTranslator:
    name = "apertium"
    capabilities = TranslatorCapabilities(pairs=frozenset(MODES))

    def __init__(self, binary: str = "apertium", timeout_s: float = 10.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary!r} not found: install the Debian packages apertium and apertium-eng-spa")
        self.binary = path
        self.timeout_s = timeout_s

    def supports(self, source: str, target: str) -> bool:
        return self.capabilities.supports(source, target)

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
