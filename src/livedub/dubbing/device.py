"""Where each model runs: one device setting (`auto`, `cpu`, `cuda`) resolved once into a typed value per model
library, and a load that falls back to the CPU when the GPU cannot take the model.

    plan = device_plan("auto")          # probes the machine once per process; one plan per setting
    plan.whisper                        # WhisperDevice("cuda", "float16", ...) or ("cpu", "int8", ...)
    plan.llm                            # LlamaDevice(n_gpu_layers=-1 | 0, ...)
    plan.onnx                           # OnnxDevice(("CUDAExecutionProvider", "CPUExecutionProvider") | CPU only)
    model = load_placed("asr ...", plan.whisper, lambda device: load(device))

`auto` picks CUDA when a CUDA device is present (CTranslate2 counts them) and the model's library can use it
(llama.cpp built with GPU offload, onnxruntime with its CUDA provider); `cuda` is the same with a warning for each
model left on the CPU (a GPU was expected); `cpu` never touches the GPU. A model whose library lacks CUDA,
or whose load on the GPU fails (out of memory, device gone), is loaded on the CPU with the reason logged and kept:
`placements()` lists every model loaded in this process and where it runs (the STS's /health shows it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Literal, Protocol, Self, TypeVar

log = logging.getLogger(__name__)

DeviceSetting = Literal["auto", "cpu", "cuda"]
Device = Literal["cpu", "cuda"]

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Probes:
    """What this machine and the installed libraries offer."""

    cuda_devices: int  # CUDA devices CTranslate2 sees (0: none, or no driver)
    llama_gpu_offload: bool  # the installed llama_cpp was built with a GPU backend
    onnx_providers: tuple[str, ...]  # onnxruntime's available execution providers
    llama_missing: str = ""  # why llama_cpp could not be asked (not installed), "" when it was


@dataclass(frozen=True)
class WhisperDevice:
    """faster-whisper's device and compute type: float16 on CUDA, int8 on the CPU."""

    device: Device
    reason: str

    @property
    def compute_type(self) -> str:
        return "float16" if self.device == "cuda" else "int8"

    @property
    def detail(self) -> str:
        return self.compute_type

    def on_cpu(self, reason: str) -> Self:
        return replace(self, device="cpu", reason=reason)


@dataclass(frozen=True)
class LlamaDevice:
    """llama.cpp's layers offloaded to the GPU: -1 all of them, 0 none (the CPU)."""

    n_gpu_layers: int
    reason: str

    @property
    def device(self) -> Device:
        return "cuda" if self.n_gpu_layers else "cpu"

    @property
    def detail(self) -> str:
        return f"n_gpu_layers={self.n_gpu_layers}"

    def on_cpu(self, reason: str) -> Self:
        return replace(self, n_gpu_layers=0, reason=reason)


@dataclass(frozen=True)
class OnnxDevice:
    """onnxruntime's execution providers, first preferred (the CPU one always last, for the ops CUDA lacks)."""

    providers: tuple[str, ...]
    reason: str

    @property
    def device(self) -> Device:
        return "cuda" if CUDA_PROVIDER in self.providers else "cpu"

    @property
    def detail(self) -> str:
        return ",".join(self.providers)

    def on_cpu(self, reason: str) -> Self:
        return replace(self, providers=(CPU_PROVIDER,), reason=reason)


WHISPER_CPU = WhisperDevice("cpu", "the device setting is cpu")
LLAMA_CPU = LlamaDevice(0, "the device setting is cpu")
ONNX_CPU = OnnxDevice((CPU_PROVIDER,), "the device setting is cpu")


@dataclass(frozen=True)
class DevicePlan:
    """One value per model library, from one setting."""

    setting: DeviceSetting
    whisper: WhisperDevice
    llm: LlamaDevice
    onnx: OnnxDevice


def resolve(setting: DeviceSetting, probes: Probes) -> DevicePlan:
    """The plan for `setting` on a machine that offers `probes` (pure: the tests give fake probes)."""
    if setting == "cpu":
        return DevicePlan(setting, WHISPER_CPU, LLAMA_CPU, ONNX_CPU)
    if probes.cuda_devices == 0:
        reason = "no CUDA device" if setting == "auto" else "the device setting is cuda, but no CUDA device is visible"
        return DevicePlan(setting, WHISPER_CPU.on_cpu(reason), LLAMA_CPU.on_cpu(reason), ONNX_CPU.on_cpu(reason))
    why_gpu = f"{probes.cuda_devices} CUDA device(s)"
    if probes.llama_gpu_offload:
        llm = LlamaDevice(-1, why_gpu)
    else:
        llm = LlamaDevice(0, probes.llama_missing or "llama_cpp is built without GPU offload (a CPU build)")
    if CUDA_PROVIDER in probes.onnx_providers:
        onnx = OnnxDevice((CUDA_PROVIDER, CPU_PROVIDER), why_gpu)
    else:
        onnx = OnnxDevice((CPU_PROVIDER,), "onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu not installed)")
    return DevicePlan(setting, WhisperDevice("cuda", why_gpu), llm, onnx)


