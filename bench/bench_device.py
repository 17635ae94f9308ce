"""The benchmarks' `--device auto|cpu|cuda`: the STS's device setting (STS_DEVICE), resolved as the STS resolves it.

The setting goes into the STS settings that the benchmark builds its models from, and each model resolves it through
`livedub.dubbing.device` (once per process, one plan for all models), as `livedub.sts.backends` does for the STS;
Whisper takes STS_ASR_DEVICE where that names a device (`livedub.sts.backends.asr_device`).
"""

from __future__ import annotations

import argparse
from typing import get_args

from livedub.dubbing.device import DeviceSetting, placements
from livedub.sts.settings import StsSettings


def add_device_option(parser: argparse.ArgumentParser, settings: StsSettings) -> None:
    parser.add_argument(
        "--device",
        choices=get_args(DeviceSetting),
        default=settings.device,
        help="where the models run, as STS_DEVICE (default: STS_DEVICE's, now %(default)s)",
    )


def with_device(settings: StsSettings, device: DeviceSetting) -> StsSettings:
    """`settings` with the device setting of `--device`."""
    return settings.model_copy(update={"device": device})


def placed_models() -> str:
    """Where each model loaded in this process runs, for a report's header."""
    return ", ".join(f"{model} on {p['device']} ({p['detail']})" for model, p in placements().items()) or "no model"
