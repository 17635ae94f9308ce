"""WorkerRunner with real processes: nginx-rtmp, an ffmpeg publisher in real time, the worker in-process with an echo
DubClient (returns the original audio, a little longer or shorter like a real TTS), the output recorded while it plays.

Checks: the output holds the input's exact H.264 packets and AAC, its duration matches, the flash/beep offset is within
±20 ms on every marker, late dubs fall back to the original audio without stalling, a stream without audio passes its
video through, an unsupported codec is refused.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from livedub.analysis import PatternSpec, measure_av_sync, write_pattern
from livedub.analysis.recorder import PacketInfo, StreamRecorder, read_packets
from livedub.media.metrics import WorkerMetrics
from livedub.media.pipeline.plan import StreamPlan
from livedub.media.pipeline.worker import WorkerRunner
from livedub.media.settings import MediaSettings
from livedub.media.types import AudioSegment, DubOutcome
from livedub.mediaserver import NginxRtmpServer, RtmpServerConfig
from livedub.stack import free_port
from livedub.testing.media import EchoDubClient, publish

pytestmark = pytest.mark.integration

DURATION_S = 12.0
DELAY_MS = 3000
TARGETS = ("es",)  # the settings' default target language (run_stream checks)


@pytest.fixture(scope="module")
def patterns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("patterns")
    return {
        "av": write_pattern(d / "av.flv", PatternSpec(duration_s=DURATION_S)),
        "mono": write_pattern(d / "mono.flv", PatternSpec(duration_s=8.0, channels=1, sample_rate=44100)),
        "video_only": write_pattern(d / "v.flv", PatternSpec(duration_s=6.0, with_audio=False)),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmpServer]:
    """One media server for the module: every scenario publishes its own stream id."""
    workdir = tmp_path_factory.mktemp("nginx")
    cfg = RtmpServerConfig(rtmp_port=free_port(), http_port=free_port(), bind="127.0.0.1", workdir=workdir)
    with NginxRtmpServer(cfg) as srv:
        yield srv


@dataclass
class Run:
    worker: WorkerRunner
    metrics: WorkerMetrics
    output: Path
    packets: list[PacketInfo]
    client: EchoDubClient


def run_stream(
    server: NginxRtmpServer,
    tmp_path: Path,
    source: Path,
    stream_id: str,
    client: EchoDubClient,
    stop_on_unpublish: bool = True,
    join_after_s: float = 0.0,
    **settings: object,
) -> Run:
    values: dict[str, object] = {
        "rtmp_base_url": server.rtmp_url,
        "output_delay_ms": DELAY_MS,
        "segment_policy": "fixed",
        "segment_duration_ms": 2000,
        "segment_min_ms": 1000,
        "segment_max_ms": 2500,
        "ingest_read_timeout_s": 2.0,
        "ingest_open_timeout_s": 10.0,
    }
    s = MediaSettings(**(values | settings))
    metrics = WorkerMetrics(CollectorRegistry())
    plan = StreamPlan.for_stream(stream_id, s)
    assert plan.targets == tuple(client.targets)
    worker = WorkerRunner(plan, s, client, metrics)
    output = tmp_path / f"{stream_id}-out.flv"
    recorder = StreamRecorder(s.output_url(stream_id), copy_to=output, open_timeout_s=20)
    publisher = publish(source, s.input_url(stream_id), log=tmp_path / "publisher.log")
    time.sleep(join_after_s)  # a worker started by a hook joins a stream that is already running

    async def main() -> None:
        async def unpublished() -> None:  # what the on_publish_done hook does
            await asyncio.to_thread(publisher.wait)
            if stop_on_unpublish:
                worker.stop()

        watcher = asyncio.create_task(unpublished())
        await asyncio.wait_for(worker.run(), timeout=60)
        await watcher

    try:
        asyncio.run(main())
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.wait()
    packets = recorder.join(timeout=30)
    return Run(worker, metrics, output, packets, client)


def video_digests(packets: list[PacketInfo]) -> list[str]:
    return [p.digest for p in packets if p.kind == "video"]


def span_s(packets: list[PacketInfo], kind: str) -> float:
    pts = [p.pts for p in packets if p.kind == kind and p.pts is not None]
    return (max(pts) - min(pts)) / 1000.0


def assert_same_stream(run: Run, source: Path, kinds: set[str]) -> None:
    reference = read_packets(source)
    assert {p.kind for p in run.packets} == kinds
    # the exact H.264 packets of the input, all of them, in order
    assert video_digests(run.packets) == video_digests(reference)
    for kind in kinds:
        assert span_s(run.packets, kind) == pytest.approx(span_s(reference, kind), abs=0.1)


def assert_markers_in_sync(output: Path, expected_markers: int) -> None:
    report = measure_av_sync(output)
    assert len(report.offsets_ms) == expected_markers, report
    assert all(abs(x) <= 20.0 for x in report.offsets_ms), report.offsets_ms


class SometimesLateClient(EchoDubClient):
    """Echo, but every second phrase with sound in it (a beep) answers after the output needed it."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(TARGETS, delay_s)
        self.audible = 0

    async def dub(self, segment: AudioSegment) -> DubOutcome:
        if segment.pcm.any():
            self.audible += 1
            if self.audible % 2 == 0:
                await asyncio.sleep(DELAY_MS / 1000 + 2.0)
        return await super().dub(segment)


