"""Shared bits of the translators."""

from __future__ import annotations

import re

# A sentence ends at . ! ? … followed by space; Spanish opening marks stay with their sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class TranslationError(RuntimeError):
    """A translator could not produce a translation (maps to TRANSLATION_FAILED)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (non-empty, stripped)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
