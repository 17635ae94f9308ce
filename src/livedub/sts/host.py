"""The processor the STS serves with: built (or given), warmed up in the inference pool, and its features."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from livedub.sts.features import NO_FEATURES, ProcessorFeatures
from livedub.sts.metrics import StsMetrics
from livedub.sts.processor import FragmentProcessor
from livedub.sts.scheduler import DeadlineRunner

log = logging.getLogger(__name__)


class ProcessorHost:
    """Loads the models at start (so /health answers 503 meanwhile); `stream:init` waits until the processor is
    built, fragment jobs until its warm-up is over (successfully or not)."""

    def __init__(
        self,
        processor: FragmentProcessor | None,
        factory: Callable[[], FragmentProcessor] | None,
        runner: DeadlineRunner,
        metrics: StsMetrics,
    ) -> None:
        if (processor is None) == (factory is None):
            raise ValueError("give exactly one of processor and processor_factory")
        self.processor = processor
        self.features = NO_FEATURES if processor is None else ProcessorFeatures.of(processor)
        self._factory = factory
        self._runner = runner
        self._metrics = metrics
        self.ready = False
        self.startup_error: str | None = None
        self.built = asyncio.Event()
        # A threading.Event: fragment jobs wait on it in the pool.
        self.settled = threading.Event()

    async def load_and_warm_up(self) -> None:
        started = time.monotonic()
        try:
            if self.processor is None:
                assert self._factory is not None
                self.processor = await self._runner.run(self._factory)
                self.features = ProcessorFeatures.of(self.processor)
            self.built.set()
            await self._runner.run(self.processor.warmup)
            self.ready = True
            self._metrics.models_ready.set(1)
            log.info("models loaded and warmed up in %.1f s", time.monotonic() - started)
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {exc}"
            log.exception("model loading / warm-up failed")
        finally:
            self.built.set()  # also on failure: stream:init must not wait forever
            self.settled.set()

    def release_waiters(self) -> None:
        """At shutdown: queued fragment jobs finish (they fail) instead of hanging the pool."""
        self.settled.set()

    def served(self) -> FragmentProcessor:
        """On an inference thread: the processor once warm (waiting for it); RuntimeError if it did not load."""
        self.settled.wait()
        if self.processor is None:
            raise RuntimeError(f"the models did not load: {self.startup_error}")
        return self.processor

    def models(self) -> dict[str, Any]:
        """The processor's models, once ready ({} before)."""
        return self.processor.describe() if self.ready and self.processor is not None else {}