def fixed_run(server: NginxRtmpServer, work: Path, patterns: dict[str, Path]) -> Run:
    client = EchoDubClient(TARGETS, delay_s=0.2, length_error=-97)
    return run_stream(server, work, patterns["av"], "tav", client, segment_duration_ms=2500)


def speech_run(server: NginxRtmpServer, work: Path, patterns: dict[str, Path]) -> Run:
    return run_stream(
        server, work, patterns["mono"], "tmono", SometimesLateClient(delay_s=0.05), segment_policy="speech",
        segment_min_speech_ms=0,  # the beeps are no speech to the VAD: send every phrase anyway
    )  # fmt: skip


def video_only_run(server: NginxRtmpServer, work: Path, patterns: dict[str, Path]) -> Run:
    return run_stream(server, work, patterns["video_only"], "tv", EchoDubClient(TARGETS), stop_on_unpublish=False)


SCENARIOS: dict[str, Callable[[NginxRtmpServer, Path, dict[str, Path]], Run]] = {
    "fixed": fixed_run,
    "speech": speech_run,
    "video_only": video_only_run,
}


@pytest.fixture(scope="module")
def scenarios(
    server: NginxRtmpServer, patterns: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Run]]]:
    """Three publish-and-play-out scenarios at once, each on its own stream id: each mostly waits for its real-time
    publisher and delay line (one after another they took 45 s); every test checks its own scenario's outcome (and
    gets its error). The late joiner is not one of them: it must join 1 s into the stream and start at the next
    keyframe, which a busy start can miss."""
    with ThreadPoolExecutor(max_workers=len(SCENARIOS), thread_name_prefix="worker-scenario") as pool:
        yield {
            name: pool.submit(run, server, tmp_path_factory.mktemp(name), patterns) for name, run in SCENARIOS.items()
        }


def outcome(scenarios: dict[str, Future[Run]], name: str) -> Run:
    return scenarios[name].result(timeout=180)


def test_fixed_segments_dubbed_output_matches_input_and_stays_in_sync(
    scenarios: dict[str, Future[Run]], patterns: dict[str, Path]
) -> None:
    run = outcome(scenarios, "fixed")
    client = run.client
    status = run.worker.status()
    assert status["state"] == "stopped"
    # 12 s in 2.5 s slots: 4 full and a final 2 s one, cut when the publisher left (stop()) and still dubbed in time
    assert status["segments"] == 5 and client.calls == 5
    assert status["dubbed"] == 5 and status["fallbacks"] == 0
    assert abs(status["last_av_sync_delta_ms"]) <= 1.0
    assert_same_stream(run, patterns["av"], {"video", "audio"})
    assert_markers_in_sync(run.output, expected_markers=6)
    m = run.metrics
    assert m.video_packets.labels(stream_id="tav")._value.get() == len(video_digests(run.packets))
    assert m.audio_frames_out.labels(stream_id="tav")._value.get() == pytest.approx(DURATION_S * 48000 / 1024, abs=2)