def _cuda_devices() -> int:
    import ctranslate2

    try:
        return int(ctranslate2.get_cuda_device_count())
    except RuntimeError:  # a CUDA build without a usable driver
        return 0


def _llama_gpu_offload() -> tuple[bool, str]:
    try:
        import llama_cpp
    except ImportError as exc:  # the optional `llm` extra is not installed
        return False, f"llama_cpp not importable ({exc})"
    return bool(llama_cpp.llama_supports_gpu_offload()), ""


def _onnx_providers() -> tuple[str, ...]:
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


@cache
def probe() -> Probes:
    """The machine's probes, asked once per process."""
    offload, missing = _llama_gpu_offload()
    probes = Probes(_cuda_devices(), offload, _onnx_providers(), missing)
    log.info("device probes: %s", probes)
    return probes


@cache
def device_plan(setting: DeviceSetting) -> DevicePlan:
    """The plan of `setting` on this machine, resolved once per setting and process."""
    plan = resolve(setting, probe())
    for library, device in (("whisper", plan.whisper), ("llm", plan.llm), ("onnx", plan.onnx)):
        # Asked for CUDA and not getting it is worth a warning; `auto` on a machine without a GPU is not.
        level = logging.WARNING if setting == "cuda" and device.device == "cpu" else logging.INFO
        log.log(level, "device %s: %s on %s (%s)", setting, library, device.device, device.reason)
    return plan


# ---------------------------------------------------------------------------------------------------- placement


class ModelDevice(Protocol):
    @property
    def device(self) -> Device: ...

    @property
    def reason(self) -> str: ...

    @property
    def detail(self) -> str: ...

    def on_cpu(self, reason: str) -> Self: ...


D = TypeVar("D", bound=ModelDevice)
M = TypeVar("M")


@dataclass(frozen=True)
class Placement:
    """Where one loaded model runs, and why there."""

    device: Device
    detail: str  # compute type, layers offloaded, providers
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"device": self.device, "detail": self.detail, "reason": self.reason}


_placements: dict[str, Placement] = {}
_placements_lock = threading.Lock()


def record(model: str, device: ModelDevice) -> None:
    """Note where `model` runs (the last load of a name wins)."""
    with _placements_lock:
        _placements[model] = Placement(device.device, device.detail, device.reason)


def placements() -> dict[str, dict[str, str]]:
    """Every model loaded in this process: its device, the detail and why (for /health)."""
    with _placements_lock:
        return {model: placement.as_dict() for model, placement in sorted(_placements.items())}


def forget_placements() -> None:
    """Tests: start from no model loaded."""
    with _placements_lock:
        _placements.clear()


def load_placed(model: str, wanted: D, load: Callable[[D], M]) -> tuple[M, D]:
    """`load(wanted)`; when that fails on the GPU (out of memory, device gone, CUDA libraries missing), the error is
    logged and the model loaded on the CPU instead: a model on the CPU is slower, a dead STS serves nobody. A load
    that fails on the CPU raises as before. Returns the model and the device it runs on (recorded)."""
    if wanted.device == "cpu":
        loaded = load(wanted)
        record(model, wanted)
        return loaded, wanted
    try:
        loaded = load(wanted)
    except Exception as exc:  # whatever the library raises for a GPU it cannot use: the CPU is the way out
        fallback = wanted.on_cpu(f"loading on {wanted.device} failed ({type(exc).__name__}: {exc}); on the CPU")
        log.warning("%s: %s", model, fallback.reason)
        loaded = load(fallback)
        record(model, fallback)
        return loaded, fallback
    record(model, wanted)
    return loaded, wanted


def onnx_session(model: str, path: str, options: Any, wanted: OnnxDevice) -> tuple[Any, OnnxDevice]:
    """An onnxruntime session on `wanted`'s providers, with the CPU fallback of `load_placed`. onnxruntime itself
    drops a provider it cannot start (CUDA libraries missing) with no error: the session's own providers say where
    it runs, and such a session is reported on the CPU with that reason."""
    import onnxruntime as ort

    def load(device: OnnxDevice) -> Any:
        return ort.InferenceSession(path, options, providers=list(device.providers))

    session, placed = load_placed(model, wanted, load)
    if placed.device == "cuda" and CUDA_PROVIDER not in session.get_providers():
        placed = placed.on_cpu("onnxruntime could not start CUDAExecutionProvider (CUDA/cuDNN libraries?); on the CPU")
        log.warning("%s: %s", model, placed.reason)
        record(model, placed)
    return session, placed


def as_device(given: DeviceSetting | D, of_plan: Callable[[DevicePlan], D]) -> D:
    """A backend's device: a resolved one as given, a setting through this machine's plan."""
    if isinstance(given, str):
        return of_plan(device_plan(given))
    return given


__all__ = [
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "DevicePlan",
    "DeviceSetting",
    "LlamaDevice",
    "OnnxDevice",
    "Placement",
    "Probes",
    "WhisperDevice",
    "as_device",
    "device_plan",
    "forget_placements",
    "load_placed",
    "onnx_session",
    "placements",
    "probe",
    "record",
    "resolve",
]
