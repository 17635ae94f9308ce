"""What each translator can do, declared by the backend (in the spirit of livekit-agents' capabilities).

`livedub.dubbing.models` picks a translator per pair from the settings and the language table, among those whose
capabilities include the pair.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TranslatorCapabilities:
    languages: frozenset[str] = frozenset()  # any pair of two different ones of these...
    pairs: frozenset[tuple[str, str]] = frozenset()  # ...or exactly these (source, target) pairs
    streaming: bool = False  # partial translations before the sentence ends (none of ours do)

    def supports(self, source: str, target: str) -> bool:
        if source == target:
            return False
        return (source, target) in self.pairs or (source in self.languages and target in self.languages)


# The translators livedub can build (livedub.dubbing.models builds them); a new one is one entry here, a class
# with `capabilities` and a builder there.
TRANSLATORS = ("llm", "apertium", "deepl", "google")
