"""StsClient with dub chunks (`fragment:chunk`): against a fake STS that answers each fragment with its dub in three
pieces (a tone each) and then the whole dub in `fragment:processed`.

The client asks for chunks only where stream:ready announces them (a seed STS never sees `dub_chunks` set), hands
each piece on in order before the outcome, and takes a malformed piece as an error without harm. Through the worker
and the muxer, the output has each tone where its chunk belongs, played once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import av
import numpy as np
import pytest
import socketio
from dub_kit import outcome_of
from media_testkit import fresh_metrics, media_settings, sample, serve_asgi

from livedub.media.pipeline.background import DuckedBackground
from livedub.media.pipeline.dubtrack import DubTrack
from livedub.media.pipeline.ingest import AudioChunk, StreamLayout
from livedub.media.pipeline.muxer import Lane, OutputTimeline, PacedMuxer
from livedub.media.pipeline.phrase_log import PhraseRecorder
from livedub.media.pipeline.plan import StreamPlan
from livedub.media.pipeline.worker import WorkerRunner
from livedub.media.sts_link.sts_client import StsClient
from livedub.media.types import AudioSegment, DubChunkAudio, DubOutcome, DubStatus
from livedub.protocol import AudioFormat, StreamReady
from livedub.protocol.codec import encode_payload
from livedub.stack import free_port

pytestmark = pytest.mark.integration

RATE = 48000
PIECE_S = 0.25
OFFSETS_MS = (100.0, 350.0, 600.0)  # contiguous pieces: 0.1..0.35, 0.35..0.6, 0.6..0.85 s of the fragment
FREQS = (500.0, 1000.0, 1500.0)
TEXTS = ("uno,", "dos,", "tres")


def piece_pcm(freq: float) -> np.ndarray:
    t = np.arange(round(PIECE_S * RATE)) / RATE
    return np.rint(8000 * np.cos(2 * np.pi * freq * t)).astype(np.int16).reshape(-1, 1)


def whole_dub(seconds: float = 1.0) -> np.ndarray:
    whole = np.zeros((round(seconds * RATE), 1), np.int16)
    for offset_ms, freq in zip(OFFSETS_MS, FREQS, strict=True):
        start = round(offset_ms * RATE / 1000)
        whole[start : start + round(PIECE_S * RATE)] = piece_pcm(freq)
    return whole


class ChunkSts:
    """A fake STS: announces `dub_chunks` (unless `seed`), answers each fragment per target with three chunks (if
    asked for them) then fragment:processed with the whole dub. `bad`: what to spoil after the first chunk
    (`invalid`: an event that does not validate; `audio`: chunk 1 whose audio does not decode)."""

    def __init__(self, *, seed: bool = False, bad: str | None = None) -> None:
        self.seed = seed
        self.bad = bad
        self.configs: list[dict[str, Any]] = []
        self.sio = socketio.AsyncServer(async_mode="asgi", max_http_buffer_size=20_000_000)
        self.app = socketio.ASGIApp(self.sio)
        self.sio.on("stream:init", self._on_init)
        self.sio.on("fragment:data", self._on_fragment)
        self.sio.on("stream:end", self._on_end)

    async def _on_end(self, sid: str, data: dict[str, Any]) -> None:
        done = {"stream_id": data["stream_id"], "total_fragments": 0, "total_duration_ms": 0}
        await self.sio.emit("stream:complete", done, to=sid)

    async def _on_init(self, sid: str, data: dict[str, Any]) -> None:
        self.configs.append(data.get("config", {}))
        capabilities = {} if self.seed else {"dub_chunks": True, "target_languages": True}
        ready = StreamReady(stream_id=data["stream_id"], session_id="chunky", max_inflight=3, capabilities=capabilities)
        await self.sio.emit("stream:ready", ready.to_wire(), to=sid)

    async def _on_fragment(self, sid: str, data: dict[str, Any]) -> None:
        config = self.configs[-1]
        ids = {key: data[key] for key in ("fragment_id", "stream_id", "sequence_number")}
        targets = [None] if self.seed else (config.get("target_languages") or [config["target_language"]])
        for target in targets:
            if config.get("dub_chunks"):
                for index, (offset_ms, freq, text) in enumerate(zip(OFFSETS_MS, FREQS, TEXTS, strict=True)):
                    payload = encode_payload(piece_pcm(freq), RATE, AudioFormat.PCM_S16LE).model_dump(mode="json")
                    chunk = {**ids, "target_language": target, "index": index, "offset_ms": offset_ms,
                             "audio": payload, "text": text, "final": index == len(FREQS) - 1}  # fmt: skip
                    if index == 1 and self.bad == "invalid":
                        await self.sio.emit("fragment:chunk", {**ids, "index": "one"}, to=sid)
                    if index == 1 and self.bad == "audio":
                        chunk["audio"] = {**payload, "data_base64": "!!!not base64"}
                    await self.sio.emit("fragment:chunk", chunk, to=sid)
                    await asyncio.sleep(0.05)  # made a clause at a time
            whole = encode_payload(whole_dub(), RATE, AudioFormat.PCM_S16LE).model_dump(mode="json")
            answer = {**ids, "status": "success", "dubbed_audio": whole, "transcript": "one, two, three",
                      "translated_text": " ".join(TEXTS), "target_language": target,
                      "metadata": {"translator": "main", "voice_tier": "usual"}}  # fmt: skip
            await self.sio.emit("fragment:processed", answer, to=sid)


def make_client(port: int, targets: str = "es", metrics: Any = None) -> StsClient:
    settings = media_settings(
        STS_SERVICE_URL=f"http://127.0.0.1:{port}", WORKER_TARGET_LANGUAGES=targets, STS_AUDIO_FORMAT="pcm_s16le",
        AUDIO_SAMPLE_RATE=RATE,
    )  # fmt: skip
    return StsClient("s1", settings, metrics or fresh_metrics(), targets=settings.targets, connect_timeout_s=5)


def segment(seq: int = 0) -> AudioSegment:
    return AudioSegment("s1", seq, 0, np.zeros((RATE, 1), np.int16), RATE, speech_ms=1000.0)


async def dub_with_chunks(client: StsClient, seg: AudioSegment) -> tuple[list[DubChunkAudio], list[DubOutcome]]:
    pieces: list[DubChunkAudio] = []
    outcomes: list[DubOutcome] = []
    await client.dub_targets(seg, outcomes.append, pieces.append)
    return pieces, outcomes


async def test_chunks_are_asked_for_and_handed_on_in_order_before_the_outcome() -> None:
    port = free_port()
    sts = ChunkSts()
    order: list[str] = []
    async with serve_asgi(sts.app, port):
        client = make_client(port, "es,fr")
        await client.start()
        try:
            assert await client.wait_ready(10)
            assert client.status()["dub_chunks"] is True
            pieces: list[DubChunkAudio] = []

            def on_chunk(piece: DubChunkAudio) -> None:
                pieces.append(piece)
                order.append(f"chunk {piece.language} {piece.index}")

            outcomes: list[DubOutcome] = []

            def on_outcome(outcome: DubOutcome) -> None:
                outcomes.append(outcome)
                order.append(f"outcome {outcome.language}")

            await asyncio.wait_for(client.dub_targets(segment(), on_outcome, on_chunk), 10)
            plain = await asyncio.wait_for(outcome_of(client, segment(1), "es"), 10)  # no on_chunk: the whole dub
        finally:
            await client.close()
    # asked without chunks first, then again with them once stream:ready announced the capability
    assert [c.get("dub_chunks") for c in sts.configs] == [False, True]
    for language in ("es", "fr"):  # each target's pieces in order, then its outcome
        mine = [event for event in order if event.endswith(language) or f" {language} " in event]
        assert mine == [*(f"chunk {language} {i}" for i in range(3)), f"outcome {language}"]
    es = [p for p in pieces if p.language == "es"]
    assert [p.offset_samples for p in es] == [round(ms * RATE / 1000) for ms in OFFSETS_MS]
    assert [p.text for p in es] == list(TEXTS) and [p.final for p in es] == [False, False, True]
    for piece, freq in zip(es, FREQS, strict=True):
        np.testing.assert_array_equal(piece.pcm, piece_pcm(freq))
    assert all(o.status is DubStatus.DUBBED and o.chunks == 3 and o.translator == "main" for o in outcomes)
    assert plain.status is DubStatus.DUBBED and plain.chunks == 0


async def test_a_seed_sts_gets_no_dub_chunks_in_its_config() -> None:
    port = free_port()
    sts = ChunkSts(seed=True)
    async with serve_asgi(sts.app, port):
        client = make_client(port)
        await client.start()
        try:
            assert await client.wait_ready(10)
            pieces, outcomes = await asyncio.wait_for(dub_with_chunks(client, segment()), 10)
        finally:
            await client.close()
    assert len(sts.configs) == 1 and not sts.configs[0].get("dub_chunks")
    assert client.status()["dub_chunks"] is False
    assert pieces == [] and [o.status for o in outcomes] == [DubStatus.DUBBED]


@pytest.mark.parametrize("bad", ["invalid", "audio"])
async def test_a_malformed_chunk_is_an_error_without_harm(bad: str) -> None:
    port = free_port()
    sts = ChunkSts(bad=bad)
    metrics = fresh_metrics()
    async with serve_asgi(sts.app, port):
        client = make_client(port, metrics=metrics)
        await client.start()
        try:
            assert await client.wait_ready(10)
            pieces, outcomes = await asyncio.wait_for(dub_with_chunks(client, segment()), 10)
            again, _ = await asyncio.wait_for(dub_with_chunks(client, segment(1)), 10)  # the session goes on
        finally:
            await client.close()
    (outcome,) = outcomes
    assert outcome.status is DubStatus.DUBBED and outcome.pcm is not None  # the whole dub still comes
    if bad == "invalid":  # an event that does not validate is left out; the pieces go on
        assert [p.index for p in pieces] == [0, 1, 2]
        assert sample(metrics, "errors_total", stream_id="s1", type="sts_invalid_event") == 2
    else:  # a piece that does not decode ends that dub's pieces (the worker takes the rest from the whole dub)
        assert [p.index for p in pieces] == [0] and outcome.chunks == 1
        assert sample(metrics, "errors_total", stream_id="s1", type="sts_bad_chunk") == 2
    assert len(again) == (3 if bad == "invalid" else 1)


class FakeOutput:
    """An RTMP publisher stand-in that keeps the audio it is given."""

    def __init__(self) -> None:
        self.video: Any = None
        self.audio: Any = object()
        self.frames: list[av.AudioFrame] = []

    def write_audio(self, frame: av.AudioFrame | None) -> int:
        if frame is not None:
            self.frames.append(frame)
        return 1

    def write_video(self, *_: Any) -> None:
        return None

    def close(self) -> None:
        return None

    def pcm(self) -> np.ndarray:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in self.frames])


@pytest.mark.parametrize("bad", [None, "audio"])
async def test_the_output_has_each_chunk_where_it_belongs_once(bad: str | None) -> None:
    port = free_port()
    sts = ChunkSts(bad=bad)
    metrics = fresh_metrics()
    cues: list[tuple[str, float, float, str]] = []
    async with serve_asgi(sts.app, port):
        client = make_client(port, metrics=metrics)
        runner = WorkerRunner(StreamPlan.for_stream("s1", client.settings), client.settings, client, metrics)
        out = FakeOutput()
        layout = StreamLayout(video=None, audio_channels=1, sample_rate=RATE, audio_offset_ms=0)
        track = DubTrack(RATE, stretch=lambda a, _s: a, fade_s=0.01, max_late_s=1.0)
        muxer = PacedMuxer("s1", layout, 2.0, metrics, background=DuckedBackground(-20),
                           lanes=[Lane("es", track, [out])])  # fmt: skip
        recorder = PhraseRecorder(OutputTimeline(RATE, 0), "en", None, lambda *cue: cues.append(cue))
        runner._recorder = recorder
        muxer.on_decided = recorder.decided
        t0 = time.monotonic()
        for start in range(0, 3 * RATE, 1024):  # 3 s of silence, as if it just arrived
            muxer.add_audio(AudioChunk(start, np.zeros((1024, 1), np.int16), 1000 * start / RATE, t0 + start / RATE))
        seg = segment()
        muxer.add_phrase(seg)
        await client.start()
        try:
            assert await client.wait_ready(10)
            await asyncio.wait_for(runner._dub(seg, muxer), 10)
        finally:
            await client.close()
        muxer.finish()
        muxer.step(t0 + 100)
        muxer.close_out()
    played = out.pcm()
    expected = np.zeros(len(played), np.int16)
    expected[:RATE] = whole_dub()[:, 0]
    np.testing.assert_array_equal(played, expected)  # every tone at its place, none twice, the rest silence
    dubbed = metrics.registry.get_sample_value
    labels = {"stream_id": "s1", "language": "es"}
    assert dubbed("media_service_worker_language_dub_chunks_total", {**labels, "outcome": "started"}) == 1
    appended = dubbed("media_service_worker_language_dub_chunks_total", {**labels, "outcome": "appended"})
    assert appended == (2 if bad is None else 1)  # with a bad chunk 1: the rest of the whole dub, once
    assert muxer.lanes[0].stats.dubbed == 1
    shift = OutputTimeline(RATE, 0).audio_out_ms(0) / 1000
    translations = [(text, round(start - shift, 3)) for language, start, _, text in cues if language == "es"]
    if bad is None:
        assert translations == [(text, ms / 1000) for text, ms in zip(TEXTS, OFFSETS_MS, strict=True)]
    else:
        assert translations == [("uno,", 0.1)]  # the rest came without its words
