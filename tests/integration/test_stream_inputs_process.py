"""A worker process whose stream inputs do not parse fails that stream with the reason, and the others go on."""

from __future__ import annotations

import asyncio

import pytest
from media_testkit import fresh_metrics, media_settings, process_fake_client, process_fake_runner, sample

from livedub.media.pipeline.plan import StreamInputs
from livedub.media.service.manager import WorkerManager

pytestmark = pytest.mark.integration


class Garbled(StreamInputs):
    """What a broken hand-off would send: the targets as the comma string they used to be."""

    def to_json(self) -> str:
        return '{"targets": "' + ",".join(self.targets) + '"}'


class GarblingManager(WorkerManager):
    def inputs_for(self, stream_id: str) -> StreamInputs:
        inputs = super().inputs_for(stream_id)
        return Garbled(targets=inputs.targets) if stream_id.startswith("bad") else inputs


async def test_a_malformed_value_fails_its_stream_only() -> None:
    manager = GarblingManager(
        media_settings(MAX_CONCURRENT_STREAMS=3, WORKER_TARGET_LANGUAGES="es,fr"),
        fresh_metrics(),
        runner_factory=process_fake_runner,
        client_factory=process_fake_client,
        stop_timeout_s=20,
    )
    try:
        for stream_id in ("ok", "bad-1"):
            assert (await manager.start_stream(stream_id)).accepted
        bad = manager.get("bad-1")
        assert bad is not None and bad.task is not None
        await asyncio.wait_for(asyncio.shield(bad.task), 20)
        states = {entry["stream_id"]: entry for entry in manager.list_streams()}
        assert states["bad-1"]["state"] == "failed"
        assert "StreamInputsError: stream bad-1: malformed stream inputs" in states["bad-1"]["error"]
        assert "targets: Input should be a valid array" in states["bad-1"]["error"]
        async with asyncio.timeout(20):
            while sample(manager.metrics_view, "segments_processed_total", stream_id="ok") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        ok = manager.get("ok")
        assert ok is not None and ok.active and states["ok"]["target_languages"] == ["es", "fr"]
    finally:
        await manager.shutdown()
    assert manager.active_count() == 0
