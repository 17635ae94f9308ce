"""Muxer: the delay line that paces the output at real-time speed and puts audio and video on one timeline.

- Output timestamps: video dts = media ms + SHIFT_MS; audio frame pts = (audio offset + SHIFT) in samples + the
  sample counter. The same constant shift keeps the AAC encoder's priming packet (pts - 1024 samples) positive
  (pitfall 4) without moving audio against video.
- One AAC encoder fed through one av.AudioFifo in 1024-sample frames across slot boundaries (pitfall 6).
- Every item is written at `base + media time` (wall clock), `base` chosen so that each item waits `delay_s` after it
  arrived; input that comes in later than half the delay moves `base` (the output pauses rather than bursts).
- A slot's audio is sealed shortly before its time comes: the aligned dub if it is there, otherwise the original
  audio (fallback `late`). The output never waits for STS.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from livedub.media.aligner import SlotAudio, original
from livedub.media.ingest import AudioChunk, StreamLayout, VideoPacket
from livedub.media.metrics import METRICS, WorkerMetrics
from livedub.media.publisher import AAC_FRAME, Publisher
from livedub.media.types import AudioSegment, Pcm

log = logging.getLogger(__name__)

SHIFT_MS = 100  # > one AAC frame of priming at any rate >= 11 kHz; integer samples at 16/32/44.1/48 kHz
SEAL_MARGIN_S = 0.05
HOLD_MARGIN_S = 0.5  # when the output must wait for audio, it waits this much longer (room for STS)
QUANTUM_S = 0.04  # write what is due within this much in one go (fewer wake-ups; players buffer far more)


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
class _Slot:
    segment: AudioSegment
    dub: SlotAudio | None = None


@dataclass
class MuxStats:
    video_packets: int = 0
    audio_frames: int = 0
    slots: int = 0
    dubbed: int = 0
    fallbacks: int = 0
    rebases: int = 0
    audio_starved: int = 0
    last_av_sync_delta_ms: float | None = None
    output_lag_s: float = 0.0
    written_media_s: float = 0.0
    sync_deltas_ms: list[float] = field(default_factory=list)


class PacedMuxer:
    """Receives video packets, audio slots and dubs in any order; writes them paced through a FlvPublisher."""

    def __init__(
        self,
        stream_id: str,
        layout: StreamLayout,
        publisher: Publisher,
        delay_s: float,
        metrics: WorkerMetrics = METRICS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream_id = stream_id
        self.layout = layout
        self.publisher = publisher
        self.delay_s = delay_s
        self.metrics = metrics
        self.clock = clock
        self.timeline = OutputTimeline(layout.sample_rate, layout.audio_offset_ms)
        self.has_audio = layout.audio_channels > 0 and publisher.audio is not None
        self.has_video = layout.video is not None and publisher.video is not None
        self.video: deque[VideoPacket] = deque()
        self.slots: deque[_Slot] = deque()
        self.slots_by_seq: dict[int, _Slot] = {}
        self.anchors: deque[tuple[int, float]] = deque(maxlen=4096)  # (sample, source_ms)
        self.fifo = av.AudioFifo()
        self.fed_samples = 0  # samples of sealed slots written into the FIFO
        self.next_frame = 0  # sample position of the next encoder frame
        self.base: float | None = None
        self.latest_input_s = 0.0
        self.finished = False
        self.stats = MuxStats()
        self._waiter: asyncio.Future[None] | None = None
        self._sleeping_until: float | None = None  # media time the writer waits for (None: for input)
        self._holding = False
        self.latest_audio_s = 0.0

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
        """Note where the input's timestamps put this audio (for the A/V sync metric) and its arrival."""
        self.anchors.append((chunk.start_sample, chunk.source_ms))
        end = self.timeline.audio_media_s(chunk.start_sample + chunk.pcm.shape[0])
        self.latest_audio_s = max(self.latest_audio_s, end)
        self._arrived(chunk.arrival, end)

    def add_slot(self, segment: AudioSegment) -> None:
        slot = _Slot(segment)
        self.slots.append(slot)
        self.slots_by_seq[segment.sequence_number] = slot
        if self._holding and self.base is not None:  # the output waited for this slot: leave its dub some time too
            self.base += HOLD_MARGIN_S
            self._holding = False
        self._poke(
            self.timeline.audio_media_s(segment.start_sample) - AAC_FRAME / self.timeline.sample_rate - SEAL_MARGIN_S
        )

    def resolve(self, dub: SlotAudio) -> None:
        """A dub for a slot arrived; used only if the slot is not sealed yet."""
        slot = self.slots_by_seq.get(dub.sequence_number)
        if slot is not None:
            slot.dub = dub

    def finish(self) -> None:
        self.finished = True
        self._wake()

    # ---- output side -----------------------------------------------------------------------------------------
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

    def _seal(self, slot: _Slot) -> None:
        segment = slot.segment
        if segment.start_sample != self.fed_samples:
            log.error(
                "stream %s: slot %d starts at %d, expected %d",
                self.stream_id,
                segment.sequence_number,
                segment.start_sample,
                self.fed_samples,
            )
        audio = slot.dub if slot.dub is not None else original(segment)
        self.stats.slots += 1
        if slot.dub is not None and slot.dub.dubbed:
            self.stats.dubbed += 1
        else:
            self.stats.fallbacks += 1
            if slot.dub is None:
                self.metrics.fallbacks.labels(stream_id=self.stream_id, reason="late").inc()
                log.info(
                    "stream %s: slot %d due before its dub came back: original audio (raise OUTPUT_DELAY_MS?)",
                    self.stream_id,
                    segment.sequence_number,
                )
        self._write_fifo(audio.pcm)
        self.fed_samples += segment.num_samples
        delta = self._sync_delta_ms(segment.start_sample)
        if delta is not None:
            self.stats.last_av_sync_delta_ms = delta
            self.stats.sync_deltas_ms.append(delta)
            self.metrics.av_sync_delta_ms.labels(stream_id=self.stream_id).set(delta)
            self.metrics.av_sync_delta_abs_ms.labels(stream_id=self.stream_id).observe(abs(delta))
        self.slots_by_seq.pop(segment.sequence_number, None)

    def _write_fifo(self, pcm: Pcm) -> None:
        channels = pcm.shape[1]
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1),
            format="s16",
            layout="mono" if channels == 1 else "stereo",
        )
        frame.sample_rate = self.timeline.sample_rate
        self.fifo.write(frame)

    def _emit_audio_frame(self, final: bool) -> None:
        n = min(AAC_FRAME, self.fifo.samples) if final else AAC_FRAME
        frame = self.fifo.read(n)
        if frame is None:
            return
        frame.pts = self.timeline.audio_pts(self.next_frame)
        frame.time_base = Fraction(1, self.timeline.sample_rate)
        self.next_frame += frame.samples
        self.publisher.write_audio(frame)
        self.stats.audio_frames += 1
        self.metrics.audio_frames_out.labels(stream_id=self.stream_id).inc()
        self.stats.written_media_s = max(self.stats.written_media_s, self.timeline.audio_media_s(self.next_frame))

    def _emit_video(self) -> None:
        item = self.video.popleft()
        dts = self.timeline.video_ts(item.media_dts_ms)
        self.publisher.write_video(item.packet, dts, dts + item.composition_ms)
        self.stats.video_packets += 1
        self.metrics.video_packets.labels(stream_id=self.stream_id).inc()
        self.stats.written_media_s = max(self.stats.written_media_s, item.media_dts_ms / 1000)

    def step(self, now: float) -> float | None:
        """Write everything due at `now`; return the media time of the next due item (None: nothing pending)."""
        if self.base is None:
            return None
        out_t = now - self.base
        seal_lead = AAC_FRAME / self.timeline.sample_rate + SEAL_MARGIN_S
        while self.slots and self.timeline.audio_media_s(self.slots[0].segment.start_sample) <= out_t + seal_lead:
            self._seal(self.slots.popleft())
        hold = self._audio_shortfall_s(out_t)
        if hold > 0:
            self.base += hold
            out_t -= hold
        while True:
            audio_t = self.timeline.audio_media_s(self.next_frame) if self.has_audio else None
            audio_ready = self.has_audio and self.fifo.samples >= AAC_FRAME
            video_t = self.video[0].media_dts_ms / 1000 if self.video else None
            candidates = [t for t in (video_t, audio_t if audio_ready else None) if t is not None]
            if not candidates or min(candidates) > out_t:
                break
            if video_t is not None and (not audio_ready or audio_t is None or video_t <= audio_t):
                self._emit_video()
            else:
                self._emit_audio_frame(final=False)
        self.stats.output_lag_s = max(0.0, self.latest_input_s - self.stats.written_media_s)
        self.metrics.output_lag_seconds.labels(stream_id=self.stream_id).set(self.stats.output_lag_s)
        pending = []
        if self.video:
            pending.append(self.video[0].media_dts_ms / 1000)
        if self.has_audio and self.fifo.samples >= AAC_FRAME:
            pending.append(self.timeline.audio_media_s(self.next_frame))
        if self.slots:
            pending.append(self.timeline.audio_media_s(self.slots[0].segment.start_sample) - seal_lead)
        return min(pending) if pending else None

    def _audio_shortfall_s(self, out_t: float) -> float:
        """How long to hold the output because the audio due now has arrived but is not cut into a slot yet
        (OUTPUT_DELAY_MS shorter than a segment): the delay line grows instead of video running on without audio.
        Audio that has not arrived at all (the input lost it) does not hold the video."""
        if not self.has_audio or self.finished or self.slots or self.fifo.samples >= AAC_FRAME:
            return 0.0
        audio_t = self.timeline.audio_media_s(self.next_frame)
        if audio_t > out_t or self.latest_audio_s <= audio_t:
            self._holding = False
            return 0.0
        if not self._holding:
            self._holding = True
            self.stats.audio_starved += 1
            self.stats.rebases += 1
            if self.stats.audio_starved == 1:
                log.warning(
                    "stream %s: the audio due now is not segmented yet; OUTPUT_DELAY_MS is shorter than a segment,"
                    " the output waits (the delay grows)",
                    self.stream_id,
                )
        return out_t - audio_t + 0.001  # to just before the missing audio: nothing at or after it is written

    def sealed(self, sequence_number: int) -> bool:
        """Whether the slot's audio is already decided (a dub for it would be too late)."""
        return sequence_number not in self.slots_by_seq

    def done(self) -> bool:
        return self.finished and not self.video and not self.slots and self.fifo.samples < AAC_FRAME

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
            if self.has_audio and self.fifo.samples:
                self._emit_audio_frame(final=True)
        finally:
            self.publisher.close()
