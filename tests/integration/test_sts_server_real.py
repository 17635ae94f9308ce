"""The real `livedub sts` server (subprocess, real models) over a real Socket.IO client.

Human speech (Asterisk prompts, ~6 s clips) goes in; the dub that comes back is transcribed again (faster-whisper in
the target language) and must say what `translated_text` says. Two fragments per direction: CPU is scarce.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sts_testkit import Recorder, init_payload

from livedub.dubbing.asr import WhisperASR
from livedub.dubbing.audio import resample
from livedub.protocol import AudioFormat, FragmentProcessed
from livedub.stack import free_port
from livedub.sts.payload_audio import decode_audio, mono_payload
from livedub.testing.corpus import SpeechClip, speech_clips

pytestmark = pytest.mark.integration

FRAGMENTS_PER_DIRECTION = 2
STARTUP_TIMEOUT_S = 300.0  # model loading + warm-up, on 2 busy cores
# Words too common to show that content survived the round trip.
STOPWORDS = {
    "en": set(
        "the a an and or of to in on for is are be was were this that with your you please it at by as from "
        "not no will have has can".split()
    ),
    "es": set(
        "el la los las un una unos unas y o de del a en por para con es son ser fue su sus que se no al lo "
        "le su este esta esto favor por".split()
    ),
}


@pytest.fixture(scope="module")
def sts_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        from livedub.dubbing.model_files import resolve_model_dir
        from livedub.sts.settings import StsSettings

        resolve_model_dir(StsSettings(_env_file=None).asr_model)  # type: ignore[call-arg]
        speech_clips("en", limit=1)
    except Exception as exc:  # models or corpus not installed: `make test` installs both
        pytest.skip(f"real models or speech corpus missing ({exc}); run `make setup`")
    port = free_port()
    log_path = tmp_path_factory.mktemp("sts") / "sts.log"
    env = {**os.environ, "STS_API_KEY": "", "STS_WORKER_THREADS": "1", "STS_PIPELINE": "dub"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "livedub.cli", "sts", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    saw_loading = False
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"livedub sts exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{url}/health", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        if response.status_code == 200:
            body = response.json()
            assert body["status"] == "ok" and body["models"]["warm"] is True, body
            assert saw_loading, "/health never answered 503 while the models were loading"
            return
        assert response.status_code == 503 and response.json()["status"] == "loading", response.text
        saw_loading = True
        time.sleep(1.0)
    pytest.fail(f"livedub sts not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n{log_path.read_text()[-3000:]}")


def test_health_says_where_each_model_runs(sts_url: str) -> None:
    """/health's `devices`: Whisper, the LLM, the voices and the speaker embedder, each on the CPU here (no CUDA
    device on this machine: STS_DEVICE=auto takes the CPU path, and says why)."""
    devices = httpx.get(f"{sts_url}/health", timeout=5).json()["devices"]
    roles = {model.split()[0] for model in devices}
    assert {"asr", "llm", "tts", "speaker"} <= roles, devices
    for model, report in devices.items():
        assert report["device"] == "cpu" and report["reason"] == "no CUDA device", (model, report)
    [whisper] = [report for model, report in devices.items() if model.startswith("asr ")]
    assert whisper["detail"] == "int8"


def content_words(text: str, language: str) -> set[str]:
    folded = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return {w for w in re.findall(r"[a-z]+", folded) if len(w) >= 3 and w not in STOPWORDS[language]}


def _fragment_payload(stream_id: str, seq: int, clip: SpeechClip, fmt: AudioFormat, rate: int) -> dict[str, object]:
    audio = resample(clip.audio, clip.sample_rate, rate)
    payload = mono_payload(audio, rate, fmt)
    return {
        "fragment_id": f"{stream_id}-{seq}",
        "stream_id": stream_id,
        "sequence_number": seq,
        "audio": payload.to_wire(),
    }


@pytest.fixture(scope="module")
def round_trip_asr(sts_url: str) -> WhisperASR:
    """The same Whisper model the server uses, loaded once more here to transcribe the dubs."""
    from livedub.dubbing.model_files import resolve_model_dir
    from livedub.sts.settings import StsSettings

    model_dir = resolve_model_dir(StsSettings(_env_file=None).asr_model)  # type: ignore[call-arg]
    return WhisperASR(model_dir, device="cpu", beam_size=5, vad=True, cpu_threads=2)


@pytest.mark.parametrize(
    ("source", "target", "fmt", "rate"),
    [("en", "es", AudioFormat.PCM_S16LE, 16000), ("es", "en", AudioFormat.M4A, 48000)],
    ids=["en-es-pcm", "es-en-m4a"],
)
async def test_real_speech_is_dubbed_and_says_the_translation(
    sts_url: str, round_trip_asr: WhisperASR, source: str, target: str, fmt: AudioFormat, rate: int
) -> None:
    clips = speech_clips(source, 6.0, reference_language=target, limit=FRAGMENTS_PER_DIRECTION)
    assert len(clips) == FRAGMENTS_PER_DIRECTION
    stream_id = f"real-{source}-{target}"
    client = await Recorder().connect(sts_url)
    await client.emit(
        "stream:init",
        init_payload(
            stream_id,
            source_language=source,
            target_language=target,
            format=fmt.value,
            sample_rate_hz=rate,
            timeout_ms=120000,
        ),
    )
    ready = await client.next_event("stream:ready", 0, within_s=30)
    assert ready["capabilities"]["models"]["warm"] is True
    for seq, clip in enumerate(clips):
        await client.emit("fragment:data", _fragment_payload(stream_id, seq, clip, fmt, rate))
    processed = [
        FragmentProcessed.model_validate(p) for p in await client.count("fragment:processed", len(clips), within_s=300)
    ]
    await client.emit("stream:end", {"stream_id": stream_id})
    complete = await client.next_event("stream:complete", 0, within_s=60)
    await client.close()

    assert [p.sequence_number for p in processed] == list(range(len(clips)))
    assert complete["total_fragments"] == len(clips)
    for clip, result in zip(clips, processed, strict=True):
        assert result.status.value in {"success", "partial"}, result.error
        assert result.dubbed_audio is not None and result.transcript and result.translated_text
        # The ASR heard the prompt...
        heard = content_words(result.transcript, source)
        said = content_words(clip.text, source)
        assert len(heard & said) >= 0.5 * len(said), (clip.text, result.transcript)
        # ...and the dub says the translation: transcribe it again in the target language.
        dub = result.dubbed_audio
        assert (dub.format, dub.sample_rate_hz) == (fmt, rate)
        audio = decode_audio(dub.decode_bytes(), dub.format, dub.sample_rate_hz, dub.channels, 16000)
        assert abs(len(audio) / 16000 - clip.duration_s) < 0.1 * clip.duration_s
        assert float(np.sqrt(np.mean(audio**2))) > 0.01, "the dub is silent"
        round_trip = round_trip_asr.transcribe(audio, target).text
        expected = content_words(result.translated_text, target)
        shared = expected & content_words(round_trip, target)
        print(
            f"[{source}->{target}] heard {result.transcript!r}\n  translated {result.translated_text!r}\n"
            f"  dub heard as {round_trip!r}\n  shared {len(shared)}/{len(expected)} content words"
        )
        assert expected, result.translated_text
        assert len(shared) >= 0.4 * len(expected), (result.translated_text, round_trip)
