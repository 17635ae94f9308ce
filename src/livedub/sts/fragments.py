"""An accepted fragment from its `fragment:ack` to one `fragment:processed` per target.

The fragment runs on the inference pool (scheduler.py) by its deadline; each target's answer is handed to the loop
as soon as it is ready and leaves in sequence order (the session's buffers). At the deadline, or when the job ends,
the targets still unanswered get the failure that ended it (replies.py builds every answer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future

from livedub.deadline import Deadline
from livedub.protocol import (
    DubChunk,
    EventName,
    FragmentAck,
    FragmentAckStatus,
    FragmentData,
    FragmentProcessed,
    StreamConfig,
)
from livedub.sts.host import ProcessorHost
from livedub.sts.outbox import Outbox
from livedub.sts.processor import answers_of
from livedub.sts.replies import Answer, Failure, reply
from livedub.sts.scheduler import DeadlineExpired, DeadlineRunner
from livedub.sts.session import StreamSession, dub_length_s, fragment_budget_s

log = logging.getLogger(__name__)

# target language -> its answer, settled on the loop
Answers = dict[str, asyncio.Future[Answer]]
Job = Future[list[FragmentProcessed]]


def _settle(answers: Answers, result: FragmentProcessed) -> None:
    """On the loop: hand a target's answer to whoever waits for it (nobody, once its time has passed)."""
    answer = answers.get(result.target_language or "")
    if answer is not None and not answer.done():
        answer.set_result(result)


