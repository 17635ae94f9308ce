"""`livedub up --public`: what the stack hands the media-service and the media server (issue 9, items 1 and 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livedub.stack import Stack, StackConfig

pytestmark = pytest.mark.unit


def specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **cfg: object) -> dict[str, tuple[list[str], dict]]:
    for name in ("PUBLISH_KEY", "MEDIA_API_TOKEN", "MEDIA_HOST"):
        monkeypatch.delenv(name, raising=False)
    stack = Stack(StackConfig(log_dir=tmp_path, **cfg))  # type: ignore[arg-type]
    return {name: (argv, env) for name, argv, env, _, _ in stack._spec()}


def test_a_local_stack_binds_loopback_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = specs(tmp_path, monkeypatch)
    argv, _ = spec["media-server"]
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    _, env = spec["media"]
    assert env["MEDIA_HOST"] == "127.0.0.1"
    assert "PUBLISH_KEY" not in env and "MEDIA_API_TOKEN" not in env


def test_a_public_stack_gets_a_publish_key_and_an_api_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = specs(tmp_path, monkeypatch, bind_public=True)
    argv, _ = spec["media-server"]
    assert argv[argv.index("--bind") + 1] == "0.0.0.0"
    _, env = spec["media"]
    assert env["MEDIA_HOST"] == "0.0.0.0"
    # Without a key nobody but loopback could publish: the stack makes one up (and prints it).
    assert len(env["PUBLISH_KEY"]) >= 16 and len(env["MEDIA_API_TOKEN"]) >= 32
    assert env["PUBLISH_KEY"] != env["MEDIA_API_TOKEN"]


def test_a_public_stack_keeps_the_operators_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MEDIA_HOST",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PUBLISH_KEY", "mine")
    monkeypatch.setenv("MEDIA_API_TOKEN", "tok")
    stack = Stack(StackConfig(log_dir=tmp_path, bind_public=True))
    [env] = [env for name, _, env, _, _ in stack._spec() if name == "media"]
    assert (env["PUBLISH_KEY"], env["MEDIA_API_TOKEN"]) == ("mine", "tok")
