"""Resolve a model setting that is either a path or the name of a model in the livedub cache."""

from __future__ import annotations

import os
from pathlib import Path

from livedub.models import MODELS, model_path


def resolve_model(value: str) -> Path:
    """A path as given when it exists, else the main file of the cache model named `value`.

    Raises livedub.models.ModelMissingError (with the install command) for a cache name that is not installed,
    FileNotFoundError for anything else.
    """
    path = Path(value).expanduser()
    if path.exists():
        return path
    if value in MODELS:
        return model_path(value)
    raise FileNotFoundError(f"model {value!r} is neither an existing path nor a known cache name ({', '.join(MODELS)})")


def resolve_model_dir(value: str) -> Path:
    """Like `resolve_model`, for models that are a directory (CTranslate2 Whisper, Kokoro)."""
    path = resolve_model(value)
    return path if path.is_dir() else path.parent


def cpu_threads(configured: int, workers: int = 1) -> int:
    """Threads for one model's inference: the setting, or when it is 0 the cores shared out among the `workers`
    inference threads (phrases in different stages run at once, each model on its share of the cores)."""
    return configured if configured > 0 else max(1, (os.cpu_count() or 1) // max(1, workers))