class FragmentFlow:
    def __init__(self, runner: DeadlineRunner, outbox: Outbox, host: ProcessorHost) -> None:
        self.runner = runner
        self.outbox = outbox
        self.host = host

    async def run(self, session: StreamSession, fragment: FragmentData, arrived_at: float) -> None:
        """Accept and submit the fragment (without awaiting: fragments are accepted in arrival order), ack it, and
        leave its answers to a task of the session."""
        deadline = session.accept(fragment, arrived_at)
        loop = asyncio.get_running_loop()
        started = asyncio.Event()  # set (from the inference thread) when the fragment's processing starts
        answers: Answers = {t: loop.create_future() for t in session.targets}
        job = self._submit(session, fragment, deadline, answers, started)
        # The first ack is always `queued` (seed clients assert it); `processing` follows when a thread starts it.
        # It is sent before the result is awaited, so it always precedes the fragment's fragment:processed.
        queued = FragmentAck(
            fragment_id=fragment.fragment_id,
            status=FragmentAckStatus.QUEUED,
            queue_position=self.runner.queue_position(job) or 0,
        )
        await self.outbox.emit(EventName.FRAGMENT_ACK, queued.to_wire(), sid=session.sid, stream_id=session.stream_id)
        if session.closed:  # client left while the ack was sent
            job.cancel()
            return
        session.track(loop.create_task(self._process(session, fragment, job, answers, deadline, started)))
        if (backpressure := session.backpressure_after_accept()) is not None:
            wire = backpressure.to_wire()
            await self.outbox.emit(EventName.BACKPRESSURE, wire, sid=session.sid, stream_id=session.stream_id)

    def _submit(
        self,
        session: StreamSession,
        fragment: FragmentData,
        deadline: Deadline,
        answers: Answers,
        started: asyncio.Event,
    ) -> Job:
        """Submitted before any await, so the queue positions of back-to-back fragments are exact. The scheduler orders
        jobs by the deadline's instant (one monotonic clock on this side)."""
        loop = asyncio.get_running_loop()
        usual_time = self.host.features.usual_time_s
        start_by = None  # worth starting only while the usual time of such a fragment is left
        if usual_time is not None:
            start_by = deadline.earlier(usual_time(fragment.audio.duration_ms / 1000)).at
        on_chunk = None
        if session.config.dub_chunks:
            on_chunk = functools.partial(loop.call_soon_threadsafe, self._send_chunk, session, answers)
        return self.runner.submit(
            self._answer_blocking,
            fragment,
            session.config,
            deadline,
            functools.partial(loop.call_soon_threadsafe, _settle, answers),
            on_chunk,
            deadline=deadline.at,
            key=session.stream_id,
            start_by=start_by,
            on_start=lambda: loop.call_soon_threadsafe(started.set),
        )

    def _answer_blocking(
        self,
        fragment: FragmentData,
        config: StreamConfig,
        deadline: Deadline,
        deliver: Callable[[FragmentProcessed], object],
        on_chunk: Callable[[DubChunk], object] | None = None,
    ) -> list[FragmentProcessed]:
        """Runs on an inference thread; `deliver`s each target's answer as soon as it is ready. Fragments that arrive
        during warm-up wait for it here."""
        processor = self.host.served()
        if deadline.expired():
            raise DeadlineExpired("deadline passed while the models were warming up")
        results = []
        budget = deadline.with_backlog(self.runner.slack_s)  # the phrase's, and the work queued behind it
        for result in answers_of(processor, fragment, config, budget, on_chunk):
            deliver(result)
            results.append(result)
        return results

    def _send_chunk(self, session: StreamSession, answers: Answers, chunk: DubChunk) -> None:
        """On the loop: send a dub's chunk, unless its target was answered already (a chunk never follows its
        `fragment:processed`) or the client left."""
        answer = answers.get(chunk.target_language)
        if answer is None or answer.done() or session.closed:
            return
        wire = chunk.to_wire()
        emit = self.outbox.emit(EventName.FRAGMENT_CHUNK, wire, sid=session.sid, stream_id=session.stream_id)
        session.track(asyncio.ensure_future(emit))

    async def _process(
        self,
        session: StreamSession,
        fragment: FragmentData,
        job: Job,
        answers: Answers,
        deadline: Deadline,
        processing: asyncio.Event,
    ) -> None:
        """Emit each target's answer as it comes; at the deadline, or when the job ends, the targets still
        unanswered get the failure that ended it."""
        emitters = [
            asyncio.ensure_future(self._emit_answer(session, fragment, target, answer))
            for target, answer in answers.items()
        ]
        try:
            results, failure = await self._job_outcome(session, fragment, job, deadline, processing)
            for result in results:  # answers whose hand-over to the loop has not run yet
                _settle(answers, result)
            for target, answer in answers.items():
                if not answer.done():
                    answer.set_result(failure or Failure.unanswered(target))
            await asyncio.gather(*emitters)
        finally:
            for emitter in emitters:
                emitter.cancel()

    @staticmethod
    async def _emit_answer(
        session: StreamSession, fragment: FragmentData, target: str, answer: asyncio.Future[Answer]
    ) -> None:
        await session.complete(reply(fragment, await answer, target))

    async def _job_outcome(
        self, session: StreamSession, fragment: FragmentData, job: Job, deadline: Deadline, processing: asyncio.Event
    ) -> tuple[list[FragmentProcessed], Failure | None]:
        """Wait for the job: its answers, and the failure of the targets it did not answer (None when it ended
        normally)."""
        started = time.monotonic()
        try:
            # The answers are due at the deadline: a fragment still queued then is taken out of the queue, a running
            # one is left to finish on its own (its results are dropped) while a fresh thread serves the queue.
            if job.done():  # e.g. refused by the runner: its deadline had passed on arrival
                return job.result(), None
            # A dub in chunks is due by the deadline only with its first chunk; the rest as it plays.
            answer_by = deadline.later(dub_length_s(fragment, session.config) if session.config.dub_chunks else 0.0)
            async with asyncio.timeout(max(0.0, answer_by.remaining())):
                return await self._await_job(session, fragment, job, processing), None
        except DeadlineExpired as exc:
            return [], Failure.timeout(str(exc), started)
        except TimeoutError:
            if job.cancel():
                return [], Failure.timeout("deadline passed before processing started", started)
            self.runner.abandon(job)
            budget_ms = fragment_budget_s(fragment, session.config) * 1000
            return [], Failure.timeout(f"not processed within {budget_ms:.0f} ms", started)
        except Exception as exc:  # the processor should not raise; if it does, the fragment fails, not the server
            log.exception("processor raised on fragment %s", fragment.fragment_id)
            return [], Failure.crash(exc, started)

    async def _await_job(
        self, session: StreamSession, fragment: FragmentData, job: Job, processing: asyncio.Event
    ) -> list[FragmentProcessed]:
        """The job's result; on the way, the `processing` ack when a thread starts it (unless it is done already)."""
        result = asyncio.wrap_future(job)
        started = asyncio.ensure_future(processing.wait())
        try:
            await asyncio.wait({result, started}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the deadline passed: stop waiting, as `await result` would have
            result.cancel()
            raise
        finally:
            started.cancel()
        if not result.done() and processing.is_set() and not session.closed:
            ack = FragmentAck(fragment_id=fragment.fragment_id, status=FragmentAckStatus.PROCESSING)
            await self.outbox.emit(EventName.FRAGMENT_ACK, ack.to_wire(), sid=session.sid, stream_id=session.stream_id)
        return await result
