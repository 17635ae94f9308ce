"""What the STS server runs per fragment (`FragmentProcessor`), in the protocol's terms.

The engine (livedub.dubbing) knows nothing of fragments or the wire: `livedub.sts.pipeline` implements this
interface over it (and `EchoPipeline` without it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from livedub.deadline import NO_DEADLINE, Deadline
from livedub.languages import UnsupportedLanguageError
from livedub.protocol import DubChunk, FragmentData, FragmentProcessed, StreamConfig


@runtime_checkable
class FragmentProcessor(Protocol):
    """What the STS server runs per fragment. Blocking and CPU-bound: the server calls it off the event loop.

    `process` never raises for bad audio or a failing stage: it returns a `FragmentProcessed` with
    status `failed` and an `error` instead.
    """

    def check_languages(self, source: str, target: str) -> None:
        """Raise UnsupportedLanguageError if the pair cannot be served."""

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        """Dub one fragment. Work that cannot be back before `deadline` stops before its next stage and is answered
        at once with status failed, error TIMEOUT (stage `timeout`, retryable)."""
        ...

    def process_each(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: Deadline = NO_DEADLINE,
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> Iterator[FragmentProcessed]:
        """One answer per target of `config.targets`, each yielded as soon as it is ready (same rules as
        `process`); `on_chunk` takes each dub's chunks as they are made, before its answer (a processor without
        chunks sends none). A processor of one target answers it alone (`MainTargetOnly`)."""
        ...

    def warmup(self) -> None:
        """Load every model and run one tiny inference, so the first fragment is not slow."""

    def describe(self) -> dict[str, Any]:
        """Model names and status, for /health and `stream:ready` capabilities."""


class MainTargetOnly:
    """For a processor that answers the main target only: its `process_each` is its one `process` answer."""

    def process(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE
    ) -> FragmentProcessed:
        raise NotImplementedError

    def process_each(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: Deadline = NO_DEADLINE,
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> Iterator[FragmentProcessed]:
        yield self.process(fragment, config, deadline)


def answers_of(
    processor: FragmentProcessor,
    fragment: FragmentData,
    config: StreamConfig,
    deadline: Deadline = NO_DEADLINE,
    on_chunk: Callable[[DubChunk], object] | None = None,
) -> Iterator[FragmentProcessed]:
    """The processor's answers for every target, each stamped with its `target_language`; with `on_chunk`, the
    dubs' chunks as they are made (`config.dub_chunks`; a processor without chunks sends none)."""
    if on_chunk is not None:  # only for sessions that asked for chunks
        answers = processor.process_each(fragment, config, deadline, on_chunk=on_chunk)
    else:
        answers = processor.process_each(fragment, config, deadline)
    for answer in answers:
        yield (
            answer if answer.target_language else answer.model_copy(update={"target_language": config.target_language})
        )


__all__ = ["FragmentProcessor", "MainTargetOnly", "UnsupportedLanguageError", "answers_of"]
