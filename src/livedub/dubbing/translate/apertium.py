"""Rule-based translation with the Debian apertium packages (`apertium-eng-spa`, `apertium-fr-es`): fast (~0.1 s),
lower quality than the LLM. The pairs with a mode (`apertium -l` lists the installed ones), and English ↔ French
through Spanish (two modes in a row: poorer still, but ~30x cheaper than the LLM when a second target language must
keep up).

Glossary terms are protected: each is replaced by a placeholder apertium does not know (`Zqx0`, `Zqx1`, ...; with
`-u` an unknown word passes through unchanged and unmarked, and it blocks reordering around it), and the required
translation is put back in its place afterwards."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from livedub.dubbing import glossary
from livedub.dubbing.interfaces import NO_CONTEXT, TranslationContext
from livedub.dubbing.translate.base import TranslationError
from livedub.dubbing.translate.registry import TranslatorCapabilities, TranslatorSpec, register

# (source, target) -> apertium mode: apertium-eng-spa (eng-spa, spa-eng) and apertium-fr-es (fr-es, es-fr).
MODES = {("en", "es"): "eng-spa", ("es", "en"): "spa-eng", ("fr", "es"): "fr-es", ("es", "fr"): "es-fr"}
PIVOT = "es"  # the language every installed mode shares


def placeholder(index: int) -> str:
    """A word no apertium dictionary holds: it comes out as it went in."""
    return f"Zqx{index}"


def _chain(source: str, target: str) -> tuple[str, ...]:
    """The modes that translate source -> target: one, or two through the pivot; () when there is no way."""
    if (source, target) in MODES:
        return (MODES[(source, target)],)
    if (source, PIVOT) in MODES and (PIVOT, target) in MODES and source != target:
        return (MODES[(source, PIVOT)], MODES[(PIVOT, target)])
    return ()


CHAINS = {(s, t): chain for s in {p[0] for p in MODES} for t in {p[1] for p in MODES} if (chain := _chain(s, t))}


class ApertiumTranslator:
    name = "apertium"
    capabilities = TranslatorCapabilities(pairs=frozenset(CHAINS), fast=True)  # rule-based: ~10 ms a phrase

    def __init__(self, binary: str = "apertium", timeout_s: float = 10.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary!r} not found: install the Debian packages apertium and apertium-eng-spa")
        self.binary = path
        self.timeout_s = timeout_s

    def supports(self, source: str, target: str) -> bool:
        return self.capabilities.supports(source, target)

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        chain = CHAINS.get((source, target))
        if chain is None:
            raise TranslationError(f"apertium has no {source}->{target} mode")
        text, translations = glossary.protect(text, context.glossary, placeholder)
        for mode in chain:
            text = self._run(mode, text)
        return glossary.restore(text, translations, placeholder)

    def _run(self, mode: str, text: str) -> str:
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


@dataclass(frozen=True)
class ApertiumSettings:
    binary: str = "apertium"


register(
    TranslatorSpec(
        "apertium",
        ApertiumTranslator.capabilities,
        ApertiumSettings,
        build=lambda settings: ApertiumTranslator(settings.binary),
    )
)
