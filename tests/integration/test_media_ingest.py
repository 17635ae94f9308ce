"""Ingest on damaged input (an FLV file edited tag by tag): corrupt audio is skipped, counted and its time filled;
a timestamp jump is absorbed on both streams alike; video packets all pass."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from livedub.analysis import PatternSpec, write_pattern
from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.ingest import AudioChunk, Ingest, IngestEnd, IngestItem, StreamLayout, VideoPacket

pytestmark = pytest.mark.integration

RATE = 48000


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pattern(tmp_path_factory.mktemp("ingest") / "p.flv", PatternSpec(duration_s=8.0))


def edit_tags(data: bytes, edit: Callable[[int, int, int, bytearray], None]) -> bytes:
    """Call edit(tag_type, tag_offset, body_offset, buffer) for every FLV tag."""
    buf = bytearray(data)
    pos = 9 + 4  # FLV header + PreviousTagSize0
    while pos + 11 <= len(buf):
        size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        edit(buf[pos], pos, pos + 11, buf)
        pos += 11 + size + 4
    return bytes(buf)


def read_all(path: Path) -> tuple[list[IngestItem], Ingest, WorkerMetrics]:
    metrics = WorkerMetrics(CollectorRegistry())
    ingest = Ingest("x", str(path), RATE, 5.0, 5.0, metrics)

    async def collect() -> list[IngestItem]:
        return [item async for item in ingest.items()]

    return asyncio.run(collect()), ingest, metrics


def audio_end_sample(items: list[IngestItem]) -> int:
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    return chunks[-1].start_sample + chunks[-1].pcm.shape[0]


def test_corrupt_audio_packets_are_skipped_counted_and_their_time_kept(source: Path, tmp_path: Path) -> None:
    damaged: list[int] = []

    def corrupt_every_tenth_aac(tag_type: int, _: int, body: int, buf: bytearray) -> None:
        if tag_type == 8 and buf[body + 1] == 1:  # AAC raw frame
            damaged.append(body)
            if len(damaged) % 10 == 0:
                size = int.from_bytes(buf[body - 10 : body - 7], "big")
                buf[body + 2 : body + size] = b"\xff" * (size - 2)

    bad = tmp_path / "bad.flv"
    bad.write_bytes(edit_tags(source.read_bytes(), corrupt_every_tenth_aac))
    clean_items, _, _ = read_all(source)
    items, ingest, metrics = read_all(bad)
    assert isinstance(items[0], StreamLayout) and isinstance(items[-1], IngestEnd)
    corrupt = metrics.errors.labels(stream_id="x", type="corrupt_packet")._value.get()
    assert corrupt == ingest.corrupt_packets >= len(damaged) // 10 // 2
    video = [i.packet.size for i in items if isinstance(i, VideoPacket)]
    assert video == [i.packet.size for i in clean_items if isinstance(i, VideoPacket)]
    # the skipped frames' time is filled: the audio is as long as the clean file's (within one AAC frame)
    assert abs(audio_end_sample(items) - audio_end_sample(clean_items)) <= 1024


def test_timestamp_jump_is_absorbed_on_both_streams(source: Path, tmp_path: Path) -> None:
    def jump_after_4s(_: int, tag: int, __: int, buf: bytearray) -> None:
        ts = int.from_bytes(buf[tag + 4 : tag + 7], "big") | buf[tag + 7] << 24
        if ts >= 4000:
            ts += 600_000  # the publisher's clock jumps 10 minutes ahead
            buf[tag + 4 : tag + 7] = (ts & 0xFFFFFF).to_bytes(3, "big")
            buf[tag + 7] = ts >> 24

    jumped = tmp_path / "jump.flv"
    jumped.write_bytes(edit_tags(source.read_bytes(), jump_after_4s))
    items, ingest, metrics = read_all(jumped)
    assert ingest.pts_jumps >= 1
    assert metrics.errors.labels(stream_id="x", type="pts_jump")._value.get() == ingest.pts_jumps
    dts = [i.media_dts_ms for i in items if isinstance(i, VideoPacket)]
    steps = [b - a for a, b in itertools.pairwise(dts)]
    assert max(steps) <= 80 and min(steps) >= 0  # continuous, no 10-minute hole
    # absorbed exactly: the video lands where it would without the jump (the audio is a sample clock anyway)
    clean = [i.media_dts_ms for i in read_all(source)[0] if isinstance(i, VideoPacket)]
    assert len(clean) == len(dts) and max(abs(a - b) for a, b in zip(clean, dts, strict=True)) <= 1
    # audio: no silence inserted for the jump, and the input timestamps still agree with the sample clock
    layout = items[0]
    assert isinstance(layout, StreamLayout)
    for chunk in (i for i in items if isinstance(i, AudioChunk)):
        position_ms = layout.audio_offset_ms + 1000 * chunk.start_sample / RATE
        assert abs(chunk.source_ms - position_ms) < 1.0  # the jump moved neither against the other
    assert abs(audio_end_sample(items) / RATE - 8.0) < 0.1


def corrupt_aac_burst(source: Path, tmp_path: Path, first: int, count: int) -> tuple[Path, int]:
    """A copy of `source` whose AAC frames first..first+count-1 are overwritten with garbage (a burst)."""
    frames: list[int] = []

    def burst(tag_type: int, _: int, body: int, buf: bytearray) -> None:
        if tag_type == 8 and buf[body + 1] == 1:  # AAC raw frame
            frames.append(body)
            if first <= len(frames) - 1 < first + count:
                size = int.from_bytes(buf[body - 10 : body - 7], "big")
                buf[body + 2 : body + size] = b"\xff" * (size - 2)

    bad = tmp_path / "burst.flv"
    bad.write_bytes(edit_tags(source.read_bytes(), burst))
    return bad, count


def test_a_burst_of_corrupt_audio_is_filled_and_the_audio_stays_contiguous(source: Path, tmp_path: Path) -> None:
    bad, _ = corrupt_aac_burst(source, tmp_path, first=100, count=40)  # ~0.85 s of audio from ~2.1 s on
    clean_items, _, _ = read_all(source)
    items, ingest, metrics = read_all(bad)
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    for a, b in itertools.pairwise(chunks):  # what the segmenter needs: every sample once, in order
        assert b.start_sample == a.start_sample + a.pcm.shape[0]
    assert ingest.corrupt_packets >= 20
    assert metrics.errors.labels(stream_id="x", type="audio_gap")._value.get() >= 1
    assert abs(audio_end_sample(items) - audio_end_sample(clean_items)) <= 1024
    # the burst's time is silence, the audio around it is the input's
    burst = np.concatenate([c.pcm for c in chunks if 2.3 * RATE <= c.start_sample < 2.8 * RATE])
    assert not burst.any()
