"""The paced muxer with several target languages: one delay line, one dub track per language, each language's audio
on its own outputs, video copied to every output, the presentation (HLS) fed the original and every language."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import av
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.background import DuckedBackground
from livedub.media.pipeline.dubtrack import DubClip, DubTrack
from livedub.media.pipeline.ingest import AudioChunk, StreamLayout, VideoPacket
from livedub.media.pipeline.muxer import SHIFT_MS, Decision, Lane, OutputTimeline, PacedMuxer
from livedub.media.pipeline.phrase_log import PhraseRecorder, TierShares
from livedub.media.types import AudioSegment, DubOutcome, DubStatus, Pcm

pytestmark = pytest.mark.unit

RATE = 48000


class FakeOutput:
    """An RTMP publisher stand-in: records what it was given (and, like mux(), takes each video packet's data)."""

    def __init__(self) -> None:
        self.video: Any = object()
        self.audio: Any = object()
        self.packets: list[tuple[bytes, int]] = []
        self.objects: list[av.Packet] = []  # kept alive: their ids stay unique
        self.frames: list[av.AudioFrame] = []
        self.closed = False

    def write_video(self, packet: av.Packet, dts_ms: int, pts_ms: int) -> None:
        self.objects.append(packet)
        self.packets.append((bytes(packet), dts_ms))

    def write_audio(self, frame: av.AudioFrame | None) -> int:
        if frame is not None:
            self.frames.append(frame)
        return 1

    def close(self) -> None:
        self.closed = True

    def pcm(self) -> Pcm:
        return np.concatenate([f.to_ndarray().reshape(-1, 2) for f in self.frames])


class FakePresentation:
    def __init__(self) -> None:
        self.video: list[int] = []
        self.audio: dict[str, list[av.AudioFrame]] = {}
        self.cues: list[tuple[str, float, float, str]] = []
        self.closed = False

    def write_video(self, packet: av.Packet, dts_ms: int, pts_ms: int) -> None:
        self.video.append(dts_ms)

    def write_audio(self, language: str, frame: av.AudioFrame) -> None:
        self.audio.setdefault(language, []).append(frame)

    def add_cue(self, language: str, start_s: float, end_s: float, text: str) -> None:
        self.cues.append((language, start_s, end_s, text))

    def close(self) -> None:
        self.closed = True


def lane(language: str, outputs: list[FakeOutput]) -> Lane:
    track = DubTrack(RATE, stretch=lambda a, speed: a[: round(len(a) / speed)], fade_s=0.01, max_late_s=1.0)
    return Lane(language, track, list(outputs))


def make(now: list[float], presentation: FakePresentation | None = None) -> tuple[PacedMuxer, dict[str, FakeOutput]]:
    outs = {"out": FakeOutput(), "es": FakeOutput(), "fr": FakeOutput()}
    layout = StreamLayout(video=None, audio_channels=2, sample_rate=RATE, audio_offset_ms=0)
    mux = PacedMuxer(
        "s", layout, 1.0, WorkerMetrics(CollectorRegistry()), clock=lambda: now[0],
        background=DuckedBackground(-20), lanes=[lane("es", [outs["out"], outs["es"]]), lane("fr", [outs["fr"]])],
        presentation=presentation, original_language="en" if presentation is not None else "",
    )  # fmt: skip
    mux.has_video = True
    return mux, outs


def feed(mux: PacedMuxer, seconds: float, value: int = 1000) -> None:
    for ms in range(0, round(seconds * 1000), 40):
        mux.add_video(VideoPacket(av.Packet(f"v{ms}".encode()), ms, 0, ms == 0, ms / 1000))
    samples = round(seconds * RATE)
    for start in range(0, samples, 1024):
        n = min(1024, samples - start)
        mux.add_audio(AudioChunk(start, np.full((n, 2), value, np.int16), 1000 * start / RATE, (start + n) / RATE))


def speech(seq: int, start: int, n: int) -> AudioSegment:
    return AudioSegment("s", seq, start, np.full((n, 2), 1000, np.int16), RATE, speech_ms=1000 * n / RATE)


def test_each_language_dub_lands_on_its_own_outputs_only_and_video_goes_to_every_output() -> None:
    now = [0.0]
    mux, outs = make(now)
    feed(mux, 3.0)
    mux.add_phrase(speech(0, 0, RATE))
    mux.add_phrase(speech(1, RATE, RATE))
    mux.resolve(0, DubClip(0, 4800, np.full(RATE // 2, 0.25, np.float32)), language="es")
    mux.resolve(1, DubClip(1, RATE + 4800, np.full(RATE // 2, -0.25, np.float32)), language="fr")
    mux.finish()
    mux.step(10.0)
    mux.close_out()
    es, fr, first = outs["es"].pcm(), outs["fr"].pcm(), outs["out"].pcm()
    np.testing.assert_array_equal(first, es)  # `out` is the first target
    dub_es = slice(4800, 4800 + RATE // 2)
    dub_fr = slice(RATE + 4800, RATE + 4800 + RATE // 2)
    ducked = round(1000 * 10 ** (-20 / 20))
    np.testing.assert_allclose(es[dub_es], 0.25 * 32768 + ducked, atol=1)
    np.testing.assert_allclose(fr[dub_fr], -0.25 * 32768 + ducked, atol=1)
    assert (es[dub_fr] == 1000).all() and (fr[dub_es] == 1000).all()  # the other language's dub is not there
    # every output has the same 75 video packets, each its own copy of the input's
    for out in outs.values():
        assert [data for data, _ in out.packets] == [f"v{ms}".encode() for ms in range(0, 3000, 40)]
        assert out.packets[0][1] == SHIFT_MS
    for i in range(75):  # a packet object of its own for each output (mux() takes a packet's data)
        assert len({id(out.objects[i]) for out in outs.values()}) == 3
    assert {out.frames[0].pts for out in outs.values()} == {SHIFT_MS * RATE // 1000}  # one clock for all
    es_lane, fr_lane = mux.lanes
    assert (es_lane.stats.dubbed, es_lane.stats.fallbacks) == (1, 1)  # phrase 1 had no Spanish dub
    assert (fr_lane.stats.dubbed, fr_lane.stats.fallbacks) == (1, 1)
    assert mux.stats is es_lane.stats  # the top-level counts are the first target's


def test_a_late_target_does_not_hold_the_other() -> None:
    now = [0.0]
    mux, outs = make(now)
    decisions: list[Decision] = []
    mux.on_decided = decisions.append
    feed(mux, 4.0)
    mux.add_phrase(speech(0, 0, RATE))
    placed = mux.resolve(0, DubClip(0, 0, np.full(RATE // 2, 0.25, np.float32)), language="es")
    assert placed is not None and placed.start == 1024 + 480  # at once (the first free frame), French outstanding
    assert mux.sealed(0, "es") and not mux.sealed(0, "fr") and not mux.sealed(0)
    mux.step(2.0)  # output at 1.0 s: past the phrase's place + the 1 s late bound minus lead: French expires
    assert [(d.language, d.reason) for d in decisions] == [("es", "dubbed"), ("fr", "late")]
    assert mux.sealed(0)
    assert mux.resolve(0, DubClip(0, 0, np.full(RATE, 0.5, np.float32)), language="fr") is None  # too late: ignored
    mux.finish()
    mux.step(10.0)
    mux.close_out()
    assert np.abs(outs["es"].pcm()[: RATE // 2]).max() > 8000  # the Spanish dub played
    assert (outs["fr"].pcm() == 1000).all()  # French kept the original voice throughout
    assert mux.lanes[1].stats.fallbacks == 1 and mux.lanes[1].stats.dubbed == 0


def test_the_presentation_gets_video_once_the_original_and_every_language() -> None:
    now = [0.0]
    presentation = FakePresentation()
    mux, outs = make(now, presentation)
    feed(mux, 2.0)
    mux.add_phrase(speech(0, 0, RATE))
    mux.resolve(0, DubClip(0, 0, np.full(RATE // 2, 0.25, np.float32)), language="fr")
    mux.finish()
    mux.step(10.0)
    mux.close_out()
    mux.close_outputs()
    assert len(presentation.video) == 50
    assert set(presentation.audio) == {"en", "es", "fr"}
    counts = {lang: len(frames) for lang, frames in presentation.audio.items()}
    assert len(set(counts.values())) == 1  # one frame per rendition per AAC frame
    assert [f.pts for f in presentation.audio["en"]] == [f.pts for f in presentation.audio["fr"]]
    original = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in presentation.audio["en"]])
    assert (original == 1000).all()  # the original rendition never carries a dub
    assert presentation.closed and all(out.closed for out in outs.values())


def test_a_failing_presentation_is_dropped_and_the_rtmp_outputs_go_on() -> None:
    class Broken(FakePresentation):
        def write_audio(self, language: str, frame: av.AudioFrame) -> None:
            raise RuntimeError("disk full")

    now = [0.0]
    mux, outs = make(now, Broken())
    feed(mux, 1.0)
    mux.finish()
    mux.step(10.0)
    assert mux.presentation is None
    mux.close_out()
    assert len(outs["fr"].frames) == 47  # 1 s of 1024-sample frames, the last partial one at close


def test_captions_and_phrase_log_on_the_output_clock() -> None:
    now = [0.0]
    presentation = FakePresentation()
    mux, _ = make(now, presentation)

    class Log:
        def __init__(self) -> None:
            self.cues: list[dict[str, Any]] = []
            self.phrases: list[dict[str, Any]] = []

        def cue(self, **cue: Any) -> None:
            self.cues.append(cue)

        def phrase(self, record: Any) -> None:
            self.phrases.append(record)

        def close(self) -> None:
            pass

    log = Log()
    timeline = OutputTimeline(RATE, 0)
    played: list[tuple[str, str, str, float]] = []
    recorder = PhraseRecorder(timeline, "en", log, presentation.add_cue, lambda *tier: played.append(tier))
    mux.on_decided = recorder.decided
    feed(mux, 3.0)
    segment = speech(0, RATE, RATE)  # a phrase at 1..2 s, speech heard at 1.2..1.8 s
    mux.add_phrase(segment)
    details = {"transcript": "hello", "speech_start_ms": 200.0, "speech_end_ms": 800.0, "voice": "piper:x"}
    es = DubOutcome(
        0, DubStatus.DUBBED, translated_text="hola", language="es", stage_ms={"asr": 90}, translator="main",
        voice_tier="fast", **details,
    )  # fmt: skip
    recorder.answered(segment, es, decided=False)
    mux.resolve(0, DubClip(0, RATE + 9600, np.full(RATE // 2, 0.25, np.float32)), language="es")
    fr = DubOutcome(0, DubStatus.FALLBACK, reason="timeout", language="fr", **details)
    recorder.answered(segment, fr, decided=False)
    mux.resolve(0, None, "timeout", language="fr")
    shift = SHIFT_MS / 1000
    assert [c["kind"] for c in log.cues] == ["source", "translation"]  # the source once, French has no dub
    source, translation = log.cues
    assert (source["start_s"], source["end_s"]) == pytest.approx((1.2 + shift, 1.8 + shift))
    assert (translation["language"], translation["text"]) == ("es", "hola")
    assert (translation["start_s"], translation["end_s"]) == pytest.approx((1.2 + shift, 1.7 + shift))
    assert [(lang, text) for lang, _, _, text in presentation.cues] == [("en", "hello"), ("es", "hola")]
    assert [cue[1:3] for cue in presentation.cues] == [
        pytest.approx((1.2 + shift, 1.8 + shift)),
        pytest.approx((1.2 + shift, 1.7 + shift)),
    ]
    by_language = {p["language"]: p for p in log.phrases}
    assert by_language["es"]["status"] == "dubbed" and by_language["es"]["voice"] == "piper:x"
    assert by_language["es"]["stage_ms"] == {"asr": 90, "translation": None, "tts": None}
    assert by_language["fr"]["status"] == "late" and by_language["fr"]["reason"] == "timeout"
    assert by_language["fr"]["start_s"] == pytest.approx(1.2 + shift)
    # Which tiers made the dub: in the phrase log, as shares of the dubbed speech, and to the metric's sink.
    assert (by_language["es"]["translator"], by_language["es"]["voice_tier"]) == ("main", "fast")
    assert recorder.tiers.shares("es") == {"main_words": 1.0, "usual_voice": 0.0}
    assert recorder.tiers.shares("fr") == {"main_words": None, "usual_voice": None}  # nothing dubbed
    assert played == [("es", "main", "fast", segment.speech_s)]


def test_tier_shares_are_shares_of_the_dubbed_speech() -> None:
    tiers = TierShares()
    tiers.add("es", "main", "usual", 3.0)
    tiers.add("es", "main", "fast", 1.0)
    tiers.add("es", "fast", "fast", 1.0)
    assert tiers.shares("es") == {"main_words": 0.8, "usual_voice": 0.6}


def test_a_source_caption_starts_no_earlier_than_the_vads_first_speech() -> None:
    # Whisper says the speech starts at 0.0 of a phrase whose speech the VAD found 0.56 s in (a coarse timestamp).
    recorder = PhraseRecorder(OutputTimeline(RATE, 0), "es", None)
    segment = replace(speech(0, RATE, 2 * RATE), speech_start_ms=560.0)
    heard = DubOutcome(0, DubStatus.DUBBED, transcript="hola", speech_start_ms=0.0, speech_end_ms=1500.0)
    start_s, end_s = recorder.speech_span(segment, heard)
    shift = SHIFT_MS / 1000
    assert (start_s, end_s) == pytest.approx((1.56 + shift, 2.5 + shift))
    later = DubOutcome(0, DubStatus.DUBBED, transcript="hola", speech_start_ms=700.0, speech_end_ms=1500.0)
    assert recorder.speech_span(segment, later)[0] == pytest.approx(1.7 + shift)  # Whisper's, when it is later


def chunk_count(mux: PacedMuxer, language: str, outcome: str) -> float:
    value = mux.metrics.registry.get_sample_value(
        "media_service_worker_language_dub_chunks_total", {"stream_id": "s", "language": language, "outcome": outcome}
    )
    return value or 0.0


def test_a_first_chunk_decides_the_phrase_and_later_chunks_extend_its_dub() -> None:
    now = [0.0]
    mux, outs = make(now)
    decisions: list[Decision] = []
    mux.on_decided = decisions.append
    feed(mux, 3.0)
    mux.add_phrase(speech(0, 0, RATE))
    quarter = RATE // 4
    span = mux.add_chunk(0, DubClip(0, 4800, np.full(quarter, 0.25, np.float32)), language="es")
    assert span == (4800, 4800 + quarter)  # it plays at once, the rest still to come
    assert [(d.language, d.reason) for d in decisions] == [("es", "dubbed")]
    assert mux.sealed(0, "es") and mux.growing(0, "es")
    later = mux.add_chunk(0, DubClip(0, 4800 + quarter, np.full(quarter, -0.25, np.float32)), language="es", final=True)
    assert later == (4800 + quarter, 4800 + 2 * quarter)
    assert not mux.growing(0, "es")  # its last chunk
    # the final answer with the whole dub: nothing placed again
    assert mux.resolve(0, DubClip(0, 4800, np.full(2 * quarter, 0.25, np.float32)), language="es") is None
    mux.resolve(0, None, "timeout", language="fr")
    mux.finish()
    mux.step(10.0)
    mux.close_out()
    es, fr = outs["es"].pcm(), outs["fr"].pcm()
    ducked = round(1000 * 10 ** (-20 / 20))
    np.testing.assert_allclose(es[4800 : 4800 + quarter], 0.25 * 32768 + ducked, atol=1)
    np.testing.assert_allclose(es[4800 + quarter : 4800 + 2 * quarter], -0.25 * 32768 + ducked, atol=1)
    assert (es[4800 + 2 * quarter + 480 :] == 1000).all()  # after the dub and its fade: the original
    assert (fr == 1000).all()
    es_lane = mux.lanes[0]
    assert (es_lane.stats.dubbed, es_lane.stats.phrases, es_lane.stats.fallbacks) == (1, 1, 0)
    assert (chunk_count(mux, "es", "started"), chunk_count(mux, "es", "appended")) == (1, 1)


def test_a_chunk_for_a_phrase_whose_time_passed_is_dropped_and_counted() -> None:
    now = [0.0]
    mux, _ = make(now)
    feed(mux, 4.0)
    mux.add_phrase(speech(0, 0, RATE))
    mux.step(2.0)  # past the phrase's place + the late bound: the original voice, in every language
    assert mux.add_chunk(0, DubClip(0, 0, np.full(RATE // 4, 0.25, np.float32)), language="es") is None
    assert chunk_count(mux, "es", "dropped") == 1 and mux.lanes[0].stats.fallbacks == 1
    assert mux.add_chunk(0, None, language="es") is None  # a silent chunk: nothing to play, nothing counted
    assert chunk_count(mux, "es", "dropped") == 1


def test_chunk_captions_and_the_phrase_log_waiting_for_the_final_answer() -> None:
    now = [0.0]
    presentation = FakePresentation()
    mux, _ = make(now, presentation)
    phrases: list[dict[str, Any]] = []
    cues: list[dict[str, Any]] = []

    class Log:
        def cue(self, **cue: Any) -> None:
            cues.append(cue)

        def phrase(self, record: Any) -> None:
            phrases.append(record)

        def close(self) -> None:
            pass

    recorder = PhraseRecorder(OutputTimeline(RATE, 0), "en", Log(), presentation.add_cue)
    mux.on_decided = recorder.decided
    feed(mux, 3.0)
    segment = speech(0, RATE, RATE)
    mux.add_phrase(segment)
    quarter = RATE // 4
    spans = []
    for i, text in enumerate(["hola,", "amigos"]):
        recorder.chunked(segment, "es")
        span = mux.add_chunk(0, DubClip(0, RATE + i * quarter, np.full(quarter, 0.25, np.float32)), language="es")
        assert span is not None
        spans.append(span)
        recorder.chunk_placed(segment, "es", span, text)
    assert phrases == []  # decided on the first chunk; the line waits for the answer's metadata
    answer = DubOutcome(
        0, DubStatus.DUBBED, transcript="hello friends", translated_text="hola, amigos", language="es",
        speech_start_ms=0.0, speech_end_ms=500.0, translator="main", voice_tier="usual", chunks=2,
    )  # fmt: skip
    recorder.answered(segment, answer, decided=mux.sealed(0, "es"))
    mux.resolve(0, DubClip(0, RATE, np.full(2 * quarter, 0.25, np.float32)), language="es")
    shift = SHIFT_MS / 1000
    translations = [(c["text"], c["start_s"], c["end_s"]) for c in cues if c["kind"] == "translation"]
    assert translations == [  # one per chunk where it plays; the whole translation is not captioned again
        ("hola,", pytest.approx(1.0 + shift), pytest.approx(1.25 + shift)),
        ("amigos", pytest.approx(1.25 + shift), pytest.approx(1.5 + shift)),
    ]
    assert [c["text"] for c in cues if c["kind"] == "source"] == ["hello friends"]
    (line,) = [p for p in phrases if p["language"] == "es"]
    assert line["status"] == "dubbed" and line["translation"] == "hola, amigos" and line["chunks"] == 2
    assert (line["start_s"], line["end_s"]) == pytest.approx((1.0 + shift, 1.5 + shift))  # the grown dub
    assert recorder.tiers.shares("es") == {"main_words": 1.0, "usual_voice": 1.0}
