"""WorkerRunner: one stream's pipeline, ingest -> segmenter -> STS (dub_client) -> aligner -> paced muxer -> publisher.

Phrases with speech go to STS at once, each with the time by which its dub is still useful (its latest start on the
output timeline); the muxer places each dub on the dub track or keeps the original voice.

Several target languages (WORKER_TARGET_LANGUAGES): one STS session, one delay line, one dub track per language;
each language's dub is placed as soon as it comes back. Outputs: RTMP `out` (the first target) and `out/<lang>` per
target, the HLS presentation (MEDIA_HLS: original + every target, WebVTT captions) and the caption/phrase logs
(`captions.jsonl`, `phrases.jsonl`) in `<MEDIA_HLS_DIR>/<stream id>/`.

Dub chunks (an STS with `dub_chunks`): a dub comes in pieces as it is made. The first piece decides the phrase (placed
if it can still start in time, as a whole dub would be) and the dub starts playing on it; the later pieces extend it
on the dub track; a translation caption per piece where it plays. The final answer then only completes the phrase's
record (source caption, phrase log, tiers): its whole dub is not placed again.

`run()` returns when the input ends (stop() from on_publish_done, or the read timeout) and the buffered output has
been played out, or after stop(). It never raises for stream problems: they are logged, counted and end in the state
"failed". The worker calls `dub_client.start()` before the first segment and `dub_client.close()` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from livedub.dubbing.audio import time_stretch
from livedub.media.metrics import METRICS, WorkerMetrics
from livedub.media.outputs.publisher import AacEncoder, FlvPublisher, Publisher
from livedub.media.pipeline.aligner import chunk_clip, dub_clip, fallback_reason
from livedub.media.pipeline.background import make_background
from livedub.media.pipeline.dubtrack import DubTrack
from livedub.media.pipeline.ingest import AudioChunk, Ingest, IngestEnd, IngestItem, StreamLayout, VideoPacket
from livedub.media.pipeline.muxer import Lane, MuxStats, OutputTimeline, PacedMuxer, Presentation
from livedub.media.pipeline.phrase_log import PhraseRecorder
from livedub.media.pipeline.plan import StreamPlan
from livedub.media.pipeline.segmenter import Segmenter, make_segmenter
from livedub.media.settings import MediaSettings
from livedub.media.types import (
    AudioSegment,
    DubChunkAudio,
    DubClient,
    DubOutcome,
)

log = logging.getLogger(__name__)


class WorkerRunner:
    def __init__(
        self,
        plan: StreamPlan,
        settings: MediaSettings,
        dub_client: DubClient,
        metrics: WorkerMetrics = METRICS,
    ) -> None:
        """`plan`: the stream's targets, outputs and delay line, fixed for the run; `dub_client` dubs its targets."""
        self.plan = plan
        self.stream_id = plan.stream_id
        self.settings = settings
        self.dub_client = dub_client
        self.metrics = metrics
        self.input_url = settings.input_url(plan.stream_id)
        self.output_urls = self.plan.rtmp_urls()
        self.output_url = self.output_urls["out"]
        self._recorder: PhraseRecorder | None = None
        self._hls_path: str | None = None
        self.state = "starting"
        self.started_at: str | None = None
        self.end_reason: str | None = None
        self._stop_requested = False
        self._ingest: Ingest | None = None
        self._muxer: PacedMuxer | None = None
        self._segments = 0
        self._fragments = 0  # fragments sent to STS (phrases with speech)
        self._dub_tasks: set[asyncio.Task[None]] = set()
        self._inflight = asyncio.Semaphore(settings.sts_max_inflight)
        self._chunk_ends: dict[tuple[int, str], int] = {}  # per phrase and language: where its last chunk ended
        self._output_free: asyncio.Event | None = None  # set: hold the output until release_output()

    # ---- republish hand-over ---------------------------------------------------------------------------------
    def hold_output(self) -> None:
        """Read the input at once but publish the output only after release_output(): the previous worker of the
        same stream (a republish) still plays out its delay line on the same output. Call before run()."""
        self._output_free = asyncio.Event()

    def release_output(self) -> None:
        if self._output_free is not None:
            self._output_free.set()

    # ---- API ---------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask for a clean stop: stop reading, cut the last segment, play out what is buffered."""
        self._stop_requested = True
        if self._ingest is not None:
            self._ingest.stop()

    def status(self) -> dict[str, Any]:
        stats = self._muxer.stats if self._muxer else None
        return {
            "state": self.state,
            "started_at": self.started_at,
            "input_url": self.input_url,
            "output_url": self.output_url,
            "source_language": self.settings.source_language,
            "target_languages": list(self.plan.targets),
            "outputs": {
                "rtmp": dict(self.output_urls),
                "hls": self._hls_path,
                "hls_url": self._hls_url(),
                "captions": f"/v1/streams/{self.stream_id}/captions",
                "phrases": f"/v1/streams/{self.stream_id}/phrases",
            },
            "segments": self._segments,
            **_dub_figures(stats),
            "output_lag_s": round(stats.output_lag_s, 3) if stats else 0.0,
            "last_av_sync_delta_ms": (
                round(stats.last_av_sync_delta_ms, 2) if stats and stats.last_av_sync_delta_ms is not None else None
            ),
            "languages": self._language_status(),
        }

    def _hls_url(self) -> str | None:
        """The presentation's URL on this media-service (a wildcard bind address read as loopback)."""
        if self._hls_path is None:
            return None
        host = self.settings.media_host if self.settings.media_host not in {"0.0.0.0", "::", ""} else "127.0.0.1"
        return f"http://{host}:{self.settings.media_port}{self._hls_path}"

    def _language_status(self) -> dict[str, dict[str, Any]]:
        """Per target language: what its output dubbed (the top-level numbers are the first target's)."""
        lanes = {lane.language: lane for lane in self._muxer.lanes} if self._muxer else {}
        out: dict[str, dict[str, Any]] = {}
        for language in self.plan.targets:
            lane = lanes.get(language)
            stats = lane.stats if lane is not None else None
            tiers = self._recorder.tiers.shares(language) if self._recorder is not None else {}
            out[language] = {**_dub_figures(stats), "output_url": self.output_urls[language], "tiers": tiers}
        return out

    async def run(self) -> None:
        self.started_at = datetime.now(UTC).isoformat()
        self._set_state("starting")
        try:
            ok = await self._run()
        except asyncio.CancelledError:
            self._set_state("stopped")
            raise
        except Exception:
            log.exception("stream %s: worker failed", self.stream_id)
            self.metrics.errors.labels(stream_id=self.stream_id, type="worker").inc()
            ok = False
        finally:
            await self._cancel_dubs()
            with contextlib.suppress(Exception):
                await self.dub_client.close()
            if self._recorder is not None:
                with contextlib.suppress(Exception):
                    self._recorder.close()
        self._set_state("stopped" if ok else "failed")

    # ---- pipeline ----------------------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        self.metrics.set_state(self.stream_id, state)

    async def _run(self) -> bool:
        s = self.settings
        ingest = Ingest(
            self.stream_id, self.input_url, s.audio_sample_rate, s.ingest_open_timeout_s, s.ingest_read_timeout_s,
            self.metrics,
        )  # fmt: skip
        self._ingest = ingest
        if self._stop_requested:
            ingest.stop()
        items = ingest.items()
        first = await anext(items)
        if not isinstance(first, StreamLayout):
            return self._input_unusable(first)
        layout = first
        if self._output_free is not None and not self._output_free.is_set():
            # The input is read meanwhile (arrival times are kept), so nothing of the new publish is lost either.
            log.info("stream %s: waiting for the previous worker to play out its output", self.stream_id)
            await self._output_free.wait()
        encoders = self._encoders(layout)
        try:
            outputs = await asyncio.to_thread(self._open_rtmp, layout, encoders)
        except Exception as exc:
            log.error("stream %s: cannot publish the outputs: %s", self.stream_id, exc)
            self.metrics.errors.labels(stream_id=self.stream_id, type="publish_failed").inc()
            ingest.stop()
            return False
        self._warn_if_delay_is_short(layout)
        muxer = self._muxer = self._make_muxer(layout, outputs, await self._open_hls(layout, encoders))
        segmenter = make_segmenter(self.stream_id, s, layout.audio_channels) if layout.audio_channels else None
        if segmenter is not None:
            try:
                await self.dub_client.start()
            except Exception:
                log.exception("stream %s: STS client did not start; original audio until it does", self.stream_id)
        muxer_task = asyncio.create_task(muxer.run(), name=f"mux-{self.stream_id}")
        self._set_state("running")
        end = await self._pump(items, muxer, segmenter, muxer_task)
        self._set_state("draining")
        return await self._drain(end, ingest, segmenter, muxer, muxer_task)

    def _input_unusable(self, first: IngestItem) -> bool:
        """The input ended or failed before its layout was known: True when that was a requested stop."""
        reason = first.reason if isinstance(first, IngestEnd) else "unexpected"
        self.end_reason = reason
        if reason == "stopped":
            log.info("stream %s: stopped before the input was open", self.stream_id)
            return True
        log.error("stream %s: input not usable (%s)", self.stream_id, first)
        return False

    def _warn_if_delay_is_short(self, layout: StreamLayout) -> None:
        s = self.settings
        longest_ms = s.segment_duration_ms if s.segment_policy == "fixed" else max(s.segment_min_ms, s.segment_max_ms)
        if layout.audio_channels and s.output_delay_ms + s.dub_max_late_ms < longest_ms + 500:
            log.warning(
                "stream %s: OUTPUT_DELAY_MS + DUB_MAX_LATE_MS = %d ms is shorter than the longest phrase (%d ms) + STS"
                " time: phrases will keep the original voice",
                self.stream_id, s.output_delay_ms + s.dub_max_late_ms, longest_ms,
            )  # fmt: skip

    def _make_muxer(
        self, layout: StreamLayout, outputs: dict[str, list[Publisher]], presentation: Presentation | None
    ) -> PacedMuxer:
        """The delay line with one lane per target of the plan, in its order, and the recorder of its decisions."""
        s = self.settings
        rate = layout.sample_rate
        lanes = [Lane(language, self._track(rate), outputs.get(language, [])) for language in self.plan.targets]
        recorder = self._recorder = self._open_recorder(OutputTimeline(rate, layout.audio_offset_ms))
        muxer = PacedMuxer(
            self.stream_id, layout, self.plan.delay_s, self.metrics,
            background=make_background(s, rate, layout.audio_channels),
            lanes=lanes, presentation=presentation,
            original_language=s.source_language if presentation is not None and layout.audio_channels else "",
            on_decided=recorder.decided,
        )  # fmt: skip
        recorder.cue_sink = lambda *cue: self._add_cue(muxer, *cue)
        return muxer

    async def _drain(
        self,
        end: IngestEnd,
        ingest: Ingest,
        segmenter: Segmenter | None,
        muxer: PacedMuxer,
        muxer_task: asyncio.Task[None],
    ) -> bool:
        """The input ended: its last phrase goes to STS, the output plays out. Whether the stream ended well."""
        if segmenter is not None:
            for segment in segmenter.flush():
                self._submit(segment, muxer)
        muxer.finish()
        ingest.stop()
        try:
            await muxer_task
        except Exception as exc:
            log.error("stream %s: output failed: %s", self.stream_id, exc)
            self.metrics.errors.labels(stream_id=self.stream_id, type="publish_failed").inc()
            return False
        self.end_reason = end.reason
        log.info("stream %s: ended (%s); %s", self.stream_id, end.reason, self.status())
        return end.reason in {"stopped", "timeout", "eof"}

    async def _pump(
        self,
        items: AsyncIterator[IngestItem],
        muxer: PacedMuxer,
        segmenter: Segmenter | None,
        muxer_task: asyncio.Task[None],
    ) -> IngestEnd:
        async for item in items:
            if muxer_task.done():  # the output failed: stop reading
                assert self._ingest is not None
                self._ingest.stop()
            if isinstance(item, VideoPacket):
                muxer.add_video(item)
            elif isinstance(item, AudioChunk):
                muxer.add_audio(item)
                if segmenter is not None:
                    for segment in segmenter.push(item.start_sample, item.pcm):
                        self._submit(segment, muxer)
            elif isinstance(item, IngestEnd):
                return item
        return IngestEnd("eof")

    def _submit(self, segment: AudioSegment, muxer: PacedMuxer) -> None:
        self._segments += 1
        self.metrics.segments_processed.labels(stream_id=self.stream_id).inc()
        wants_dub = segment.speech_ms is None or segment.speech_ms >= self.settings.segment_min_speech_ms
        muxer.add_phrase(segment, wants_dub)
        if not wants_dub:
            return  # no speech to dub: the original plays, STS is spared
        task = asyncio.create_task(self._dub(segment, muxer), name=f"dub-{self.stream_id}-{segment.sequence_number}")
        self._dub_tasks.add(task)
        task.add_done_callback(self._dub_tasks.discard)

    async def _dub(self, segment: AudioSegment, muxer: PacedMuxer) -> None:
        async with self._inflight:
            if muxer.sealed(segment.sequence_number):
                return  # its time has passed (in every language) while waiting for a free STS slot
            # Fragments are numbered among those sent (the STS emits in sequence order and would wait on a gap),
            # with the last moment their dub can still be placed.
            fragment = replace(segment, sequence_number=self._fragments, deadline=muxer.deadline(segment))
            self._fragments += 1
            started = time.monotonic()

            def place(outcome: DubOutcome) -> None:  # each language as soon as its answer is in
                if outcome.round_trip_s is None:
                    outcome.round_trip_s = time.monotonic() - started
                self._place(segment, outcome, muxer)

            def play(chunk: DubChunkAudio) -> None:  # a piece of a dub, as soon as it is made
                self._place_chunk(segment, chunk, muxer)

            try:
                await self.dub_client.dub_targets(fragment, place, play)
            except Exception as exc:  # the client should not raise; undecided languages keep the original voice
                log.warning("stream %s: dub of phrase %d raised: %s", self.stream_id, segment.sequence_number, exc)

    def _place(self, segment: AudioSegment, outcome: DubOutcome, muxer: PacedMuxer) -> None:
        """One language's answer: captions and the phrase log learn what it said, the muxer places its dub."""
        language = outcome.language
        if language is None:  # a DubClient names the language of every outcome
            raise ValueError(f"phrase {segment.sequence_number}: an answer that names no target language")
        end = self._chunk_ends.pop((segment.sequence_number, language), None)
        if end is not None and outcome.pcm is not None and muxer.growing(segment.sequence_number, language):
            # Its chunks stopped short of the last (one was malformed): the rest of the whole dub ends it.
            rest = DubChunkAudio(segment.sequence_number, language, outcome.chunks, end, outcome.pcm[end:], final=True)
            self._place_chunk(segment, rest, muxer)
        if self._recorder is not None:
            try:
                self._recorder.answered(segment, outcome, decided=muxer.sealed(segment.sequence_number, language))
            except Exception:  # captions are a side output: the dub is placed regardless
                log.exception("stream %s: recording the answer for phrase %d failed", self.stream_id,
                              segment.sequence_number)  # fmt: skip
        muxer.resolve(segment.sequence_number, dub_clip(segment, outcome), fallback_reason(outcome), language=language)

    def _place_chunk(self, segment: AudioSegment, chunk: DubChunkAudio, muxer: PacedMuxer) -> None:
        """A piece of one language's dub: the first decides the phrase, the later ones extend its dub; each gets a
        translation caption where it plays."""
        language = chunk.language
        key = (segment.sequence_number, language)
        if chunk.final:
            self._chunk_ends.pop(key, None)
        else:
            self._chunk_ends[key] = chunk.offset_samples + len(chunk.pcm)
        if self._recorder is not None:
            self._recorder.chunked(segment, language)  # before the muxer decides: the record waits for the answer
        span = muxer.add_chunk(segment.sequence_number, chunk_clip(segment, chunk), language, chunk.final)
        if span is not None and self._recorder is not None:
            try:
                self._recorder.chunk_placed(segment, language, span, chunk.text)
            except Exception:  # captions are a side output
                log.exception("stream %s: recording a chunk of phrase %d failed", self.stream_id,
                              segment.sequence_number)  # fmt: skip

    # ---- outputs -----------------------------------------------------------------------------------------------
    def _track(self, rate: int) -> DubTrack:
        s = self.settings
        return DubTrack(
            rate,
            stretch=lambda audio, speed: time_stretch(audio, rate, speed),
            max_late_s=s.dub_max_late_ms / 1000,
            max_speedup=s.dub_catch_up_max_speedup,
            fade_s=s.duck_fade_ms / 1000,
        )

    def _encoders(self, layout: StreamLayout) -> dict[str, AacEncoder]:
        """One AAC encoder per target language, shared by all of that language's outputs (none without audio)."""
        if not layout.audio_channels:
            return {}
        return {language: AacEncoder(layout.sample_rate, layout.audio_channels) for language in self.plan.targets}

    def _open_rtmp(self, layout: StreamLayout, encoders: dict[str, AacEncoder]) -> dict[str, list[Publisher]]:
        """Per language its RTMP publishers (the plan's: `out` + `out/<lang>` for the first, `out/<lang>` for the
        others), all of one language on its one encoder. All or none: a refused output fails the start (runs in a
        thread: FFmpeg connects at open)."""
        opened: list[FlvPublisher] = []
        try:
            lanes: dict[str, list[Publisher]] = {}
            for language in self.plan.targets:
                for output in self.plan.outputs_of(language):
                    opened.append(FlvPublisher(output.url, layout.video, encoders.get(language)))
                    lanes.setdefault(language, []).append(opened[-1])
            return lanes
        except Exception:
            for out in opened:
                with contextlib.suppress(Exception):
                    out.close()
            raise

    async def _open_hls(self, layout: StreamLayout, encoders: dict[str, AacEncoder]) -> Presentation | None:
        """The HLS presentation, or None (disabled, or it cannot be written: the RTMP outputs go on without it)."""
        s = self.settings
        if not self.plan.hls:
            return None
        from livedub.media.outputs.hls import HlsPresentation, renditions_for, subtitles_for

        plan = self.plan
        renditions = renditions_for(plan.source_language, plan.targets)  # "Original (English)", "Español", ...
        subtitles = subtitles_for(plan.source_language, plan.targets)  # "English", "Español", ...
        try:
            presentation = await asyncio.to_thread(
                HlsPresentation, s.stream_dir(self.stream_id), layout.video, layout.sample_rate,
                layout.audio_channels, renditions if layout.audio_channels else [], subtitles, shared_encoders=encoders,
            )  # fmt: skip
        except Exception as exc:
            log.error("stream %s: no HLS presentation: %s", self.stream_id, exc)
            self.metrics.errors.labels(stream_id=self.stream_id, type="hls_failed").inc()
            return None
        self._hls_path = f"/hls/{self.stream_id}/master.m3u8"
        return presentation

    def _open_recorder(self, timeline: OutputTimeline) -> PhraseRecorder:
        """Captions and phrase log; without a writable directory, captions go to the HLS presentation only."""
        from livedub.media.outputs.captions import CueLog

        try:
            log_file = CueLog(self.settings.stream_dir(self.stream_id))
        except OSError as exc:
            log.error("stream %s: no captions/phrases log: %s", self.stream_id, exc)
            log_file = None
        return PhraseRecorder(timeline, self.settings.source_language, log_file, tier_sink=self._count_tier)

    def _count_tier(self, language: str, translator: str, voice_tier: str, speech_s: float) -> None:
        labels = {"stream_id": self.stream_id, "language": language}
        self.metrics.language_dubbed_speech_seconds.labels(**labels, translator=translator, voice_tier=voice_tier).inc(
            speech_s
        )

    @staticmethod
    def _add_cue(muxer: PacedMuxer, language: str, start_s: float, end_s: float, text: str) -> None:
        if muxer.presentation is not None:  # none, or dropped after it failed
            muxer.presentation.add_cue(language, start_s, end_s, text)

    async def _cancel_dubs(self) -> None:
        tasks = list(self._dub_tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _dub_figures(stats: MuxStats | None) -> dict[str, Any]:
    """What an output dubbed so far, for /v1/streams."""
    return {
        "dubbed": stats.dubbed if stats else 0,
        "fallbacks": stats.fallbacks if stats else 0,
        "dubs_dropped": stats.dropped if stats else 0,
        "speech_dubbed_ratio": _rounded(stats.speech_dubbed_ratio if stats else None),
        "speech_dubbed_ratio_1m": _rounded(stats.recent_dubbed_ratio() if stats else None),
        "schedule_lag_s": round(stats.schedule_lag_s, 3) if stats else 0.0,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
