"""Where each model runs (livedub.dubbing.device): the setting resolved against fake probes, the CPU fallback when a
load on the GPU fails (a fake out of memory), each backend loading through it with its library faked, the STS
settings mapped, and /health's report. No GPU is needed: the probes and the loads are stand-ins."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livedub.dubbing import device as dev
from livedub.dubbing.device import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    LlamaDevice,
    OnnxDevice,
    Probes,
    WhisperDevice,
    device_plan,
    load_placed,
    onnx_session,
    placements,
    resolve,
)

pytestmark = pytest.mark.unit

GPU_MACHINE = Probes(cuda_devices=1, llama_gpu_offload=True, onnx_providers=(CUDA_PROVIDER, CPU_PROVIDER))
CPU_MACHINE = Probes(cuda_devices=0, llama_gpu_offload=False, onnx_providers=(CPU_PROVIDER,))
OUT_OF_MEMORY = "CUDA failed with error out of memory"


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    """Each test probes and records from scratch (the module caches its probes once per process)."""
    dev.probe.cache_clear()
    device_plan.cache_clear()
    dev.forget_placements()
    yield
    dev.probe.cache_clear()
    device_plan.cache_clear()
    dev.forget_placements()


# ---------------------------------------------------------------------------------------------------- resolution


def test_auto_on_a_gpu_machine_puts_every_model_on_cuda() -> None:
    plan = resolve("auto", GPU_MACHINE)
    assert (plan.whisper.device, plan.whisper.compute_type) == ("cuda", "float16")
    assert plan.llm.n_gpu_layers == -1 and plan.llm.device == "cuda"
    assert plan.onnx.providers == (CUDA_PROVIDER, CPU_PROVIDER) and plan.onnx.device == "cuda"
    assert resolve("cuda", GPU_MACHINE) == plan.__class__("cuda", plan.whisper, plan.llm, plan.onnx)


def test_auto_without_a_cuda_device_is_the_cpu_path() -> None:
    plan = resolve("auto", CPU_MACHINE)
    assert (plan.whisper.device, plan.whisper.compute_type) == ("cpu", "int8")
    assert plan.llm.n_gpu_layers == 0
    assert plan.onnx.providers == (CPU_PROVIDER,)
    assert {plan.whisper.reason, plan.llm.reason, plan.onnx.reason} == {"no CUDA device"}


def test_cpu_never_touches_the_gpu_even_where_there_is_one() -> None:
    plan = resolve("cpu", GPU_MACHINE)
    assert [plan.whisper.device, plan.llm.device, plan.onnx.device] == ["cpu", "cpu", "cpu"]
    assert "cpu" in plan.llm.reason


def test_a_library_without_cuda_leaves_its_model_on_the_cpu_with_the_reason() -> None:
    machine = Probes(cuda_devices=1, llama_gpu_offload=False, onnx_providers=(CPU_PROVIDER,))
    plan = resolve("auto", machine)
    assert plan.whisper.device == "cuda"  # CTranslate2 sees the device: Whisper goes there alone
    assert plan.llm.n_gpu_layers == 0 and "without GPU offload" in plan.llm.reason
    assert plan.onnx.providers == (CPU_PROVIDER,) and "onnxruntime-gpu" in plan.onnx.reason
    missing = Probes(1, False, (CPU_PROVIDER,), llama_missing="llama_cpp not importable (no module)")
    assert resolve("auto", missing).llm.reason == "llama_cpp not importable (no module)"


def test_cuda_asked_for_without_a_device_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    plan = resolve("cuda", CPU_MACHINE)
    assert plan.whisper.device == "cpu" and "no CUDA device is visible" in plan.whisper.reason
    dev.probe.cache_clear()
    with pytest.MonkeyPatch.context() as mp, caplog.at_level(logging.INFO, logger=dev.__name__):
        mp.setattr(dev, "probe", lambda: CPU_MACHINE)
        device_plan("cuda")
        device_plan("auto")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3 and all("device cuda" in r.getMessage() for r in warned)  # auto: info only


# ---------------------------------------------------------------------------------------------------- the probes


def test_the_probes_ask_the_libraries_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctranslate2
    import onnxruntime

    calls: list[str] = []

    def count() -> int:
        calls.append("cuda")
        return 2

    fake_llama = type(sys)("llama_cpp")
    fake_llama.llama_supports_gpu_offload = lambda: True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", fake_llama)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", count)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    plan = device_plan("auto")
    assert device_plan("auto") is plan and calls == ["cuda"]  # resolved once
    assert plan.whisper.device == "cuda" and plan.llm.n_gpu_layers == -1 and plan.onnx.device == "cuda"
    assert "2 CUDA device(s)" in plan.whisper.reason


def test_probes_of_a_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctranslate2

    def no_driver() -> int:
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", no_driver)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails: the `llm` extra not installed
    probes = dev.probe()
    assert probes.cuda_devices == 0 and probes.llama_gpu_offload is False and "llama_cpp" in probes.llama_missing


def test_this_machine_resolves_auto_to_the_cpu() -> None:
    """The real probes (no GPU where this was written): auto is the CPU path, and says why."""
    if dev.probe().cuda_devices:
        pytest.skip("a CUDA device is present: the GPU path is the one to check here")
    plan = device_plan("auto")
    assert plan.llm.reason == "no CUDA device"
    assert [plan.whisper.device, plan.llm.device, plan.onnx.device] == ["cpu", "cpu", "cpu"]


# ---------------------------------------------------------------------------------------------------- fallback


def test_out_of_memory_on_the_gpu_loads_on_the_cpu_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    tried: list[str] = []

    def load(placed: LlamaDevice) -> str:
        tried.append(placed.device)
        if placed.device == "cuda":
            raise RuntimeError(OUT_OF_MEMORY)
        return "model"

    with caplog.at_level(logging.WARNING, logger=dev.__name__):
        model, placed = load_placed("llm test", LlamaDevice(-1, "1 CUDA device(s)"), load)
    assert model == "model" and tried == ["cuda", "cpu"]
    assert placed.n_gpu_layers == 0 and "out of memory" in placed.reason
    assert "out of memory" in caplog.text
    assert placements() == {"llm test": {"device": "cpu", "detail": "n_gpu_layers=0", "reason": placed.reason}}


def test_a_gpu_load_that_works_is_recorded_on_cuda_and_a_cpu_failure_raises() -> None:
    _, placed = load_placed("asr x", WhisperDevice("cuda", "1 CUDA device(s)"), lambda d: d.device)
    assert placed.device == "cuda"
    assert placements()["asr x"] == {"device": "cuda", "detail": "float16", "reason": "1 CUDA device(s)"}

    def broken(_placed: WhisperDevice) -> None:
        raise FileNotFoundError("no model.bin")

    with pytest.raises(FileNotFoundError):  # on the CPU there is nowhere to fall back to: as before
        load_placed("asr y", WhisperDevice("cpu", "no CUDA device"), broken)
    assert "asr y" not in placements()


class FakeSession:
    def __init__(self, path: Any, options: Any = None, providers: list[str] | None = None) -> None:
        if CUDA_PROVIDER in (providers or []) and "oom" in str(path):
            raise RuntimeError(OUT_OF_MEMORY)
        # onnxruntime drops a provider it cannot start; "dropped" in the path plays that.
        self.providers = [p for p in providers or [] if "dropped" not in str(path) or p != CUDA_PROVIDER]

    def get_providers(self) -> list[str]:
        return self.providers


@pytest.mark.parametrize(
    ("path", "device", "reason"),
    [
        ("model.onnx", "cuda", "2 CUDA device(s)"),
        ("oom.onnx", "cpu", "out of memory"),
        ("dropped.onnx", "cpu", "could not start CUDAExecutionProvider"),
    ],
)
def test_onnx_sessions_report_where_they_run(
    monkeypatch: pytest.MonkeyPatch, path: str, device: str, reason: str
) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    session, placed = onnx_session("tts k", path, None, OnnxDevice((CUDA_PROVIDER, CPU_PROVIDER), "2 CUDA device(s)"))
    assert placed.device == device and reason in placed.reason
    assert placements()["tts k"]["device"] == device
    assert (CUDA_PROVIDER in session.get_providers()) == (device == "cuda")


# ---------------------------------------------------------------------------------------------------- backends


def test_whisper_out_of_memory_falls_back_to_int8_on_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import faster_whisper

    from livedub.dubbing.asr import whisper

    loads: list[tuple[str, str]] = []

    class FakeWhisperModel:
        def __init__(self, path: str, device: str, compute_type: str, **_kwargs: Any) -> None:
            loads.append((device, compute_type))
            if device == "cuda":
                raise RuntimeError(OUT_OF_MEMORY)

    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeWhisperModel)
    (tmp_path / "model.bin").write_bytes(b"")
    asr = whisper.WhisperASR(tmp_path, WhisperDevice("cuda", "1 CUDA device(s)"))
    assert loads == [("cuda", "float16"), ("cpu", "int8")]
    assert asr.device == "cpu" and asr.name.endswith(":cpu") and "out of memory" in asr.placement.reason
    assert placements()[f"asr {tmp_path.name}"]["device"] == "cpu"


def test_whisper_takes_a_setting_through_the_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import faster_whisper

    from livedub.dubbing.asr import whisper

    loads: list[tuple[str, str]] = []

    class FakeWhisperModel:
        def __init__(self, path: str, device: str, compute_type: str, **_kwargs: Any) -> None:
            loads.append((device, compute_type))

    monkeypatch.setattr(faster_whisper, "WhisperModel", FakeWhisperModel)
    monkeypatch.setattr(dev, "probe", lambda: GPU_MACHINE)
    (tmp_path / "model.bin").write_bytes(b"")
    assert whisper.WhisperASR(tmp_path, "auto").device == "cuda"
    assert whisper.WhisperASR(tmp_path, "cpu").device == "cpu"
    assert loads == [("cuda", "float16"), ("cpu", "int8")]


def test_the_llm_offloads_every_layer_and_falls_back_when_the_gpu_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from livedub.dubbing.translate.llm import LlmTranslator

    layers: list[int] = []

    class FakeLlama:
        def __init__(self, model_path: str, n_gpu_layers: int, **_kwargs: Any) -> None:
            layers.append(n_gpu_layers)
            if n_gpu_layers and "big" in model_path:
                raise ValueError(f"Failed to load model from file: {model_path}")  # llama.cpp's words for OOM

    fake_llama = type(sys)("llama_cpp")
    fake_llama.Llama = FakeLlama  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", fake_llama)
    for name in ("small.gguf", "big.gguf"):
        (tmp_path / name).write_bytes(b"")
    on_gpu = LlamaDevice(-1, "1 CUDA device(s)")
    assert LlmTranslator(tmp_path / "small.gguf", device=on_gpu).placement.device == "cuda"
    big = LlmTranslator(tmp_path / "big.gguf", device=on_gpu)
    assert layers == [-1, -1, 0]
    assert big.placement.n_gpu_layers == 0 and "Failed to load model" in big.placement.reason


def test_kokoro_loads_on_the_onnx_plan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import onnxruntime

    from livedub.dubbing.tts.kokoro import MODEL_FILE, KokoroTTS

    monkeypatch.setattr(onnxruntime, "InferenceSession", FakeSession)
    (tmp_path / MODEL_FILE).write_bytes(b"")
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 1}))
    np.savez(tmp_path / "voices.npz", af=np.zeros((510, 1, 256), np.float32))
    on_gpu = OnnxDevice((CUDA_PROVIDER, CPU_PROVIDER), "1 CUDA device(s)")
    assert KokoroTTS(tmp_path, device=on_gpu).placement.device == "cuda"
    assert KokoroTTS(tmp_path, device="cpu").placement.providers == (CPU_PROVIDER,)


def test_piper_asks_for_cuda_and_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import piper

    from livedub.dubbing.tts.piper import PiperTTS

    class FakeVoice:
        config = type("Config", (), {"sample_rate": 22050, "espeak_voice": "es", "length_scale": 1.0})()

        def __init__(self, providers: list[str]) -> None:
            self.session = FakeSession("voice.onnx", None, providers)

    asked: list[bool] = []

    def load(path: Path, use_cuda: bool = False) -> FakeVoice:
        asked.append(use_cuda)
        if use_cuda and "big" in path.name:
            raise RuntimeError(OUT_OF_MEMORY)
        return FakeVoice([CUDA_PROVIDER, CPU_PROVIDER] if use_cuda else [CPU_PROVIDER])

    monkeypatch.setattr(piper.PiperVoice, "load", load)
    for name in ("small.onnx", "big.onnx"):
        (tmp_path / name).write_bytes(b"")
    on_gpu = OnnxDevice((CUDA_PROVIDER, CPU_PROVIDER), "1 CUDA device(s)")
    assert PiperTTS(tmp_path / "small.onnx", on_gpu).placement.device == "cuda"
    big = PiperTTS(tmp_path / "big.onnx", on_gpu)
    assert asked == [True, True, False] and big.placement.device == "cpu" and "out of memory" in big.placement.reason
    assert placements()["tts piper:big"]["device"] == "cpu"


def test_the_real_embedder_asked_for_cuda_on_a_cpu_onnxruntime_reports_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real onnxruntime here has no CUDA provider: asked for it, the session comes up on the CPU alone and says
    so; and a GPU load that runs out of memory (faked) comes back on the CPU with the real model."""
    import onnxruntime

    from livedub.dubbing.speaker import EmbedderMissingError, SpeakerEmbedder

    on_gpu = OnnxDevice((CUDA_PROVIDER, CPU_PROVIDER), "1 CUDA device(s)")
    try:
        embedder = SpeakerEmbedder(device=on_gpu)
    except EmbedderMissingError as exc:
        pytest.skip(str(exc))
    assert embedder.placement.device == "cpu" and "could not start" in embedder.placement.reason
    speech = np.sin(2 * np.pi * 150 * np.arange(32000) / 16000).astype(np.float32) * 0.3
    assert embedder.embed(speech, 16000) is not None  # it works on the CPU

    real_session = onnxruntime.InferenceSession

    def out_of_memory_on_cuda(path: Any, options: Any = None, providers: list[str] | None = None) -> Any:
        if CUDA_PROVIDER in (providers or []):
            raise RuntimeError(OUT_OF_MEMORY)
        return real_session(path, options, providers=providers)

    monkeypatch.setattr(onnxruntime, "InferenceSession", out_of_memory_on_cuda)
    embedder = SpeakerEmbedder(device=on_gpu)
    assert embedder.placement.providers == (CPU_PROVIDER,) and "out of memory" in embedder.placement.reason
    assert placements()[f"speaker {embedder.name}"]["device"] == "cpu"


