"""DNSMOS (P.835 SIG/BAK/OVRL) with the ONNX model shipped in the `speechmos` wheel, offline.

`speechmos.dnsmos` imports librosa (for its P.808 mel-spectrogram model) without declaring it; the P.835 model
needs only raw 16 kHz audio, so this runs that model directly with the package's own polynomial calibration.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
WINDOW_S = 9.01  # the model's input length; longer clips are scored per 1 s hop and averaged
# speechmos' calibration of the raw model outputs (non-personalised DNSMOS).
_CALIBRATION = {
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}


@cache
def _session():  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("install the speechmos package (it ships the DNSMOS ONNX models)")
    model = Path(next(iter(spec.submodule_search_locations))) / "dnsmos_models" / "sig_bak_ovr.onnx"
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def dnsmos_scores(audio: npt.NDArray[np.float32]) -> dict[str, float]:
    """Mean SIG, BAK and OVRL (1–5) of mono float audio at 16 kHz."""
    window = int(WINDOW_S * SAMPLE_RATE)
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) == 0:
        raise ValueError("no audio")
    while len(audio) < window:  # short clips are repeated, as speechmos does
        audio = np.concatenate([audio, audio])
    hops = int(len(audio) / SAMPLE_RATE - WINDOW_S) + 1
    raw = []
    for hop in range(hops):
        segment = audio[hop * SAMPLE_RATE : hop * SAMPLE_RATE + window]
        if len(segment) == window:
            raw.append(_session().run(None, {"input_1": segment[np.newaxis, :]})[0][0])
    sig, bak, ovrl = np.mean(raw, axis=0)
    return {
        "sig": float(_CALIBRATION["sig"](sig)),
        "bak": float(_CALIBRATION["bak"](bak)),
        "ovrl": float(_CALIBRATION["ovrl"](ovrl)),
    }
