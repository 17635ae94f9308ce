"""STS_GLOSSARY_FILE: the deployment's glossary file, its terms checked as the protocol's `GlossaryEntry` is (control
characters and newlines become spaces, at most GLOSSARY_MAX_TERM_CHARS characters); at most FILE_MAX_ENTRIES
entries per direction. And a stream's `config.glossary` as the engine's (term, translation) pairs.

File formats (the extension decides):

- JSON (`.json`): `{"en-es": [{"source": "voicemail", "target": "buzón de voz"}, ...], ...}`, or per pair an object
  `{"voicemail": "buzón de voz", ...}`.
- TSV (any other extension): one entry a line, `en-es<TAB>voicemail<TAB>buzón de voz`; blank lines and lines
  starting with `#` are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from livedub.dubbing.glossary import Entries, Pair
from livedub.languages import parse_pair
from livedub.protocol import GlossaryEntry

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


def stream_entries(glossary: Mapping[str, Iterable[GlossaryEntry]] | None, target: str) -> Entries:
    """A stream's config.glossary entries for `target` as (term, translation) pairs."""
    if not glossary:
        return ()
    return tuple((entry.source, entry.target) for entry in glossary.get(target, ()))


__all__ = ["FILE_MAX_ENTRIES", "GlossaryFileError", "load_glossary_file", "parse_glossary", "stream_entries"]
