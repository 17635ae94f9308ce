"""Glossaries: terms that must be translated a given way (names, brands, jargon), or kept as they are.

Two sources, merged per direction: the deployment's file (STS_GLOSSARY_FILE, loaded once at start) and the stream's
own entries (`stream:init` config.glossary, per target language); the stream's entry wins for the same term. Every
translator applies the result (`TranslationContext.glossary`): the LLM is told the terms a sentence contains and its
answer is checked; apertium, DeepL and Google translate the sentence with each term protected (a placeholder, or
markup the service leaves alone) and the required translation put back.

File formats (the extension decides):

- JSON (`.json`): `{"en-es": [{"source": "voicemail", "target": "buzón de voz"}, ...], ...}`, or per pair an object
  `{"voicemail": "buzón de voz", ...}`.
- TSV (any other extension): one entry a line, `en-es<TAB>voicemail<TAB>buzón de voz`; blank lines and lines
  starting with `#` are skipped.

The file is read and its terms checked on the STS side (livedub.sts.glossary_file: the wire's bounds); here, the
entries are (term, its required translation) pairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Pair = tuple[str, str]
Entries = tuple[tuple[str, str], ...]  # (term, its required translation)


def merge(base: Iterable[tuple[str, str]], override: Iterable[tuple[str, str]]) -> Entries:
    """`base` with `override`'s entries replacing those of the same term (any case) and added after."""
    merged = {term.casefold(): (term, translation) for term, translation in base}
    merged.update({term.casefold(): (term, translation) for term, translation in override})
    return tuple(merged.values())


@dataclass(frozen=True)
class Match:
    term: str
    translation: str
    start: int
    end: int


def _pattern(term: str) -> re.Pattern[str]:
    # Whole words, any case, any run of spaces between the words of the term.
    words = r"\s+".join(re.escape(word) for word in term.split())
    return re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)


def find(text: str, glossary: Iterable[tuple[str, str]]) -> list[Match]:
    """Where the glossary's terms occur in `text`, longest terms first, never overlapping; in text order."""
    taken: list[Match] = []
    for term, translation in sorted(glossary, key=lambda e: -len(e[0])):
        for m in _pattern(term).finditer(text):
            if all(m.end() <= t.start or m.start() >= t.end for t in taken):
                taken.append(Match(term, translation, m.start(), m.end()))
    return sorted(taken, key=lambda m: m.start)


def present(text: str, glossary: Iterable[tuple[str, str]]) -> Entries:
    """The entries whose term occurs in `text` (each once, in text order)."""
    return tuple(dict.fromkeys((m.term, m.translation) for m in find(text, glossary)))


def contains(text: str, phrase: str) -> bool:
    """`phrase` occurs in `text` as whole words (any case)."""
    return _pattern(phrase).search(text) is not None


def missing(output: str, entries: Iterable[tuple[str, str]]) -> Entries:
    """The entries whose required translation is not in `output`."""
    return tuple((term, translation) for term, translation in entries if not contains(output, translation))


def protect(text: str, glossary: Iterable[tuple[str, str]], placeholder: Callable[[int], str]) -> tuple[str, list[str]]:
    """`text` with each glossary term replaced by `placeholder(i)`, and the translation of each i."""
    out, translations, last = [], [], 0
    for i, match in enumerate(find(text, glossary)):
        out += [text[last : match.start], placeholder(i)]
        translations.append(match.translation)
        last = match.end
    out.append(text[last:])
    return "".join(out), translations


def substitute(text: str, glossary: Iterable[tuple[str, str]]) -> str:
    """`text` with each glossary term replaced by its required translation."""
    out, last = [], 0
    for match in find(text, glossary):
        out += [text[last : match.start], match.translation]
        last = match.end
    out.append(text[last:])
    return "".join(out)


def restore(text: str, translations: list[str], placeholder: Callable[[int], str]) -> str:
    """Each `placeholder(i)` of a translated text replaced by translation i (capitalised when it opens the text)."""
    for i, translation in enumerate(translations):
        token = placeholder(i)
        if text.startswith(token):
            text = translation[:1].upper() + translation[1:] + text[len(token) :]
        text = re.sub(rf"(?<!\w){re.escape(token)}(?!\w)", lambda _m, t=translation: t, text, flags=re.IGNORECASE)
    return text
