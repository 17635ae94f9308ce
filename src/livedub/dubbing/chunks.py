"""A dub spoken clause by clause as its words come: the first clause plays while the rest is still translated.

    translation (a lane thread) ──clauses──▶ queue ──▶ speak each clause ──▶ stretch ──▶ DubChunk ──▶ on_chunk
                                                        (the phrase's thread)

The translator and the voice run at once, on different cores (one model thread each), and the dub's first chunk is
out as soon as its first clause is spoken, not after the whole phrase. Chunks follow each other on the utterance's
timeline from the speech start, a short pause apart (a clause boundary is a breath), each time-stretched by the same
ratio: the one that brings the dub's predicted length to the speech span, within the caps.

Later chunks have more time than the first: each is due when the chunks before it have played (`due_after_s`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from livedub.dubbing.audio import duration_status
from livedub.dubbing.interfaces import FloatAudio
from livedub.dubbing.values import FitStatus, FittedDub, Slot

CLAUSE_PAUSE_S = 0.12  # between two chunks: a breath at the clause boundary
LAST_CLAUSE_WAIT_S = 0.03  # how long a clause waits to learn whether it is the last (the end follows it at once)
_END = object()


@dataclass(frozen=True)
class DubChunk:
    """A piece of a dub: `audio` (mono float at `sample_rate`, the utterance's) plays at `start_s` from the
    utterance start; `final` on the dub's last chunk."""

    index: int
    start_s: float
    audio: FloatAudio
    sample_rate: int
    text: str
    final: bool

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.audio) / self.sample_rate


OnChunk = Callable[[str, DubChunk], None]
"""(target language, chunk): called on the phrase's thread as soon as each chunk is spoken."""


class FirstClauseLate(Exception):
    """The translation gave no clause by the time its first one was due: it was stopped."""


def clauses_on_a_lane(
    produce: Callable[[], Iterator[str]], first_by: float | None = None, name: str = "sts-lane"
) -> Iterator[tuple[str, bool]]:
    """Run `produce` (a translation, clause by clause) on a thread of its own and yield `(clause, last)` as each
    comes, so that the caller speaks clause n while clause n + 1 is being translated. `produce` may yield "" while it
    works (a token without a clause end): it is stopped there when its first clause has not come by `first_by`
    (time.monotonic), and FirstClauseLate is raised. `last` is true on the last clause when the end follows it at
    once (it does for a translator that ends with its last clause). An exception of the producer is raised here,
    after the clauses before it."""
    items: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            for clause in produce():
                if stop.is_set():
                    return  # closing the generator stops the translator (the LLM stops generating)
                if clause:
                    items.put(clause)
        except BaseException as exc:  # handed to the consumer, raised there
            items.put(exc)
        finally:
            items.put(_END)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        timeout = None if first_by is None else max(0.0, first_by - time.monotonic())
        pending = items.get(timeout=timeout)
    except queue.Empty:
        stop.set()
        raise FirstClauseLate("no clause by the time the first was due") from None
    while pending is not _END:
        if isinstance(pending, BaseException):
            raise pending
        try:
            following: object = items.get(timeout=LAST_CLAUSE_WAIT_S)
        except queue.Empty:
            following = None  # still being written: not the last
        yield str(pending), following is _END
        pending = following if following is not None else items.get()


def assemble(chunks: list[DubChunk], slot: Slot, total_samples: int, rate: int, speed_ratio: float) -> FittedDub:
    """The whole dub from its chunks (what `fragment:processed` carries): each at its place in silence of
    `total_samples`, with the fit's figures against the speech span (`speed_ratio`: the chunks' time-stretch)."""
    audio = np.zeros(total_samples, dtype=np.float32)
    for chunk in chunks:
        start = round(chunk.start_s * rate)
        piece = chunk.audio[: max(0, total_samples - start)]
        audio[start : start + len(piece)] += piece
    speech_s = (chunks[-1].end_s - chunks[0].start_s) if chunks else 0.0
    target_s = max(slot.span_s, 1e-6)
    variance = (speech_s - target_s) / target_s * 100.0
    return FittedDub(
        audio=audio,
        sample_rate=rate,
        speech_s=speech_s,
        target_s=slot.span_s,
        speed_ratio=speed_ratio,
        variance_percent=variance,
        status=FitStatus(duration_status(variance).value),  # the one success/partial/failed rule
    )


__all__ = ["CLAUSE_PAUSE_S", "DubChunk", "FirstClauseLate", "OnChunk", "assemble", "clauses_on_a_lane"]
