"""Muxer: the delay line that paces the output at real-time speed and puts audio and video on one timeline.

- Output timestamps: video dts = media ms + SHIFT_MS; audio frame pts = (audio offset + SHIFT) in samples + the
  sample counter. The same constant shift keeps the AAC encoder's priming packet (pts - 1024 samples) positive
  (pitfall 4) without moving audio against video.
- Per language one AAC encoder (`publisher.AacEncoder`) fed 1024-sample frames rendered just before they are written
  (pitfall 6): the input's audio where no dub plays; where one does, the background (`background.py`: ducked
  original or the separated bed) plus the dub, placed by the dub track (`dubtrack.py`). Rendering at write time lets
  a late dub start up to the last moment.
- Every item is written at `base + media time` (wall clock), `base` chosen so that each item waits `delay_s` after it
  arrived; input that comes in later than half the delay moves `base` (the output pauses rather than bursts).
- A phrase whose dub has not come by the last moment it could start keeps the original voice (fallback `late`). The
  output never waits for STS.
- A dub that comes in chunks (`add_chunk`): its first chunk decides the phrase as a whole dub would (placed, or
  dropped as too late) and the dub starts on it; the later chunks extend it on the dub track (`DubTrack.extend`,
  counted in `language_dub_chunks_total{outcome}`); its final answer (`resolve`) places nothing again.
- Several target languages: one delay line, one clock and the input's audio kept once; one `Lane` per language with
  its own dub track, undecided phrases and counts (`Lane`, built from the stream's plan; every call names its
  language). Each AAC frame is rendered per lane (original + background + that language's dubs) and the same frame
  object handed to each of the lane's outputs (RTMP `out`, `out/<lang>`, each with a copy of every video packet) and
  to the presentation (HLS: the video once, the original audio and every lane's audio): the language's one encoder
  encodes it at the first of them, the others mux the same packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

from livedub.deadline import PLACE_MARGIN_S, Deadline
from livedub.media.metrics import METRICS, WorkerMetrics
from livedub.media.outputs.publisher import AAC_FRAME, Publisher
from livedub.media.pipeline.background import Background, DuckedBackground, FloatPcm
from livedub.media.pipeline.dubtrack import DubClip, DubTrack, PlacedDub
from livedub.media.pipeline.ingest import AudioChunk, StreamLayout, VideoPacket
from livedub.media.pipeline.pcm_buffer import PcmBuffer
from livedub.media.types import AudioSegment, Pcm

log = logging.getLogger(__name__)

SHIFT_MS = 100  # > one AAC frame of priming at any rate >= 11 kHz; integer samples at 16/32/44.1/48 kHz
QUANTUM_S = 0.04  # write what is due within this much in one go (fewer wake-ups; players buffer far more)
BEHIND_RATIO = 0.9  # share of speech dubbed under which the STS counts as not keeping up


@dataclass(frozen=True)
class OutputTimeline:
    """Timestamp math of the output (pure; unit-tested)."""

    sample_rate: int
    audio_offset_ms: int  # media time of audio sample 0
    shift_ms: int = SHIFT_MS

    def video_ts(self, media_ms: int) -> int:
        return media_ms + self.shift_ms

    def audio_pts(self, sample: int) -> int:
        """Output pts (1/sample_rate) of audio sample `sample`."""
        return sample + round((self.audio_offset_ms + self.shift_ms) * self.sample_rate / 1000)

    def audio_media_s(self, sample: int) -> float:
        return self.audio_offset_ms / 1000 + sample / self.sample_rate

    def audio_out_ms(self, sample: int) -> float:
        return 1000 * self.audio_pts(sample) / self.sample_rate

    def frames(self, first_sample: int, samples: int, frame: int = AAC_FRAME) -> list[tuple[int, int]]:
        """(start, length) of the encoder frames covering [first_sample, first_sample + samples)."""
        out = []
        pos = first_sample
        end = first_sample + samples
        while pos < end:
            n = min(frame, end - pos)
            out.append((pos, n))
            pos += n
        return out


@dataclass
class MuxStats:
    video_packets: int = 0
    audio_frames: int = 0
    phrases: int = 0  # phrases with speech whose audio is decided
    dubbed: int = 0
    fallbacks: int = 0  # phrases with speech that kept the original voice (any reason)
    dropped: int = 0  # of those: the dub came back but could not start within the late bound
    caught_up: int = 0  # dubs sped up to get back on schedule
    rebases: int = 0
    speech_s: float = 0.0
    dubbed_speech_s: float = 0.0
    schedule_lag_s: float = 0.0  # how late the last placed dub started against its place
    last_av_sync_delta_ms: float | None = None
    output_lag_s: float = 0.0
    written_media_s: float = 0.0
    sync_deltas_ms: list[float] = field(default_factory=list)
    recent: deque[tuple[float, float, bool]] = field(default_factory=lambda: deque(maxlen=1024))

    @property
    def speech_dubbed_ratio(self) -> float | None:
        return self.dubbed_speech_s / self.speech_s if self.speech_s else None

    def recent_dubbed_ratio(self, window_s: float = 60.0) -> float | None:
        """Share of speech dubbed among phrases that played in the last `window_s` of output media time."""
        if not self.recent:
            return None
        horizon = self.recent[-1][0] - window_s
        total = sum(s for t, s, _ in self.recent if t >= horizon)
        dubbed = sum(s for t, s, d in self.recent if t >= horizon and d)
        return dubbed / total if total else None


@dataclass
class Lane:
    """One target language's output: its dub track, phrases whose dub is undecided, counts, and where it goes."""

    language: str
    track: DubTrack
    outputs: list[Publisher]  # RTMP publishers of this language (each gets every video packet and audio frame)
    stats: MuxStats = field(default_factory=MuxStats)
    pending: dict[int, AudioSegment] = field(default_factory=dict)
    warned_at_s: float = float("-inf")  # output media time of the last "not keeping up" warning


