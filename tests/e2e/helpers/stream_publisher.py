"""Publishing a file over RTMP in real time (ffmpeg `-re`, packets copied) and recording a stream."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from livedub.analysis.recorder import StreamRecorder
from livedub.stack import FilePublisher, Stack

__all__ = ["FilePublisher", "Publication", "StreamRecorder", "publish_file"]


@dataclass
class Publication:
    stream_id: str
    source: Path
    input_url: str
    output_url: str
    publisher: FilePublisher
    started_at: float  # time.monotonic()

    def wait(self, timeout: float | None = None) -> int:
        return self.publisher.wait(timeout)

    def stop(self) -> None:
        self.publisher.stop()


def publish_file(stack: Stack, stream_id: str, source: Path, log_dir: Path) -> Publication:
    """Start publishing `source` to the stack's input URL for `stream_id`; returns at once."""
    input_url = stack.input_url(stream_id)
    publisher = FilePublisher(source, input_url, log_dir / f"publisher-{stream_id}.log").start()
    return Publication(stream_id, source, input_url, stack.output_url(stream_id), publisher, time.monotonic())
