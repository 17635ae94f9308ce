"""Shared bits of the translators."""

from __future__ import annotations

import re

from livedub.dubbing.interfaces import BackendError

# A sentence ends at . ! ? … followed by space; Spanish opening marks stay with their sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class TranslationError(BackendError):
    """A translator could not produce a translation (maps to TRANSLATION_FAILED)."""


def split_sentences(text: str) -> list[str]:
    """Split text into sentences (non-empty, stripped)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


# A clause ends at , ; : or a sentence end followed by space; shorter pieces join the next (a two-word clause is not
# worth a synthesis of its own, and "Sí, señor" is one breath).
_CLAUSE_END = re.compile(r"(?<=[,;:.!?…])\s+")
MIN_CLAUSE_WORDS = 3


def split_clauses(text: str, min_words: int = MIN_CLAUSE_WORDS) -> list[str]:
    """Split text into clauses to speak one at a time (each of at least `min_words` words, but for the last)."""
    clauses: list[str] = []
    pending = ""
    for piece in _CLAUSE_END.split(text.strip()):
        pending = f"{pending} {piece}".strip()
        if len(pending.split()) >= min_words:
            clauses.append(pending)
            pending = ""
    if pending:
        if clauses and len(pending.split()) < min_words:
            clauses[-1] = f"{clauses[-1]} {pending}"
        else:
            clauses.append(pending)
    return clauses


def complete_clauses(text: str, min_words: int = MIN_CLAUSE_WORDS) -> tuple[list[str], str]:
    """The clauses of a text still being written that are complete (a boundary after them), and the rest."""
    pieces = _CLAUSE_END.split(text)
    done, rest = [], ""
    for piece in pieces[:-1]:
        rest = f"{rest} {piece}".strip()
        if len(rest.split()) >= min_words:
            done.append(rest)
            rest = ""
    return done, f"{rest} {pieces[-1]}".strip() if rest else pieces[-1]