@dataclass(frozen=True)
class Decision:
    """What a phrase plays in one language: its placed dub, or the original voice and why."""

    language: str
    segment: AudioSegment
    placed: PlacedDub | None
    reason: str  # "dubbed", or the fallback reason (late, dropped, timeout, failed, ...)


class Presentation(Protocol):
    """A multi-language output written alongside the lanes (`hls.HlsPresentation`): video once, audio per language."""

    def write_video(self, packet: av.Packet, dts_ms: int, pts_ms: int) -> None: ...

    def write_audio(self, language: str, frame: av.AudioFrame) -> None: ...

    def add_cue(self, language: str, start_s: float, end_s: float, text: str) -> None: ...

    def close(self) -> None: ...


def copy_packet(packet: av.Packet) -> av.Packet:
    """A packet with the same data and flags: `mux()` takes the data of the packet it writes."""
    copy = av.Packet(bytes(packet))
    copy.is_keyframe = packet.is_keyframe
    if packet.time_base is not None:
        copy.time_base = packet.time_base
    if packet.duration is not None:
        copy.duration = packet.duration
    return copy


def _earliest_start(lane: Lane, frame: int) -> int:
    """The first output sample a dub can start at while `frame` (its first sample) is being written: after that frame
    and the fade before the dub."""
    return frame + AAC_FRAME + lane.track.lead_samples()


def _last_frame(lane: Lane, wanted_start: int) -> int:
    """The last `next_frame` at which a dub wanted at `wanted_start` can still be placed (the dub track's rule)."""
    return lane.track.latest_start(wanted_start) - AAC_FRAME - lane.track.lead_samples()


