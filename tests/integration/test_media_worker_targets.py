"""A stream dubbed into two target languages at once, with real processes: nginx-rtmp, an ffmpeg publisher in real
time, the worker in-process with the real StsClient and the real STS server (echo pipeline, per target).

The echo answers Spanish with the phrase's own audio and French with it inverted, so each output shows whose dub it
carries: `out` and `out/es` follow the input, `out/fr` is its negative under the dubs. Every RTMP output holds the
input's exact H.264 packets and stays in A/V sync (flash/beep markers within ±20 ms); the HLS presentation lists
the original and both targets as audio renditions plus a WebVTT rendition each, and every playlist decodes
(ffprobe).
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from media_testkit import fresh_metrics, serve_asgi

from livedub.analysis import PatternSpec, measure_av_sync, write_pattern
from livedub.analysis.recorder import StreamRecorder, read_packets
from livedub.deadline import NO_DEADLINE, Deadline
from livedub.media.pipeline.plan import StreamPlan
from livedub.media.pipeline.worker import WorkerRunner
from livedub.media.settings import MediaSettings
from livedub.media.sts_link.sts_client import StsClient
from livedub.mediaserver import NginxRtmpServer, RtmpServerConfig
from livedub.protocol import FragmentData, FragmentProcessed, StreamConfig
from livedub.stack import free_port
from livedub.sts.pipeline import EchoPipeline
from livedub.sts.server import create_app
from livedub.sts.settings import StsSettings
from livedub.testing.media import publish

pytestmark = pytest.mark.integration

DURATION_S = 12.0
OUTPUTS = ("out", "out/es", "out/fr")


class EchoInvertedFrench(EchoPipeline):
    """The echo, but French comes back with its samples negated (pcm_s16le)."""

    def process_each(
        self, fragment: FragmentData, config: StreamConfig, deadline: Deadline = NO_DEADLINE, on_chunk: Any = None
    ) -> Iterator[FragmentProcessed]:
        # Whole answers only (no chunks, even when asked): the inverted French dub is what this test recognises.
        for answer in super().process_each(fragment, config, deadline):
            if answer.target_language == "fr" and answer.dubbed_audio is not None:
                pcm = np.frombuffer(answer.dubbed_audio.decode_bytes(), "<i2").astype(np.int32)
                inverted = np.clip(-pcm, -32768, 32767).astype("<i2").tobytes()
                audio = answer.dubbed_audio.model_copy(update={"data_base64": base64.b64encode(inverted).decode()})
                answer = answer.model_copy(update={"dubbed_audio": audio, "translated_text": "bonjour"})
            yield answer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NginxRtmpServer]:
    cfg = RtmpServerConfig(rtmp_port=free_port(), http_port=free_port(), bind="127.0.0.1", workdir=tmp_path / "nginx")
    with NginxRtmpServer(cfg) as srv:
        yield srv


def audio_of(path: Path) -> np.ndarray:
    """The first channel of a file's audio, as float."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
    return np.concatenate([f.reshape(f.shape[0], -1)[0] if f.ndim > 1 else f for f in frames]).astype(np.float64)


def correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 2048) -> float:
    """Normalized cross-correlation of two signals at the lag (within ±max_lag samples) where it is largest in size."""
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    size = 1 << (2 * n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    window = np.concatenate([xc[: max_lag + 1], xc[-max_lag:]])
    return float(window[np.argmax(np.abs(window))] / (np.linalg.norm(a) * np.linalg.norm(b)))


def ffprobe(target: Path) -> dict:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(target)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_two_targets_publish_out_es_fr_and_hls_all_in_sync(server: NginxRtmpServer, tmp_path: Path) -> None:
    source = write_pattern(tmp_path / "av.flv", PatternSpec(duration_s=DURATION_S))
    sts_port = free_port()
    stream_id = "multi"
    settings = MediaSettings(
        _env_file=None,  # type: ignore[call-arg]
        RTMP_BASE_URL=server.rtmp_url, STS_SERVICE_URL=f"http://127.0.0.1:{sts_port}",
        WORKER_TARGET_LANGUAGES="es,fr", MEDIA_HLS_DIR=str(tmp_path / "hls"),
        OUTPUT_DELAY_MS=3000, SEGMENT_POLICY="fixed", SEGMENT_DURATION_MS=2000,
        INGEST_READ_TIMEOUT_S=2.0, INGEST_OPEN_TIMEOUT_S=10.0,
    )  # fmt: skip
    metrics = fresh_metrics()
    plan = StreamPlan.for_stream(stream_id, settings)
    client = StsClient(stream_id, settings, metrics, targets=plan.targets)
    worker = WorkerRunner(plan, settings, client, metrics)
    recorders = {
        name: StreamRecorder(
            f"{server.rtmp_url}/{stream_id}/{name}", copy_to=tmp_path / f"{name.replace('/', '-')}.flv"
        )
        for name in OUTPUTS
    }
    sts_settings = StsSettings(_env_file=None).model_copy(update={"worker_threads": 1})  # type: ignore[call-arg]

    async def main() -> None:
        async with serve_asgi(create_app(EchoInvertedFrench(), sts_settings), sts_port):
            await client.start()
            assert await client.wait_ready(10)
            publisher = publish(source, settings.input_url(stream_id), log=tmp_path / "publisher.log")
            try:
                run = asyncio.create_task(worker.run())
                await asyncio.to_thread(publisher.wait)
                worker.stop()
                await asyncio.wait_for(run, 60)
            finally:
                if publisher.poll() is None:
                    publisher.kill()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 60
    packets = {name: recorder.join(timeout=30) for name, recorder in recorders.items()}

    status = worker.status()
    assert status["state"] == "stopped" and status["target_languages"] == ["es", "fr"]
    for language in ("es", "fr"):
        # 12 s in 2 s phrases, each with a beep (a last, silent scrap cut at the stop has nothing to dub)
        assert status["languages"][language]["dubbed"] == 6 and status["segments"] in {6, 7}
        assert status["languages"][language]["fallbacks"] == 0
    assert status["outputs"]["hls"] == f"/hls/{stream_id}/master.m3u8"
    assert set(status["outputs"]["rtmp"]) == {"out", "es", "fr"}

    reference = [p.digest for p in read_packets(source) if p.kind == "video"]
    for name in OUTPUTS:  # the untouched video on every output, and A/V in sync on every output
        assert [p.digest for p in packets[name] if p.kind == "video"] == reference, name
        report = measure_av_sync(tmp_path / f"{name.replace('/', '-')}.flv")
        assert len(report.offsets_ms) == 6 and all(abs(x) <= 20.0 for x in report.offsets_ms), (name, report)

    # whose dub is on which output: Spanish follows the input's audio, French is its negative
    original = audio_of(source)
    for name, sign in (("out", 1), ("out-es", 1), ("out-fr", -1)):
        corr = correlation(original, audio_of(tmp_path / f"{name}.flv"))
        assert corr * sign > 0.5, (name, corr)

    hls = tmp_path / "hls" / stream_id
    master = (hls / "master.m3u8").read_text()
    for language in ("en", "es", "fr"):
        assert f'TYPE=AUDIO,GROUP-ID="audio",LANGUAGE="{language}"' in master.replace(", ", ","), master
        assert f'LANGUAGE="{language}"' in master
    assert master.count("TYPE=SUBTITLES") == 3
    assert (hls / "ended").exists()
    probed = ffprobe(hls / "master.m3u8")
    kinds = [s["codec_type"] for s in probed["streams"]]
    assert kinds.count("video") >= 1 and kinds.count("audio") >= 3, kinds
    for playlist in sorted(hls.glob("*.m3u8")):
        if playlist.name.startswith(("video", "audio")):
            assert ffprobe(playlist)["streams"], playlist.name

    captions = [json.loads(line) for line in (hls / "captions.jsonl").read_text().splitlines()]
    translations = [c for c in captions if c["kind"] == "translation" and c["language"] == "fr"]
    assert len(translations) == 6 and all(c["text"] == "bonjour" for c in translations)
    phrases = [json.loads(line) for line in (hls / "phrases.jsonl").read_text().splitlines()]
    heard = [(p["language"], p["status"]) for p in phrases if p["status"] != "original"]  # original: no words
    assert sorted(heard) == sorted([("es", "dubbed"), ("fr", "dubbed")] * 6)