# ---------------------------------------------------------------------------------------------------- STS


def test_sts_device_reaches_every_backend_and_asr_device_overrides_whisper() -> None:
    from livedub.sts.backends import engine_settings
    from livedub.sts.settings import StsSettings

    settings = engine_settings(StsSettings(STS_DEVICE="cpu", _env_file=None))  # type: ignore[call-arg]
    assert settings.asr.device == "cpu"
    assert [settings.backends[name].device for name in ("llm", "kokoro", "piper")] == ["cpu", "cpu", "cpu"]
    both = engine_settings(StsSettings(STS_DEVICE="cpu", STS_ASR_DEVICE="cuda", _env_file=None))  # type: ignore[call-arg]
    assert both.asr.device == "cuda" and both.backends["llm"].device == "cpu"
    assert engine_settings(StsSettings(_env_file=None)).asr.device == "auto"  # type: ignore[call-arg]


def test_health_reports_where_each_model_runs() -> None:
    from fastapi.testclient import TestClient

    from livedub.sts.pipeline import EchoPipeline
    from livedub.sts.server import create_app
    from livedub.sts.settings import StsSettings

    def out_of_memory_on_cuda(placed: LlamaDevice) -> str:
        if placed.device == "cuda":
            raise MemoryError("cudaMalloc failed: out of memory")
        return "model"

    load_placed("llm test", LlamaDevice(-1, "1 CUDA device(s)"), out_of_memory_on_cuda)
    with TestClient(create_app(EchoPipeline(), StsSettings(_env_file=None))) as client:  # type: ignore[call-arg]
        for _ in range(100):
            response = client.get("/health")
            if response.status_code == 200:
                break
            time.sleep(0.05)
    assert response.status_code == 200
    [(model, report)] = response.json()["devices"].items()
    assert model == "llm test" and report["device"] == "cpu" and "MemoryError" in report["reason"]