def test_speech_policy_late_dubs_fall_back_without_stalling(
    scenarios: dict[str, Future[Run]], patterns: dict[str, Path]
) -> None:
    run = outcome(scenarios, "speech")
    client = run.client
    assert isinstance(client, SometimesLateClient)
    status = run.worker.status()
    assert status["state"] == "stopped"
    assert status["fallbacks"] >= 1 and status["dubbed"] >= 1
    # silent phrases come back silent: nothing to dub, nothing counted; each beep is dubbed or falls back
    assert status["fallbacks"] + status["dubbed"] == client.audible
    assert run.metrics.fallbacks.labels(stream_id="tmono", reason="late")._value.get() == status["fallbacks"]
    assert_same_stream(run, patterns["mono"], {"video", "audio"})
    assert_markers_in_sync(run.output, expected_markers=4)


def test_stream_without_audio_passes_video_through_and_ends_on_read_timeout(
    scenarios: dict[str, Future[Run]], patterns: dict[str, Path]
) -> None:
    run = outcome(scenarios, "video_only")
    assert run.worker.status()["state"] == "stopped"
    assert run.worker.end_reason == "timeout"
    assert run.metrics.errors.labels(stream_id="tv", type="no_audio")._value.get() == 1
    assert run.client.calls == 0
    assert_same_stream(run, patterns["video_only"], {"video"})


def test_unsupported_video_codec_is_refused(server: NginxRtmpServer, tmp_path: Path) -> None:
    source = tmp_path / "flv1.flv"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=160x120:r=15:d=4",
         "-f", "lavfi", "-i", "sine=r=48000:d=4", "-c:v", "flv1", "-c:a", "aac", str(source)],
        check=True,
    )  # fmt: skip
    settings = MediaSettings(rtmp_base_url=server.rtmp_url, ingest_read_timeout_s=2.0)
    metrics = WorkerMetrics(CollectorRegistry())
    worker = WorkerRunner(StreamPlan.for_stream("bad", settings), settings, EchoDubClient(TARGETS), metrics)
    publisher = publish(source, settings.input_url("bad"))
    try:
        asyncio.run(asyncio.wait_for(worker.run(), timeout=30))
    finally:
        publisher.kill()
        publisher.wait()
    assert worker.status()["state"] == "failed"
    assert metrics.errors.labels(stream_id="bad", type="unsupported_codec")._value.get() == 1
    assert metrics.pipeline_state.labels(stream_id="bad", state="failed")._value.get() == 1


def test_worker_joining_a_running_stream_starts_at_a_keyframe_with_video_and_in_sync(
    server: NginxRtmpServer, tmp_path: Path, patterns: dict[str, Path]
) -> None:
    run = run_stream(server, tmp_path, patterns["av"], "tjoin", EchoDubClient(TARGETS), join_after_s=1.0)
    assert run.worker.status()["state"] == "stopped"
    assert run.metrics.errors.labels(stream_id="tjoin", type="no_video")._value.get() == 0
    out_video = [p for p in run.packets if p.kind == "video"]
    assert out_video and out_video[0].keyframe
    reference = video_digests(read_packets(patterns["av"]))
    digests = video_digests(run.packets)
    # from a keyframe after the join (GOP 2 s) to the end, the input's packets, all of them, in order
    assert len(digests) >= len(reference) - 3 * 25
    assert digests == reference[len(reference) - len(digests) :]
    assert {p.kind for p in run.packets} == {"video", "audio"}
    assert_markers_in_sync(run.output, expected_markers=5)
