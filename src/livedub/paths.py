"""Where livedub keeps its model cache and runtime files."""

from __future__ import annotations

import os
from pathlib import Path


def livedub_home() -> Path:
    """`LIVEDUB_HOME`, default `~/.cache/livedub`."""
    env = os.environ.get("LIVEDUB_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "livedub"


def model_cache_dir() -> Path:
    return livedub_home() / "models"


def runtime_dir() -> Path:
    """Generated configs, pid files and logs of the processes livedub starts."""
    path = livedub_home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path
