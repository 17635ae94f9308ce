"""The translators livedub can build: each registers itself here with its name, its declared capabilities (in the
spirit of livekit-agents' capabilities), its own settings and how to build it.

`livedub.dubbing.models` picks a translator per pair from the engine settings and the language table, among those
whose capabilities include the pair. A new translator is one module that ends with its `register(...)`, imported by
`livedub.dubbing.translate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livedub.dubbing.interfaces import Translator


@dataclass(frozen=True)
class TranslatorCapabilities:
    languages: frozenset[str] = frozenset()  # any pair of two different ones of these...
    pairs: frozenset[tuple[str, str]] = frozenset()  # ...or exactly these (source, target) pairs
    streaming: bool = False  # gives its translation clause by clause as it makes it (`translate_clauses`)
    # Cheap enough (milliseconds a phrase, no model to run) to stand in under deadline pressure for the main one:
    # the engine setting `fast_translator` names one of the translators that declare it.
    fast: bool = False

    def supports(self, source: str, target: str) -> bool:
        if source == target:
            return False
        return (source, target) in self.pairs or (source in self.languages and target in self.languages)


@dataclass(frozen=True)
class TranslatorSpec:
    """A registered translator: `settings` its settings class (every field defaulted), `build(settings)` one."""

    name: str
    capabilities: TranslatorCapabilities
    settings: type[Any]
    build: Callable[[Any], Translator]


_TRANSLATORS: dict[str, TranslatorSpec] = {}


def register(spec: TranslatorSpec) -> TranslatorSpec:
    """Make a translator buildable by name (a later registration of the same name replaces it: tests)."""
    _TRANSLATORS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _TRANSLATORS.pop(name, None)


def translator_spec(name: str) -> TranslatorSpec:
    """The registered translator `name`; ValueError naming those there are."""
    spec = _TRANSLATORS.get(name)
    if spec is None:
        raise ValueError(f"unknown translator {name!r} (have {', '.join(_TRANSLATORS)})")
    return spec


def translator_names() -> tuple[str, ...]:
    return tuple(_TRANSLATORS)


def fast_translator_names() -> tuple[str, ...]:
    """The registered translators that declare the fast role (`TranslatorCapabilities.fast`)."""
    return tuple(name for name, spec in _TRANSLATORS.items() if spec.capabilities.fast)


def __getattr__(name: str) -> Any:
    """`TRANSLATORS`: the names registered so far (every built-in one once `livedub.dubbing.translate` is imported)."""
    if name == "TRANSLATORS":
        return translator_names()
    raise AttributeError(name)


__all__ = [
    "TranslatorCapabilities",
    "TranslatorSpec",
    "fast_translator_names",
    "register",
    "translator_names",
    "translator_spec",
    "unregister",
]
