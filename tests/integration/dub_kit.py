"""Test tooling for a DubClient: one target's outcome of a phrase, awaited."""

from __future__ import annotations

from livedub.media.sts_link.sts_client import StsClient
from livedub.media.types import AudioSegment, DubOutcome


async def outcome_of(client: StsClient, segment: AudioSegment, language: str | None = None) -> DubOutcome:
    """The outcome of `language` (a client of one target: that one), once every target of the phrase is decided."""
    if language is None:
        [language] = client.targets  # several targets: name the one wanted
    outcomes: dict[str | None, DubOutcome] = {}
    await client.dub_targets(segment, lambda outcome: outcomes.setdefault(outcome.language, outcome))
    return outcomes[language]
