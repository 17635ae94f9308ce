"""The cue log and its follower (the captions / phrases SSE endpoints read through `follow`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from livedub.media.outputs.captions import CAPTIONS_FILE, PHRASES_FILE, CueLog, follow, mark_ended, sse_event

pytestmark = pytest.mark.unit


def test_cue_log_writes_one_json_line_per_record(tmp_path: Path) -> None:
    log = CueLog(tmp_path)
    log.cue(sequence=3, language="es", kind="translation", start_s=1.23456, end_s=2.5, text="hola")
    log.phrase({"sequence": 3, "language": "es", "status": "dubbed", "stage_ms": {"asr": 120}})
    log.close()
    (cue,) = [json.loads(line) for line in (tmp_path / CAPTIONS_FILE).read_text().splitlines()]
    assert cue == {
        "sequence": 3,
        "language": "es",
        "kind": "translation",
        "start_s": 1.235,
        "end_s": 2.5,
        "text": "hola",
    }
    (phrase,) = [json.loads(line) for line in (tmp_path / PHRASES_FILE).read_text().splitlines()]
    assert phrase["status"] == "dubbed" and phrase["stage_ms"] == {"asr": 120}
    assert (tmp_path / "ended").exists()
    CueLog(tmp_path).close()  # a new run starts empty
    assert (tmp_path / CAPTIONS_FILE).read_text() == ""


async def test_follow_tails_until_ended(tmp_path: Path) -> None:
    log = CueLog(tmp_path)
    got: list[dict] = []

    async def reader() -> None:
        async for obj in follow(tmp_path / CAPTIONS_FILE, poll_s=0.01):
            got.append(obj)

    task = asyncio.create_task(reader())
    log.cue(sequence=0, language="en", kind="source", start_s=0.0, end_s=1.0, text="a")
    await asyncio.sleep(0.05)
    assert [o["text"] for o in got] == ["a"]
    log.cue(sequence=1, language="en", kind="source", start_s=1.0, end_s=2.0, text="b")
    log.close()
    await asyncio.wait_for(task, 2.0)
    assert [o["text"] for o in got] == ["a", "b"]


async def test_follow_waits_for_the_file_skips_partial_lines_and_restarts_on_truncation(tmp_path: Path) -> None:
    path = tmp_path / PHRASES_FILE
    it = follow(path, poll_s=0.01, idle_s=1.0)
    first = asyncio.ensure_future(it.__anext__())
    await asyncio.sleep(0.03)
    assert not first.done()  # no file yet
    with path.open("w") as f:
        f.write('{"sequence": 1}\n{"sequence"')  # the second line is not whole yet
    assert (await asyncio.wait_for(first, 1.0)) == {"sequence": 1}
    with path.open("a") as f:
        f.write(": 2}\n")
    assert (await asyncio.wait_for(it.__anext__(), 1.0)) == {"sequence": 2}
    path.write_text('{"sequence": 7}\n')  # a new run: shorter file
    assert (await asyncio.wait_for(it.__anext__(), 1.0)) == {"sequence": 7}
    mark_ended(tmp_path)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(it.__anext__(), 1.0)


async def test_follow_ends_after_idle(tmp_path: Path) -> None:
    (tmp_path / CAPTIONS_FILE).write_text("")
    got = [o async for o in follow(tmp_path / CAPTIONS_FILE, poll_s=0.01, idle_s=0.05)]
    assert got == []


def test_sse_event() -> None:
    assert sse_event({"text": "¿qué?"}) == 'data: {"text":"¿qué?"}\n\n'


async def test_logs_rotate_by_size_and_a_follower_loses_no_record(tmp_path: Path) -> None:
    log = CueLog(tmp_path, rotate_bytes=200)
    got: list[dict[str, object]] = []

    async def tail() -> None:
        async for obj in follow(tmp_path / CAPTIONS_FILE, poll_s=0.005, idle_s=2.0):
            got.append(obj)

    task = asyncio.ensure_future(tail())
    for n in range(40):
        log.cue(sequence=n, language="es", kind="translation", start_s=n, end_s=n + 1, text=f"frase {n}")
        if n % 2 == 0:
            await asyncio.sleep(0.03)  # the follower reads across each rotation (each log holds 2 cues)
    log.close()
    await asyncio.wait_for(task, 3.0)
    assert [o["sequence"] for o in got] == list(range(40))
    sizes = _log_sizes(tmp_path)
    assert sorted(sizes) == [CAPTIONS_FILE, CAPTIONS_FILE + ".1"]  # bounded: the current log and the one before
    assert all(size <= 200 for size in sizes.values())


def _log_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in directory.iterdir() if p.name.startswith(CAPTIONS_FILE)}