class PacedMuxer:
    """Receives video packets, the input's audio, phrases and their dubs in any order; renders the audio (background
    + dub track) and writes both, paced by the delay line, through a Publisher."""

    def __init__(
        self,
        stream_id: str,
        layout: StreamLayout,
        delay_s: float,
        metrics: WorkerMetrics = METRICS,
        clock: Callable[[], float] = time.monotonic,
        *,
        lanes: Sequence[Lane],
        background: Background | None = None,
        presentation: Presentation | None = None,
        original_language: str = "",
        on_decided: Callable[[Decision], None] | None = None,
    ) -> None:
        """`lanes`: one per target language, in the stream's order (the first is the one on `out`)."""
        if not lanes:
            raise ValueError("a muxer needs at least one lane (target language)")
        self.stream_id = stream_id
        self.layout = layout
        self.delay_s = delay_s
        self.metrics = metrics
        self.clock = clock
        self.timeline = OutputTimeline(layout.sample_rate, layout.audio_offset_ms)
        self.lanes: list[Lane] = list(lanes)
        first = self.lanes[0]
        self.presentation = presentation
        self.original_language = original_language
        self.on_decided = on_decided
        outputs = [out for lane in self.lanes for out in lane.outputs]
        self.has_audio = layout.audio_channels > 0 and (
            presentation is not None or any(out.audio is not None for out in outputs)
        )
        self.has_video = layout.video is not None and (
            presentation is not None or any(out.video is not None for out in outputs)
        )
        self.channels = max(1, layout.audio_channels)
        self.background: Background = background or DuckedBackground()
        self.video: deque[VideoPacket] = deque()
        self.original = PcmBuffer(self.channels)
        self.phrase_starts: deque[int] = deque()  # start samples not yet rendered (A/V sync is measured there)
        self.anchors: deque[tuple[int, float]] = deque(maxlen=4096)  # (sample, source_ms)
        self.next_frame = 0  # sample position of the next encoder frame
        self.base: float | None = None
        self.latest_input_s = 0.0
        self.finished = False
        self.stats = first.stats  # the first lane's counts, and the stream's (video, frames, sync, lag)
        self._waiter: asyncio.Future[None] | None = None
        self._sleeping_until: float | None = None  # media time the writer waits for (None: for input)

    def lane(self, language: str) -> Lane | None:
        """The lane of `language` (None: not a language of this stream)."""
        return next((lane for lane in self.lanes if lane.language == language), None)

    # ---- input side ------------------------------------------------------------------------------------------
    def _arrived(self, arrival: float, media_s: float) -> None:
        self.latest_input_s = max(self.latest_input_s, media_s)
        due = arrival + self.delay_s - media_s
        base = self.base
        if self.base is None or (due < self.base and not self.stats.video_packets and not self.stats.audio_frames):
            # Until the first write, the earliest (arrival - media time) wins: packets read in a burst (the input's
            # probe, a publisher's start) arrived later than real time would have them.
            self.base = due
        elif arrival + self.delay_s / 2 > self.base + media_s:
            log.warning("stream %s: input %.2f s late; the delay line restarts", self.stream_id, due - self.base)
            self.base = due
            self.stats.rebases += 1
        self._poke(media_s if base == self.base else None)

    def _poke(self, media_s: float | None) -> None:
        """Wake the writer if it waits for input, or if something is due before the time it sleeps until."""
        if media_s is None or self._sleeping_until is None or media_s < self._sleeping_until:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep(self, seconds: float | None) -> None:
        """For `seconds` (None: until woken) or until _wake(); one future and at most one timer, no task."""
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(seconds, self._wake) if seconds is not None else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def add_video(self, item: VideoPacket) -> None:
        if not self.has_video:
            return
        self.video.append(item)
        self._arrived(item.arrival, item.media_dts_ms / 1000)

    def add_audio(self, chunk: AudioChunk) -> None:
        """The input's audio: what plays where no dub does, and what the background under a dub is made of."""
        self.anchors.append((chunk.start_sample, chunk.source_ms))
        self.original.append(chunk.start_sample, chunk.pcm)
        self.background.feed(chunk.start_sample, chunk.pcm)
        end = self.timeline.audio_media_s(chunk.start_sample + chunk.pcm.shape[0])
        self._arrived(chunk.arrival, end)

    def add_phrase(self, segment: AudioSegment, wants_dub: bool = True) -> None:
        """A phrase was cut. One sent to STS waits for its dubs (or for its time to pass), in every language; one
        without speech keeps the original audio and counts for nothing."""
        self.phrase_starts.append(segment.start_sample)
        if wants_dub:
            for lane in self.lanes:
                lane.pending[segment.sequence_number] = segment

    def resolve(
        self, sequence_number: int, clip: DubClip | None, reason: str | None = None, *, language: str
    ) -> PlacedDub | None:
        """A phrase's dub in `language` came back (`clip`), or will not (`reason`). Placed
        on that language's dub track if it still can be; the placed dub is returned. A phrase whose dub came in
        chunks was decided by its first chunk: its final answer only ends the dub's growth (nothing placed again)."""
        lane = self.lane(language)
        if lane is not None:
            lane.track.end_growth(sequence_number)
        segment = lane.pending.get(sequence_number) if lane is not None else None
        if lane is None or segment is None:
            return None  # decided already: its time passed, or its chunks play (or not a language of this stream)
        if clip is None:
            if reason == "no_speech":  # STS heard no words (music, noise): nothing to dub, nothing to count
                del lane.pending[sequence_number]
                self._notify(Decision(lane.language, segment, None, "no_speech"))
            else:
                self._decide(lane, segment, None, reason or "failed")
            return None
        return self._place_first(lane, segment, clip, grows=False)

    def add_chunk(
        self, sequence_number: int, clip: DubClip | None, language: str, final: bool = False
    ) -> tuple[int, int] | None:
        """A chunk of a phrase's dub in `language` came (`clip`: its sound, None when silent). The first decides the
        phrase as `resolve()` does a whole dub (placed if it can still start in time, else dropped); the later
        ones extend it (`DubTrack.extend`). The output samples [start, end) where the chunk plays, or None."""
        lane = self.lane(language)
        if lane is None or clip is None:
            return None
        labels = {"stream_id": self.stream_id, "language": lane.language}
        segment = lane.pending.get(sequence_number)
        span: tuple[int, int] | None = None
        if segment is not None:
            placed = self._place_first(lane, segment, clip, grows=not final)
            span = (placed.start, placed.end) if placed is not None else None
            outcome = "started" if placed is not None else "dropped"
        else:
            free = self.next_frame + AAC_FRAME  # the first sample not rendered (the frame being written: margin)
            piece = lane.track.extend(sequence_number, clip.audio, clip.wanted_start, free)
            span = (piece.start, piece.end) if piece is not None else None
            outcome = piece.outcome if piece is not None else "dropped"
            if piece is None and sequence_number in lane.track.growing:
                log.info(
                    "stream %s: a chunk of the %s dub of phrase %d came too late for its place: left out",
                    self.stream_id, lane.language or "", sequence_number,
                )  # fmt: skip
        if final:
            lane.track.end_growth(sequence_number)
        self.metrics.language_dub_chunks.labels(**labels, outcome=outcome).inc()
        return span

    def growing(self, sequence_number: int, language: str) -> bool:
        """Whether the phrase's dub in `language` started on a chunk and may still grow."""
        lane = self.lane(language)
        return lane is not None and sequence_number in lane.track.growing

    def _place_first(self, lane: Lane, segment: AudioSegment, clip: DubClip, grows: bool) -> PlacedDub | None:
        """Place a phrase's dub (or its first chunk) and decide the phrase: dubbed, or dropped as too late."""
        placed = lane.track.place(clip, earliest=_earliest_start(lane, self.next_frame), grows=grows)
        if placed is None:
            lane.stats.dropped += 1
            log.info(
                "stream %s: %s dub of phrase %d came too late to start within the bound: original voice",
                self.stream_id, lane.language or "the", segment.sequence_number,
            )  # fmt: skip
        self._decide(lane, segment, placed, "dropped")
        return placed

    def _notify(self, decision: Decision) -> None:
        if self.on_decided is None:
            return
        try:
            self.on_decided(decision)
        except Exception:  # captions are a side output: never let them stop the stream
            log.exception("stream %s: recording a phrase decision failed", self.stream_id)

    def _decide(self, lane: Lane, segment: AudioSegment, placed: PlacedDub | None, reason: str) -> None:
        del lane.pending[segment.sequence_number]
        stats = lane.stats
        speech_s = segment.speech_s
        stats.phrases += 1
        stats.speech_s += speech_s
        labels = {"stream_id": self.stream_id, "language": lane.language}
        if placed is not None:
            stats.dubbed += 1
            stats.dubbed_speech_s += speech_s
            stats.schedule_lag_s = placed.late_samples / self.timeline.sample_rate
            stats.caught_up += placed.speed > 1.0
            self.metrics.language_schedule_lag_seconds.labels(**labels).set(stats.schedule_lag_s)
        else:
            stats.fallbacks += 1
            self.metrics.language_fallbacks.labels(**labels, reason=reason).inc()
        outcome = "dubbed" if placed is not None else "original"
        self.metrics.language_speech_seconds.labels(**labels, outcome=outcome).inc(speech_s)
        stats.recent.append((self.timeline.audio_media_s(segment.start_sample), speech_s, placed is not None))
        ratio = stats.recent_dubbed_ratio()
        if ratio is not None:
            self.metrics.language_speech_dubbed_ratio.labels(**labels).set(ratio)
        if lane is self.lanes[0]:  # the unlabelled metrics describe `out` (the first target), as they always did
            self._count_first_lane(placed, reason, outcome, speech_s, ratio)
        if ratio is not None:
            self._warn_if_behind(lane, ratio)
        self._notify(Decision(lane.language, segment, placed, "dubbed" if placed is not None else reason))

    def _count_first_lane(
        self, placed: PlacedDub | None, reason: str, outcome: str, speech_s: float, ratio: float | None
    ) -> None:
        if placed is not None:
            self.metrics.dub_schedule_lag_seconds.labels(stream_id=self.stream_id).set(self.stats.schedule_lag_s)
        else:
            self.metrics.fallbacks.labels(stream_id=self.stream_id, reason=reason).inc()
        self.metrics.speech_seconds.labels(stream_id=self.stream_id, outcome=outcome).inc(speech_s)
        if ratio is not None:
            self.metrics.speech_dubbed_ratio.labels(stream_id=self.stream_id).set(ratio)

    def _warn_if_behind(self, lane: Lane, ratio: float) -> None:
        """Say it clearly (at most every 30 s of output) when the STS does not keep up with the speech."""
        stats = lane.stats
        now_s = stats.recent[-1][0]
        if ratio >= BEHIND_RATIO or stats.phrases < 3 or now_s - lane.warned_at_s < 30.0:
            return
        lane.warned_at_s = now_s
        log.warning(
            "stream %s: the STS does not keep up%s: %.0f %% of the speech dubbed over the last minute, %d dubs dropped,"
            " the last dub started %.1f s late (raise OUTPUT_DELAY_MS, add STS capacity, or use the fast profile)",
            self.stream_id, f" in {lane.language}" if lane.language else "", 100 * ratio, stats.dropped,
            stats.schedule_lag_s,
        )  # fmt: skip

    def finish(self) -> None:
        self.finished = True
        self.background.flush()
        self._wake()

    # ---- output side -----------------------------------------------------------------------------------------
    def deadline(self, segment: AudioSegment) -> Deadline:
        """The last moment (on `clock`) a dub of `segment` can be back and still be placed in some language, less the
        time to place it; no deadline before the delay line has started."""
        if self.base is None:
            return Deadline(None, self.clock)
        last_frame = max(_last_frame(lane, segment.start_sample) for lane in self.lanes)
        last_frame -= last_frame % AAC_FRAME  # frames start on a grid: the one being written when it is too late
        return Deadline(self.base + self.timeline.audio_media_s(last_frame), self.clock).earlier(PLACE_MARGIN_S)

    def _sync_delta_ms(self, sample: int) -> float | None:
        """Audio output time of `sample` minus the output time the input's timestamps give the same instant."""
        anchor = None
        for start, source_ms in reversed(self.anchors):
            if start <= sample:
                anchor = (start, source_ms)
                break
        if anchor is None:
            return None
        source_ms = anchor[1] + 1000 * (sample - anchor[0]) / self.timeline.sample_rate
        return self.timeline.audio_out_ms(sample) - (source_ms + self.timeline.shift_ms)

    def _measure_sync(self, frame_end: int) -> None:
        while self.phrase_starts and self.phrase_starts[0] < frame_end:
            delta = self._sync_delta_ms(self.phrase_starts.popleft())
            if delta is not None:
                self.stats.last_av_sync_delta_ms = delta
                self.stats.sync_deltas_ms.append(delta)
                self.metrics.av_sync_delta_ms.labels(stream_id=self.stream_id).set(delta)
                self.metrics.av_sync_delta_abs_ms.labels(stream_id=self.stream_id).observe(abs(delta))

    def _expire(self, frame_end: int) -> None:
        """Phrases whose dub cannot start once the frame ending at `frame_end` is written keep the original voice."""
        for lane in self.lanes:
            for segment in [s for s in lane.pending.values() if _last_frame(lane, s.start_sample) < frame_end]:
                log.info(
                    "stream %s: phrase %d due before its %s dub came back: original voice (STS behind?)",
                    self.stream_id, segment.sequence_number, lane.language or "",
                )  # fmt: skip
                self._decide(lane, segment, None, "late")

    def _render(self, start: int, n: int, original: Pcm, track: DubTrack, under: list[FloatPcm]) -> Pcm:
        """One language's audio for samples [start, start + n): the original, or background + dubs where dubs play.
        `under` caches the background (the same for every language) once one language needs it."""
        dub, weight = track.render(start, n)
        if not weight.any():
            return original
        if not under:
            source = original.astype(np.float32) / 32768.0
            under += [source, self.background.under_dub(start, source)]
        source, bed = under
        w = weight[:, None]
        mixed = source * (1.0 - w) + bed * w + dub[:, None]
        return np.clip(np.rint(mixed * 32768.0), -32768, 32767).astype(np.int16)

    def _frame(self, pcm: Pcm, start: int) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm).reshape(1, -1), format="s16", layout="mono" if self.channels == 1 else "stereo"
        )
        frame.sample_rate = self.timeline.sample_rate
        frame.pts = self.timeline.audio_pts(start)
        frame.time_base = Fraction(1, self.timeline.sample_rate)
        return frame

    def _emit_audio_frame(self, n: int) -> None:
        start = self.next_frame
        self._expire(start + n)
        self._measure_sync(start + n)
        original = self.original.read(start, n)
        under: list[FloatPcm] = []
        for lane in self.lanes:
            frame = self._frame(self._render(start, n, original, lane.track, under), start)
            for out in lane.outputs:
                if out.audio is not None:
                    out.write_audio(frame)
            self._present_audio(lane.language, frame)
        if self.original_language:
            self._present_audio(self.original_language, self._frame(original, start))
        self.next_frame += n
        self.original.discard_before(self.next_frame)
        for lane in self.lanes:
            lane.track.forget_before(self.next_frame)
        self.stats.audio_frames += 1
        self.metrics.audio_frames_out.labels(stream_id=self.stream_id).inc()
        self.stats.written_media_s = max(self.stats.written_media_s, self.timeline.audio_media_s(self.next_frame))

    def _present_audio(self, language: str, frame: av.AudioFrame) -> None:
        self._present(lambda p: p.write_audio(language, frame))

    def _present(self, write: Callable[[Presentation], None]) -> None:
        """Write to the presentation; a failing one is dropped (the RTMP outputs go on)."""
        if self.presentation is None:
            return
        try:
            write(self.presentation)
        except Exception as exc:
            log.error("stream %s: the HLS presentation failed (%s); RTMP outputs go on without it", self.stream_id, exc)
            self.metrics.errors.labels(stream_id=self.stream_id, type="hls_failed").inc()
            presentation, self.presentation = self.presentation, None
            with contextlib.suppress(Exception):
                presentation.close()

    def _emit_video(self) -> None:
        item = self.video.popleft()
        dts = self.timeline.video_ts(item.media_dts_ms)
        outputs = [out for lane in self.lanes for out in lane.outputs if out.video is not None]
        self._present(lambda p: p.write_video(item.packet, dts, dts + item.composition_ms))  # copies inside
        for i, out in enumerate(outputs):
            # mux() takes the packet's data: every output but the last writes a copy
            out.write_video(item.packet if i == len(outputs) - 1 else copy_packet(item.packet), dts,
                            dts + item.composition_ms)  # fmt: skip
        self.stats.video_packets += 1
        self.metrics.video_packets.labels(stream_id=self.stream_id).inc()
        self.stats.written_media_s = max(self.stats.written_media_s, item.media_dts_ms / 1000)

    def _audio_ready(self) -> bool:
        return self.has_audio and self.original.end - self.next_frame >= AAC_FRAME

    def step(self, now: float) -> float | None:
        """Write everything due at `now`; return the media time of the next due item (None: nothing pending)."""
        if self.base is None:
            return None
        out_t = now - self.base
        while True:
            audio_t = self.timeline.audio_media_s(self.next_frame) if self._audio_ready() else None
            video_t = self.video[0].media_dts_ms / 1000 if self.video else None
            candidates = [t for t in (video_t, audio_t) if t is not None]
            if not candidates or min(candidates) > out_t:
                break
            if video_t is not None and (audio_t is None or video_t <= audio_t):
                self._emit_video()
            else:
                self._emit_audio_frame(AAC_FRAME)
        self.stats.output_lag_s = max(0.0, self.latest_input_s - self.stats.written_media_s)
        self.metrics.output_lag_seconds.labels(stream_id=self.stream_id).set(self.stats.output_lag_s)
        pending = []
        if self.video:
            pending.append(self.video[0].media_dts_ms / 1000)
        if self._audio_ready():
            pending.append(self.timeline.audio_media_s(self.next_frame))
        return min(pending) if pending else None

    def sealed(self, sequence_number: int, language: str | None = None) -> bool:
        """Whether the phrase's audio is already decided (a dub for it would be too late or is placed), in
        `language`, or (None) in every language."""
        lanes = self.lanes if language is None else [lane for lane in self.lanes if lane.language == language]
        return all(sequence_number not in lane.pending for lane in lanes)

    def done(self) -> bool:
        return self.finished and not self.video and not self._audio_ready()

    async def run(self) -> None:
        """Write until finish() was called and everything buffered is out; then flush and close the output."""
        try:
            while not self.done():
                next_t = self.step(self.clock() + QUANTUM_S)
                if self.done():
                    break
                self._sleeping_until = next_t
                timeout = None if next_t is None or self.base is None else max(0.0, self.base + next_t - self.clock())
                if timeout == 0.0:
                    continue
                await self._sleep(timeout)
            self.close_out()
        finally:
            self.close_outputs()

    def close_outputs(self) -> None:
        """Flush and close every output; one that fails to close does not keep the others open."""
        errors = []
        for out in [out for lane in self.lanes for out in lane.outputs]:
            try:
                out.close()
            except Exception as exc:
                errors.append(exc)
        if self.presentation is not None:
            try:
                self.presentation.close()
            except Exception as exc:
                log.warning("stream %s: closing the HLS presentation: %s", self.stream_id, exc)
        if errors:
            raise errors[0]

    def close_out(self) -> None:
        """The final partial audio frame, and the phrases whose dubs never came."""
        if self.has_audio and self.original.end > self.next_frame:
            self._emit_audio_frame(self.original.end - self.next_frame)
        for lane in self.lanes:
            for segment in list(lane.pending.values()):
                self._decide(lane, segment, None, "late")
