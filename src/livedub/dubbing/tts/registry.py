"""What each speech synthesiser can do, declared by the backend (in the spirit of livekit-agents' TTSCapabilities).

The engine reads `speaking_rate` to decide whether to ask for a rate or to time-stretch only; `languages` says
which languages a backend can speak (None: every language of the table, through its espeak-ng IPA).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TTSCapabilities:
    languages: frozenset[str] | None  # None: any language in livedub.languages (spoken from its IPA)
    speaking_rate: bool  # `synthesize(..., speed=)` changes the rate natively (no time-stretch needed)
    streaming: bool = False  # audio chunks before the whole text is synthesised (none of ours do)

    def speaks(self, language: str) -> bool:
        return self.languages is None or language in self.languages


# The backends livedub can build (livedub.dubbing.models builds them); a new one is one entry here and a builder.
TTS_BACKENDS = ("piper", "kokoro", "pico", "espeak-ng")
