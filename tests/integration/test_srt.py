"""SRT in and out on the real stack (`livedub up --echo`'s processes, a publish key set): an ffmpeg SRT publisher
(MPEG-TS, the key as passphrase) reaches the pipeline and an SRT reader per target language gets `out/<lang>` with
the input's video packets and A/V in sync, and ends by itself when the output does; a wrong or missing passphrase is
refused in the handshake; a publisher that drops is ended as a dropped RTMP publisher is (the input unpublishes, the
worker ends) and may come back."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import av
import pytest

from livedub.analysis import PatternSpec, measure_av_sync, write_pattern
from livedub.stack import ManagedProcess, Stack, StackConfig, wait_for_stream

pytestmark = pytest.mark.integration

KEY = "srt-test-publish-key"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("srt")


@pytest.fixture(scope="module")
def stack(work: Path) -> Iterator[Stack]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PUBLISH_KEY", KEY)
        cfg = StackConfig.with_free_ports(
            target_languages=["es", "fr"], sts_pipeline="echo", output_delay_ms=2000, log_dir=work / "logs",
            media_env={"MEDIA_HLS_DIR": str(work / "hls")},
        )  # fmt: skip
        with Stack(cfg) as running:
            yield running


@pytest.fixture(scope="module")
def pattern(work: Path) -> Path:
    return write_pattern(work / "av.flv", PatternSpec(duration_s=12.0))


def srt_publish_argv(source: Path, url: str, loop: bool = False) -> list[str]:
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-re"]
    return [*argv, *(["-stream_loop", "-1"] if loop else []), "-i", str(source), "-c", "copy", "-f", "mpegts",
            f"{url}&pkt_size=1316"]  # fmt: skip


def video_packet_hashes(path: Path) -> list[str]:
    """Per video packet, a digest of its H.264 NAL units byte for byte, the Annex B start codes left out: MPEG-TS ->
    FLV (the RTMP hop) -> MPEG-TS writes each NAL's start code anew (3 bytes where the input had 4), the coded
    video itself is untouched."""
    with av.open(str(path)) as container:
        return [nal_digest(bytes(packet)) for packet in container.demux(video=0) if packet.size]


def nal_digest(annex_b: bytes) -> str:
    # A NAL unit never ends in a zero byte (its trailing bits end in a 1): zeros before a start code are framing.
    units = [unit.rstrip(b"\x00") for unit in annex_b.split(b"\x00\x00\x01")]
    return hashlib.sha256(b"|".join(unit for unit in units if unit)).hexdigest()


def srt_reader(stack: Stack, sid: str, language: str, work: Path) -> tuple[ManagedProcess, Path]:
    """An ffmpeg SRT reader recording `out/<language>` (MPEG-TS, packets copied), connected before the show."""
    recording = work / f"{sid}-out-{language}.ts"
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning", "-y", "-i",
            stack.srt_output_url(sid, language), "-map", "0", "-c", "copy", "-f", "mpegts", str(recording)]  # fmt: skip
    return ManagedProcess(f"srt-reader-{language}", argv, work / f"{sid}-reader-{language}.log").start(), recording


@pytest.mark.usefixtures("dropped_publisher")  # the drop scenario plays meanwhile, on another stream id
def test_srt_publisher_in_and_srt_reader_out_per_language(stack: Stack, pattern: Path, work: Path) -> None:
    """Readers connect before the publisher (they wait for their path), get each target language, and end by
    themselves when the output ends (the gateway closes the SRT connection; nginx-rtmp tells players nothing)."""
    sid = "srtio"
    readers = {language: srt_reader(stack, sid, language, work) for language in stack.targets}
    try:
        publish = subprocess.run(srt_publish_argv(pattern, stack.srt_input_url(sid)), capture_output=True, timeout=60)
        assert publish.returncode == 0, publish.stderr.decode()[-2000:]
        for language in stack.targets:
            assert wait_for_stream(stack.stat_url, f"{sid}/out/{language}", timeout=30, publishing=False) is not None
        for language, (reader, _) in readers.items():
            assert reader.process is not None
            reader.process.wait(timeout=20)  # the end of the output ends the reader: no signal needed
            assert reader.returncode() == 0, (language, reader.tail())
    finally:
        for reader, _ in readers.values():
            reader.stop(timeout=3, sig=2)
    reference = work / "reference.ts"  # the input's H.264 as MPEG-TS carries it (Annex B), packets copied
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(pattern), "-c", "copy", str(reference)], check=True)
    expected = video_packet_hashes(reference)
    for language, (_, recording) in readers.items():
        assert_same_video_packets_in_sync(expected, recording, language)


def assert_same_video_packets_in_sync(expected: list[str], recording: Path, language: str) -> None:
    """The recording's video is a run of the input's packets, in order, none left out or repeated (the pattern
    repeats every 2 s, so packets are matched as a run, not one by one), joined at a keyframe near the start."""
    received = video_packet_hashes(recording)
    starts = [i for i in range(len(expected)) if expected[i : i + len(received)] == received]
    assert received and starts, f"{language}: the output video is not a run of the input's packets"
    assert len(received) >= 0.8 * len(expected), (language, len(received), len(expected))
    sync = measure_av_sync(recording)
    assert len(sync.offsets_ms) >= 3 and sync.max_abs_offset_ms <= 20.0, (language, sync)


@pytest.mark.parametrize("passphrase", ["wrong-passphrase-1", ""], ids=["wrong", "missing"])
def test_srt_publisher_without_the_passphrase_is_refused(stack: Stack, pattern: Path, passphrase: str) -> None:
    url = stack.srt_input_url("srtbad").replace(f"passphrase={KEY}", f"passphrase={passphrase}")
    url = url.replace("&passphrase=&", "&").removesuffix("&passphrase=")
    publish = subprocess.run(srt_publish_argv(pattern, url), capture_output=True, timeout=30)
    assert publish.returncode != 0
    assert wait_for_stream(stack.stat_url, "srtbad/in", timeout=2) is None


def streams(stack: Stack) -> list[dict]:
    with urllib.request.urlopen(f"{stack.media_url}/v1/streams", timeout=5) as response:
        return json.loads(response.read())["streams"]


def drop_and_return(stack: Stack, pattern: Path, work: Path) -> None:
    """The dropped publisher's scenario (its checks raise); test_dropped_srt_publisher_... gets its outcome."""
    sid = "srtdrop"
    publisher = ManagedProcess("srt-publisher", srt_publish_argv(pattern, stack.srt_input_url(sid), loop=True),
                               work / "drop-publisher.log").start()  # fmt: skip
    try:
        assert wait_for_stream(stack.stat_url, f"{sid}/out", timeout=30) is not None
        assert sid in [s["stream_id"] for s in streams(stack)]
        publisher.stop(timeout=0.1, sig=9)  # gone without a word: libsrt's peer idle timeout (5 s) ends it
        assert wait_for_stream(stack.stat_url, f"{sid}/in", timeout=15, publishing=False) is not None
        assert wait_for_stream(stack.stat_url, f"{sid}/out", timeout=30, publishing=False) is not None
    finally:
        publisher.stop(timeout=1, sig=9)
    # It comes back over SRT, as an RTMP publisher may after a drop.
    back = ManagedProcess("srt-back", srt_publish_argv(pattern, stack.srt_input_url(sid)), work / "back.log").start()
    try:
        assert wait_for_stream(stack.stat_url, f"{sid}/out", timeout=30) is not None
    finally:
        back.stop(timeout=1, sig=9)


@pytest.fixture(scope="module")
def dropped_publisher(stack: Stack, pattern: Path, work: Path) -> Iterator[Future[None]]:
    """The drop scenario, started in the background: it plays on its own stream id while the readers' test runs
    (both mostly wait on real-time publishers: one after the other they took 45 s)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="srt-drop") as pool:
        yield pool.submit(drop_and_return, stack, pattern, work)


def test_dropped_srt_publisher_ends_like_a_dropped_rtmp_one_and_may_return(dropped_publisher: Future[None]) -> None:
    dropped_publisher.result(timeout=120)
