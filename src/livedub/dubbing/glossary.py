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

Terms are cleaned and bounded as the protocol's `GlossaryEntry` is (control characters and newlines become spaces,
at most GLOSSARY_MAX_TERM_CHARS characters); a file holds at most FILE_MAX_ENTRIES entries per direction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from livedub.languages import parse_pair
from livedub.protocol import GlossaryEntry

Pair = tuple[str, str]
Entries = tuple[tuple[str, str], ...]  # (term, its required translation)

FILE_MAX_ENTRIES = 2000  # per direction, in STS_GLOSSARY_FILE


class GlossaryFileError(ValueError):
    """STS_GLOSSARY_FILE cannot be read or holds an invalid entry (the message names the place)."""


def _entry(item: dict[str, Any], where: str) -> tuple[str, str]:
    try:
        entry = GlossaryEntry.model_validate(item)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise GlossaryFileError(f"{where}: {problems}") from None
    return entry.source, entry.target


def _pair(text: str, where: str) -> Pair:
    try:
        return parse_pair(text.strip())
    except ValueError as exc:
        raise GlossaryFileError(f"{where}: {exc}") from None


def parse_glossary(text: str, fmt: str = "tsv", name: str = "glossary") -> dict[Pair, Entries]:
    """A glossary file's text (`fmt` json or tsv) as {(source, target): ((term, translation), ...)}."""
    found: dict[Pair, dict[str, tuple[str, str]]] = {}

    def add(pair: Pair, term: str, translation: str, where: str) -> None:
        entries = found.setdefault(pair, {})
        entries[term.casefold()] = (term, translation)  # a later entry of the same term wins
        if len(entries) > FILE_MAX_ENTRIES:
            raise GlossaryFileError(f"{where}: more than {FILE_MAX_ENTRIES} entries for {pair[0]}-{pair[1]}")

    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GlossaryFileError(f"{name}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise GlossaryFileError(f'{name}: expected an object {{"en-es": [...], ...}}')
        for key, items in data.items():
            pair = _pair(str(key), f"{name}: {key!r}")
            if isinstance(items, dict):
                items = [{"source": k, "target": v} for k, v in items.items()]
            if not isinstance(items, list):
                raise GlossaryFileError(f"{name}: {key}: expected a list of {{source, target}} or an object")
            for i, item in enumerate(items):
                where = f"{name}: {key}[{i}]"
                if not isinstance(item, dict):
                    raise GlossaryFileError(f"{where}: expected {{source, target}}")
                add(pair, *_entry(item, where), where)
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"{name}:{number}"
            fields = line.split("\t")
            if len(fields) != 3:
                raise GlossaryFileError(f"{where}: expected pair<TAB>term<TAB>translation, got {len(fields)} fields")
            add(_pair(fields[0], where), *_entry({"source": fields[1], "target": fields[2]}, where), where)
    return {pair: tuple(entries.values()) for pair, entries in found.items()}


def load_glossary_file(path: str | Path) -> dict[Pair, Entries]:
    """STS_GLOSSARY_FILE: JSON when the name ends in .json, else TSV. Raises GlossaryFileError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GlossaryFileError(f"glossary file {path}: {exc}") from None
    return parse_glossary(text, "json" if path.suffix.lower() == ".json" else "tsv", str(path))


def merge(base: Iterable[tuple[str, str]], override: Iterable[tuple[str, str]]) -> Entries:
    """`base` with `override`'s entries replacing those of the same term (any case) and added after."""
    merged = {term.casefold(): (term, translation) for term, translation in base}
    merged.update({term.casefold(): (term, translation) for term, translation in override})
    return tuple(merged.values())


def stream_entries(glossary: Mapping[str, Iterable[GlossaryEntry]] | None, target: str) -> Entries:
    """A stream's config.glossary entries for `target` as (term, translation) pairs."""
    if not glossary:
        return ()
    return tuple((entry.source, entry.target) for entry in glossary.get(target, ()))


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
