"""E2E production simulation: the whole live dubbing chain with real services and real models, as `livedub up` runs it.

The 60 s speech-over-music fixture (human English speech over a music bed, H.264 + AAC) is published in real time
to the media server; the media-service cuts it into phrases at pauses and streams each to the STS service as it
ends, which dubs it into Spanish (Whisper, the LLM translator, the Spanish TTS); each dub is placed on the output
timeline over the ducked original, and the stream is published on `live/<id>/out` with the default delay line,
recorded while it plays and checked: share of speech dubbed, codecs, duration, the input's video packets, no stall,
Spanish speech, the music under the dubs and in the pauses, A/V sync, and the two services' metrics. A second stack
with the STS in echo mode runs the seed's fixed 6 s scenario with the content-based flash/beep A/V check.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import pytest
import yaml

from e2e import config
from e2e.conftest import session_elapsed_s
from e2e.helpers.metrics_parser import Metrics, fetch_metrics, worker_series
from e2e.helpers.services_manager import ServicesManager
from e2e.helpers.socketio_monitor import StsMonitor
from e2e.helpers.stream_analyzer import (
    Packet,
    align_offset_s,
    component_gain_db,
    decode_audio,
    match_packets,
    packets,
    packets_duration_s,
    probe,
)
from e2e.helpers.stream_publisher import Publication, StreamRecorder, publish_file
from livedub.analysis import AvSyncReport, PatternSpec, measure_av_sync, write_pattern
from livedub.models.cache import model_dir
from livedub.stack import Stack, wait_for_stream
from livedub.testing.fixture_music import MusicFixture, ensure_music_fixture

# ------------------------------------------------------------------------------------------------ text helpers


def normalize(text: str) -> str:
    """Lower case, no accents, no punctuation (apostrophes kept), hyphens as spaces, single spaces."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[-–—]", " ", text)
    text = re.sub(r"[^\w\s']", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def words(text: str) -> list[str]:
    return normalize(text).split()


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp or "<empty>"))


def looks_spanish(text: str) -> tuple[bool, str]:
    tokens = words(text)
    if not tokens:
        return False, "empty"
    es = sum(t in config.SPANISH_STOPWORDS for t in tokens)
    en = sum(t in config.ENGLISH_STOPWORDS for t in tokens)
    ok = es >= 1 and en <= max(1, len(tokens) // 5)
    return ok, f"{es} Spanish / {en} English function words of {len(tokens)}"


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if len(w) >= 4 and w not in config.SPANISH_STOPWORDS}


# ------------------------------------------------------------------------------------------------ echo A/V check


@dataclass
class EchoCheck:
    """Flash/beep pattern through the echo stack, in a background thread while the main run plays."""

    stack: Stack
    log_dir: Path
    stream_id: str = field(default_factory=lambda: f"echo{uuid.uuid4().hex[:8]}")
    report: AvSyncReport | None = None
    metrics: Metrics | None = None
    output_ended: bool = False
    error: BaseException | None = None
    _thread: threading.Thread | None = None
    _recorder: StreamRecorder | None = None
    _publication: Publication | None = None

    def start(self) -> EchoCheck:
        self._thread = threading.Thread(target=self._run, name="echo-check", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            spec = PatternSpec(duration_s=config.ECHO_PATTERN_SECONDS)
            source = write_pattern(self.log_dir / "flash-beep.flv", spec)
            recorded = self.log_dir / f"{self.stream_id}-out.flv"
            recorder = StreamRecorder(
                self.stack.output_url(self.stream_id),
                recorded,
                self.log_dir / f"recorder-{self.stream_id}.log",
                stat_url=self.stack.stat_url,
            ).start()
            self._recorder = recorder
            publication = publish_file(self.stack, self.stream_id, source, self.log_dir)
            self._publication = publication
            publication.wait(timeout=config.ECHO_PATTERN_SECONDS + 30)
            self.output_ended = recorder.stop_when_unpublished(
                self.stack.stat_url, timeout=config.ECHO_OUTPUT_DELAY_MS / 1000 + 30
            )
            self.metrics = fetch_metrics(self.stack.media_url)
            self.report = measure_av_sync(recorded)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        """Stop its ffmpeg processes (when the test ends early)."""
        if self._publication is not None:
            self._publication.stop()
        if self._recorder is not None:
            self._recorder.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.error = self.error or TimeoutError("echo A/V check did not finish")


@pytest.fixture
def echo_av_check(e2e_services: ServicesManager, e2e_log_dir: Path) -> Iterator[EchoCheck]:
    """The echo stack's flash/beep run, started now, in the background."""
    assert e2e_services.echo is not None
    check = EchoCheck(e2e_services.echo, e2e_log_dir).start()
    yield check
    check.stop()


# ------------------------------------------------------------------------------------------------ the test


class Checks:
    """Collects failed checks so that one run reports every broken property; `verify()` fails the test."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note
        self.failures: list[str] = []

    def __call__(self, ok: bool, message: str) -> bool:
        if not ok:
            self.failures.append(message)
            self.note(f"FAILED: {message}")
        return bool(ok)

    def verify(self) -> None:
        assert not self.failures, f"{len(self.failures)} check(s) failed:\n" + "\n".join(
            f"  - {m}" for m in self.failures
        )


def wait_until(predicate: Any, timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def transcribe_spanish(path: Path) -> str:
    from faster_whisper import WhisperModel

    audio = decode_audio(path, 16000)
    model = WhisperModel(str(model_dir("whisper-base")), device="cpu", compute_type="int8", local_files_only=True)
    # 12 s pieces: Whisper's long-form decoding skips whole stretches of this 60 s mix of short phrases.
    piece = 12 * 16000
    texts: list[str] = []
    for start in range(0, len(audio), piece):
        segments, _ = model.transcribe(
            audio[start : start + piece], language="es", beam_size=5, vad_filter=True, condition_on_previous_text=False
        )
        texts.extend(s.text.strip() for s in segments)
    return " ".join(texts)


def max_gap_s(pkts: list[Packet]) -> float:
    """Largest hole between consecutive packets' timestamps beyond the earlier one's duration."""
    times = [(p.dts_s if p.dts_s is not None else p.pts_s, p.duration_s) for p in pkts]
    times = [(t, d) for t, d in times if t is not None]
    return max((b - (a + d) for (a, d), (b, _) in itertools.pairwise(times)), default=0.0)


def music_levels(recorded: Path, fixture: MusicFixture) -> tuple[list[float], float]:
    """(dB of the music bed in each long pause, dB of the bed under the prompts) in the output, relative to the
    input: the output is aligned on the input's music-only lead-in, then the bed's least-squares gain is measured
    (under the prompts pooled over all of them: one prompt's window is too noisy under a loud dub)."""
    rate = fixture.sample_rate
    output = decode_audio(recorded, rate)
    music = fixture.music_audio()
    mix = music + fixture.speech_audio()
    offset = round(align_offset_s(output, mix, rate) * rate)
    output = output[offset:] if offset >= 0 else np.concatenate([np.zeros(-offset, np.float32), output])
    n = min(len(output), len(music))
    output, music = output[:n], music[:n]

    def window(start_s: float, end_s: float) -> slice:
        return slice(round(start_s * rate), round(end_s * rate))

    # The later part of each long pause: a dub may run on into its start (dubs start up to DUB_MAX_LATE_MS late).
    pauses = [window(p.start_s + 0.5 * p.duration_s, p.end_s - 0.3) for p in fixture.long_pauses()]
    # The middle of each prompt: its dub plays there unless it is late or queued (ducking follows the dub).
    prompts = [window(p.start_s + 0.25 * p.duration_s, p.end_s - 0.25 * p.duration_s) for p in fixture.prompts]
    under = np.concatenate([output[w] for w in prompts]), np.concatenate([music[w] for w in prompts])
    return [component_gain_db(output[w], music[w]) for w in pauses], component_gain_db(*under)


@pytest.mark.e2e
def test_full_pipeline_media_to_sts_to_output(
    e2e_services: ServicesManager,
    test_fixture: MusicFixture,
    stream_id: str,
    sts_monitor: StsMonitor,
    output_recorder: StreamRecorder,
    echo_av_check: EchoCheck,
    publish_test_fixture: Publication,
) -> None:
    main = e2e_services.main
    publication = publish_test_fixture
    t0 = publication.started_at
    note = e2e_services.note
    echo = echo_av_check

    # 1. The input stream appears in the media server within 10 s.
    stream = wait_for_stream(main.stat_url, f"{stream_id}/in", timeout=config.INPUT_APPEARS_WITHIN_S)
    assert stream is not None, f"input {stream_id}/in not published within {config.INPUT_APPEARS_WITHIN_S}s"
    note(f"input listed after {time.monotonic() - t0:.1f}s ({stream.video_codec}/{stream.audio_codec})")
    assert (stream.video_codec, stream.audio_codec) == ("H264", "AAC")

    # 2. The worker's metrics appear within 10 s.
    remaining = config.WORKER_METRICS_WITHIN_S - (time.monotonic() - t0)
    assert wait_until(lambda: worker_series(fetch_metrics(main.media_url), stream_id), max(remaining, 0.1)), (
        f"no media_service_worker_* series for {stream_id} within {config.WORKER_METRICS_WITHIN_S}s of publishing"
    )
    note(f"worker metrics after {time.monotonic() - t0:.1f}s")

    # 3. The output stream plays out; it was recorded from before it started. Phrases stream to the STS meanwhile.
    output_ended = output_recorder.stop_when_unpublished(
        main.stat_url, timeout=max(1.0, config.OUTPUT_END_TIMEOUT_S - (time.monotonic() - t0))
    )
    publication.wait(timeout=10)
    note(f"output ended={output_ended} after {time.monotonic() - t0:.1f}s")
    everything = sts_monitor.processed()
    media_metrics = fetch_metrics(main.media_url)
    sts_metrics = fetch_metrics(main.sts_url)

    # Report the fragments before asserting on them.
    for p in everything:
        meta, timings = p.get("metadata") or {}, p.get("stage_timings") or {}
        print(
            f"  #{p.get('sequence_number')} {p.get('status')} {p.get('processing_time_ms', 0):.0f} ms"
            f" ({meta.get('original_duration_ms', 0):.0f} ms of audio; asr/mt/tts {timings.get('asr_ms')}/"
            f"{timings.get('translation_ms')}/{timings.get('tts_ms')} ms, {meta.get('translator')} translator,"
            f" voice {meta.get('voice')}) {(p.get('error') or {}).get('message', '')}\n"
            f"      transcript: {p.get('transcript')}\n      translated: {p.get('translated_text')}"
        )

    # From here on every property is checked and every failure reported (not only the first).
    check = Checks(note)
    seqs = [p["sequence_number"] for p in everything]
    check(len(everything) >= config.MIN_FRAGMENTS, f"only {len(everything)} phrases reached fragment:processed")
    check(seqs == list(range(len(everything))), f"fragments out of order or missing: {seqs}")
    for p in everything:
        check(p.get("stream_id") == stream_id, f"fragment {p['sequence_number']}: stream_id {p.get('stream_id')}")

    # 4. At least 90 % of the speech plays dubbed (the media-service's own account, by outcome).
    speech = media_metrics.by_label("media_service_worker_speech_seconds_total", "outcome", stream_id=stream_id)
    fallbacks = media_metrics.by_label("media_service_worker_fallbacks_total", "reason", stream_id=stream_id)
    total = sum(speech.values())
    dubbed_share = speech.get("dubbed", 0.0) / total if total else 0.0
    note(f"speech dubbed: {dubbed_share:.0%} of {total:.1f} s; kept original: {fallbacks}")
    check(dubbed_share >= config.MIN_SPEECH_DUBBED, f"only {dubbed_share:.0%} of the speech dubbed ({fallbacks})")

    # 5. Transcripts match the fixture's text; translations are Spanish.
    done = [p for p in everything if p["status"] in {"success", "partial"}]
    transcripts = " ".join(p.get("transcript") or "" for p in everything)  # late ones may have been transcribed
    aggregate = wer(" ".join(test_fixture.texts), transcripts)
    note(f"aggregate WER {aggregate:.3f}")
    check(aggregate <= config.MAX_AGGREGATE_WER, f"aggregate WER {aggregate:.3f} > {config.MAX_AGGREGATE_WER}")
    translations = [p.get("translated_text") or "" for p in done if (p.get("transcript") or "").strip()]
    for text in translations:
        ok, why = looks_spanish(text)
        check(ok, f"translation not Spanish ({why}): {text!r}")

    # 6. The output: H.264 + AAC, 59-61 s, the input's video packets, no stall.
    recorded = output_recorder.out_path
    check(output_ended, f"output {stream_id}/out never ended (or never started)")
    if check(recorded.exists() and recorded.stat().st_size > 0, "nothing recorded from the output stream"):
        info = probe(recorded)
        video, audio = info.first("video"), info.first("audio")
        check(video is not None and video.codec_name == "h264", f"output video: {info}")
        check(audio is not None and audio.codec_name == "aac", f"output audio: {info}")
        out_video, out_audio = packets(recorded, "v"), packets(recorded, "a")
        v_dur, a_dur = packets_duration_s(out_video), packets_duration_s(out_audio)
        note(f"output: video {v_dur:.2f}s ({len(out_video)} packets), audio {a_dur:.2f}s")
        low, high = config.OUTPUT_DURATION_RANGE_S
        check(low <= v_dur <= high, f"output video lasts {v_dur:.2f}s")
        check(low <= a_dur <= high, f"output audio lasts {a_dur:.2f}s")
        gaps = max_gap_s(out_audio), max_gap_s(out_video)
        note(f"largest timestamp gaps: audio {gaps[0] * 1000:.0f} ms, video {gaps[1] * 1000:.0f} ms")
        check(max(gaps) <= config.MAX_OUTPUT_GAP_S, f"the output stalls: gaps {gaps}")
        match = match_packets(packets(test_fixture.path, "v"), out_video)
        note(f"video packets: {match}")
        check(match.matched == match.output_count, f"{match.output_count - match.matched} output video packets are new")
        check(match.in_order, "output video packets are not in the input's order")
        check(
            match.coverage >= config.MIN_VIDEO_PACKET_COVERAGE,
            f"only {match.coverage:.1%} of input video packets (output starts at input #{match.first_input_index})",
        )

        # 7. The output's audio is the dub: an ASR pass (es) finds the translations' words, little English.
        heard = transcribe_spanish(recorded)
        note(f"ASR of the output (es): {heard}")
        wanted = set().union(set(), *(content_words(t) for t in translations))
        found = wanted & set(words(heard))
        recall = len(found) / len(wanted) if wanted else 0.0
        note(f"output ASR recall of translation content words: {recall:.2f} ({len(found)}/{len(wanted)})")
        check(recall >= config.MIN_OUTPUT_ASR_RECALL, f"output ASR recall {recall:.2f}; heard {heard!r}")
        check(looks_spanish(heard)[0], f"output audio does not sound Spanish: {heard!r}")
        heard_words = words(heard)
        english = sum(w in config.ENGLISH_STOPWORDS for w in heard_words) / max(1, len(heard_words))
        check(english <= config.MAX_OUTPUT_ENGLISH_SHARE, f"original English in the output ({english:.0%})")

        # 8. The music goes on: at full level in the pauses, ducked (audible) under the dubs.
        pauses, under = music_levels(recorded, test_fixture)
        note(f"music in the long pauses (dB vs input): {[round(x, 1) for x in pauses]}; under the prompts: {under:.1f}")
        check(
            all(abs(x) <= config.MUSIC_IN_PAUSES_DB for x in pauses), f"music in the pauses not at full level: {pauses}"
        )
        low_db, high_db = config.MUSIC_UNDER_DUB_DB
        check(low_db <= under <= high_db, f"music under the dubs at {under:.1f} dB, not {low_db}..{high_db}")

    # 9. A/V sync from the worker's metrics: every phrase start within 20 ms.
    fraction, count = media_metrics.histogram_fraction_le(
        "media_service_worker_av_sync_delta_abs_ms", config.AV_SYNC_MAX_DELTA_MS, stream_id=stream_id
    )
    note(f"A/V sync: {fraction:.0%} of {count:.0f} phrase starts within {config.AV_SYNC_MAX_DELTA_MS:.0f} ms")
    check(count >= len(everything), f"A/V sync observed on {count:.0f} phrases only")
    check(fraction == 1.0, f"only {fraction:.0%} of phrase starts within {config.AV_SYNC_MAX_DELTA_MS:.0f} ms")

    # 10. Both services' Prometheus metrics count the same fragments.
    media_sent = media_metrics.value("media_service_worker_sts_fragments_sent_total", stream_id=stream_id)
    media_done = media_metrics.by_label(
        "media_service_worker_sts_fragments_processed_total", "status", stream_id=stream_id
    )
    sts_done = sts_metrics.by_label("sts_fragments_processed_total", "status")
    note(f"metrics: media sent {media_sent:.0f}, media processed {media_done}, STS processed {sts_done}")
    n = float(len(everything))
    check(media_sent == n, f"media-service sent {media_sent:.0f} fragments, {n:.0f} processed events seen")
    check(sum(media_done.values()) == n, f"media-service processed {media_done}, events seen {n:.0f}")
    check(sum(sts_done.values()) == n, f"STS processed {sts_done}, events seen {n:.0f}")
    for status in ("success", "partial", "failed"):
        check(media_done.get(status, 0.0) == sts_done.get(status, 0.0), f"{status}: {media_done} vs {sts_done}")

    # 11. Content-based A/V check (STS in echo mode, the seed's fixed 6 s fragments): every marker within 20 ms.
    echo.join(timeout=120)
    check(echo.error is None, f"echo A/V check failed: {echo.error!r}")
    check(echo.output_ended, "echo output never ended")
    if check(echo.report is not None and echo.metrics is not None, "echo run produced no report"):
        assert echo.report is not None and echo.metrics is not None
        rep = echo.report
        note(f"echo A/V offsets (ms): {[round(x, 2) for x in rep.offsets_ms]}")
        markers = int((config.ECHO_PATTERN_SECONDS - 1.0) // 2.0) + 1
        check(len(rep.offsets_ms) >= markers - 1, f"{len(rep.offsets_ms)} markers paired of {markers}: {rep}")
        check(rep.max_abs_offset_ms <= config.ECHO_MAX_MARKER_OFFSET_MS, f"echo offsets {rep.offsets_ms} ms")
        echo_dubbed = echo.metrics.value(
            "media_service_worker_sts_fragments_processed_total", stream_id=echo.stream_id, status="success"
        )
        check(echo_dubbed >= 2, f"the echo run's audio did not go through the STS ({echo_dubbed:.0f} fragments)")

    # 12. The whole E2E run fits its budget.
    elapsed = session_elapsed_s()
    note(f"E2E elapsed {elapsed:.0f}s (startup {e2e_services.startup_s or 0:.0f}s)")
    check(elapsed <= config.E2E_BUDGET_S, f"E2E took {elapsed:.0f}s > {config.E2E_BUDGET_S:.0f}s")
    check.verify()


# ------------------------------------------------------------------------------------------------ static checks

EXPECTED_COMPOSE = {
    "docker-compose.media.yml": {"mediamtx": {"1935"}, "media-service": {"8080"}},
    "docker-compose.sts.yml": {"sts": {"3000"}},
}


def _published_ports(service: dict[str, Any]) -> set[str]:
    ports: set[str] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.add(str(entry.get("published", entry.get("target"))))
        else:
            parts = str(entry).split("/")[0].split(":")
            ports.add(parts[-2] if len(parts) >= 2 else parts[0])
    return ports


@pytest.mark.e2e
@pytest.mark.parametrize("filename", sorted(EXPECTED_COMPOSE))
def test_docker_compose_files_exist(filename: str) -> None:
    path = config.DEPLOY_DIR / filename
    assert path.is_file(), f"{path} is missing"
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), f"{filename}: no services"
    for service, ports in EXPECTED_COMPOSE[filename].items():
        assert service in data["services"], f"{filename}: service {service!r} missing"
        spec = data["services"][service]
        assert spec.get("image") or spec.get("build"), f"{filename}: {service} has neither image nor build"
        published = _published_ports(spec)
        assert ports <= published, f"{filename}: {service} publishes {published}, expected {ports}"
    if filename == "docker-compose.media.yml":
        env = data["services"]["media-service"].get("environment", {})
        assert "STS_SERVICE_URL" in env and "RTMP_BASE_URL" in env, env
        assert str(env.get("SEGMENT_DURATION_MS", "")).endswith("6000}") or env.get("SEGMENT_DURATION_MS") == 6000


@pytest.mark.e2e
def test_test_fixture_exists() -> None:
    fixture = ensure_music_fixture()
    assert fixture.path.is_file() and fixture.sidecar.is_file()
    info = probe(fixture.path)
    assert info.duration_s is not None and abs(info.duration_s - 60.0) < 0.1, info.duration_s
    video, audio = info.first("video"), info.first("audio")
    assert video is not None and audio is not None, info
    assert (video.codec_name, video.width, video.height) == ("h264", 1280, 720)
    assert video.frame_rate is not None and abs(video.frame_rate - 30.0) < 0.01
    assert (audio.codec_name, audio.sample_rate) == ("aac", 48000)
    assert abs(packets_duration_s(packets(fixture.path, "a")) - 60.0) < 0.1
    # Its speech: twelve prompts in order with pauses between them (two long ones), each with its reference.
    assert len(fixture.prompts) == 12 and len(fixture.long_pauses()) >= 2
    for before, after in itertools.pairwise(fixture.prompts):
        assert before.end_s < after.start_s, (before, after)
    for prompt in fixture.prompts:
        assert 0.0 < prompt.start_s < prompt.end_s < 60.0 and len(words(prompt.text)) >= 3 and prompt.reference
    # Keyframes every 2 s (the media server's players join on keyframes).
    keys = [p.pts_s for p in packets(fixture.path, "v") if p.keyframe]
    assert keys[:3] == [0.0, 2.0, 4.0] and len(keys) == 30, keys[:5]
