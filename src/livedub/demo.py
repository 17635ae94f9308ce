"""`livedub demo`: the whole chain on the sample fixture, start to finish, in one command.

Starts the media server, the STS service and the media-service; publishes the 60 s sample (human English speech)
in real time; records the dubbed output stream to `out/demo-dubbed.mp4`; prints how to watch it live and, at the
end, a report: each fragment's transcript and translation side by side, the added latency and the A/V offset.
Everything stops when it is done; Ctrl-C stops it cleanly at any time.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livedub.analysis.recorder import PacketInfo, StreamRecorder
from livedub.fixture import ensure_fixture
from livedub.mediaserver.urls import ffmpeg_rtmp_args
from livedub.observe import Metrics, ObservedEvent, StsMonitor
from livedub.stack import (
    FilePublisher,
    ServiceError,
    Stack,
    StackConfig,
    add_stack_arguments,
    config_from_args,
    free_ports,
    output_lines,
    port_open,
    remux,
    terminate_on_signals,
    wait_for_stream,
)


def _say(msg: str) -> None:
    print(f"[livedub] {msg}", flush=True)


def _free_if_busy(cfg: StackConfig) -> StackConfig:
    """Keep the default ports when they are free (stable URLs); otherwise pick free ones and say so."""
    ports = [cfg.rtmp_port, cfg.rtmp_http_port, cfg.media_port] + ([cfg.sts_port] if cfg.start_sts else [])
    if not any(port_open(p) for p in ports):
        return cfg
    cfg.rtmp_port, cfg.rtmp_http_port, cfg.sts_port, cfg.media_port = free_ports(4)
    _say(f"default ports busy (is `livedub up` running?): using RTMP {cfg.rtmp_port}, media {cfg.media_port}")
    return cfg


def _fragment_line(data: dict[str, Any]) -> str:
    seq = data.get("sequence_number")
    status = data.get("status")
    ms = data.get("processing_time_ms") or 0
    text = (data.get("transcript") or "").strip()
    translated = (data.get("translated_text") or "").strip()
    return f"  fragment {seq}: {status} in {ms / 1000:.1f}s | {text} -> {translated}"


def added_latency(inp: list[PacketInfo], out: list[PacketInfo]) -> tuple[float, float, int] | None:
    """(p50, p95, matched) of output minus input arrival time over the identical video packets of both paths."""
    arrivals = {p.digest: p.arrival for p in inp if p.kind == "video"}
    deltas = sorted(p.arrival - arrivals[p.digest] for p in out if p.kind == "video" and p.digest in arrivals)
    if not deltas:
        return None
    return statistics.median(deltas), deltas[min(len(deltas) - 1, int(0.95 * len(deltas)))], len(deltas)


def _metric(metrics: Metrics | None, name: str, **labels: str) -> float | None:
    if metrics is None or not metrics.has(name, **labels):
        return None
    return metrics.value(name, **labels)


def _report(
    processed: list[dict[str, Any]],
    media: Metrics | None,
    stream_id: str,
    output: Path | None,
    latency: tuple[float, float, int] | None,
) -> str:
    lines = ["", "=" * 100, "livedub demo report", "=" * 100]
    width = 46
    lines.append(f"{'#':>2}  {'status':<8} {'STS s':>5}  {'transcript (source)':<{width}}  translation (dub)")
    for data in processed:
        left = textwrap.wrap((data.get("transcript") or "").strip() or "-", width) or ["-"]
        right = textwrap.wrap((data.get("translated_text") or "").strip() or "-", width) or ["-"]
        for i in range(max(len(left), len(right))):
            head = (
                f"{data.get('sequence_number', '?'):>2}  {data.get('status', '?'):<8} "
                f"{(data.get('processing_time_ms') or 0) / 1000:>5.1f}  "
                if i == 0
                else " " * 23
            )
            lines.append(f"{head}{left[i] if i < len(left) else '':<{width}}  {right[i] if i < len(right) else ''}")
    counts: dict[str, int] = {}
    for data in processed:
        counts[str(data.get("status"))] = counts.get(str(data.get("status")), 0) + 1
    lines.append("")
    lines.append(f"fragments: {len(processed)} processed {counts}")
    times = [(d.get("processing_time_ms") or 0) / 1000 for d in processed]
    if times:
        lines.append(f"STS processing per fragment: median {statistics.median(times):.2f}s, max {max(times):.2f}s")
    if latency is not None:
        p50, p95, matched = latency
        lines.append(
            f"added latency (same video packet, input -> output arrival): p50 {p50:.2f}s, p95 {p95:.2f}s "
            f"over {matched} packets"
        )
    else:
        lines.append("added latency: not measured (no identical video packets seen on both paths)")
    if media is not None:
        count = _metric(media, "media_service_worker_av_sync_delta_abs_ms_count", stream_id=stream_id) or 0
        last = _metric(media, "media_service_worker_av_sync_delta_ms", stream_id=stream_id)
        if count:
            p95 = media.histogram_quantile("media_service_worker_av_sync_delta_abs_ms", 0.95, stream_id=stream_id)
            lines.append(
                f"A/V offset: last phrase {last:+.1f} ms; |offset| <= {p95:g} ms for 95% of {count:.0f} phrases"
            )
        speech = media.by_label("media_service_worker_speech_seconds_total", "outcome", stream_id=stream_id)
        if sum(speech.values()):
            share = speech.get("dubbed", 0.0) / sum(speech.values())
            lines.append(f"speech dubbed: {100 * share:.0f} % of {sum(speech.values()):.1f} s of speech")
        fallbacks = media.by_label("media_service_worker_fallbacks_total", "reason", stream_id=stream_id)
        if any(fallbacks.values()):
            lines.append(f"phrases that kept the original voice: {fallbacks}")
    if output is not None:
        lines.append(f"dubbed result: {output}  (play: ffplay {output})")
    lines.append("=" * 100)
    return "\n".join(lines)


@dataclass
class DemoRun:
    """One run of the demo: the stack, what watches it and what it produced."""

    stack: Stack
    sid: str
    out: Path
    monitor: StsMonitor | None = None
    recorder: StreamRecorder | None = None
    source_reader: StreamRecorder | None = None
    publisher: FilePublisher | None = None
    media_metrics: Metrics | None = None
    result: Path | None = None
    latency: tuple[float, float, int] | None = None

    @property
    def flv(self) -> Path:
        return self.out.with_suffix(".flv")

    def run(self, source: Path) -> int:
        """Start the stack, publish `source`, record the dubbed output to `out`; the exit code."""
        _say("starting the stack (the STS loads and warms its models first; this takes a while)")
        self.stack.start()
        self._watch_sts()
        recorder = self._start_recording()
        self._publish(source)
        _say("input finished; waiting for the output to play out")
        ended = recorder.stop_when_unpublished(
            self.stack.stat_url, timeout=60, should_abort=lambda: not recorder_alive(self.stack)
        )
        if not ended:
            _say("the output did not end cleanly; keeping what was recorded")
        return self._collect(recorder)

    def _watch_sts(self) -> None:
        def live(event: ObservedEvent) -> None:
            if event.name == "fragment:processed":
                print(_fragment_line(event.data), flush=True)

        self.monitor = StsMonitor(self.stack.sts_url, self.sid).start()
        self.monitor.listeners.append(live)

    def _start_recording(self) -> StreamRecorder:
        """Arrival times of every packet on both paths, for the added latency; the output is copied to `flv`."""
        stack, sid = self.stack, self.sid
        self.recorder = StreamRecorder(
            stack.output_url(sid), self.flv, stack.log_dir / "recorder.log", stat_url=stack.stat_url, open_timeout_s=90
        )
        self.source_reader = StreamRecorder(stack.input_url(sid), open_timeout_s=30)
        return self.recorder

    def _publish(self, source: Path) -> None:
        """Publish `source` in real time, say where to watch, wait until it is all sent."""
        stack, sid = self.stack, self.sid
        self.publisher = FilePublisher(source, stack.input_url(sid), stack.log_dir / "publisher.log").start()
        started = time.monotonic()
        out_url = stack.output_url(sid)
        _say(f"publishing {source} to {stack.input_url(sid)}")
        _say(f"watch it live:  ffplay {' '.join(ffmpeg_rtmp_args(out_url))} {out_url}")
        _say(f"every output (out is {stack.targets[0]}):\n{output_lines(stack, sid)}")
        _say(f"original:       ffplay {' '.join(ffmpeg_rtmp_args(stack.input_url(sid)))} {stack.input_url(sid)}")
        if wait_for_stream(stack.stat_url, f"{sid}/out", timeout=60) is not None:
            _say(f"dubbed output is published ({time.monotonic() - started:.1f}s after the input started)")
        else:
            _say("the dubbed output did not appear within 60 s; see the logs in " + str(stack.log_dir))
        self.publisher.wait()

    def _collect(self, recorder: StreamRecorder) -> int:
        """The media-service's metrics, the added latency, the recording remuxed to `out`."""
        with contextlib.suppress(Exception):
            self.media_metrics = Metrics.fetch(self.stack.media_url + "/metrics")
        if self.source_reader is not None:
            self.latency = _collect_latency(self.source_reader, recorder)
        if not (self.flv.exists() and self.flv.stat().st_size > 0):
            _say("nothing was recorded from the output stream")
            return 1
        remux(self.flv, self.out)
        self.flv.unlink()
        self.result = self.out
        return 0

    def stop(self) -> None:
        if self.source_reader is not None:
            self.source_reader.stop_event.set()
        if self.publisher is not None:
            self.publisher.stop()
        if self.recorder is not None:
            self.recorder.stop()
        if self.monitor is not None:
            self.monitor.stop()
        self.stack.stop()
        left = self.stack.orphans()
        if left:
            _say(f"warning: processes left behind: {left}")

    def report(self) -> None:
        processed = self.monitor.processed() if self.monitor is not None else []
        if processed or self.result is not None:
            print(_report(processed, self.media_metrics, self.sid, self.result, self.latency), flush=True)
        _say(f"logs: {self.stack.log_dir}")


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="livedub demo", description=__doc__.split("\n\n")[0])
    add_stack_arguments(parser)
    parser.add_argument("--stream-id", default="demo")
    parser.add_argument("--out", type=Path, default=Path("out/demo-dubbed.mp4"), help="where the dubbed result goes")
    parser.add_argument("--input", type=Path, default=None, help="publish this file instead of the sample fixture")
    args = parser.parse_args(argv)
    source = args.input
    if source is None:
        _say("preparing the sample fixture (60 s, human English speech)")
        source = ensure_fixture().path
    cfg = _free_if_busy(config_from_args(args))
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    demo = DemoRun(Stack(cfg, progress=_say), args.stream_id, out)
    with terminate_on_signals():
        try:
            code = demo.run(source)
        except KeyboardInterrupt:
            _say("interrupted; stopping")
            code = 130
        except ServiceError as exc:
            _say(f"error: {exc}")
            code = 1
        finally:
            demo.stop()
    demo.report()
    return code


def _collect_latency(source: StreamRecorder, output: StreamRecorder) -> tuple[float, float, int] | None:
    source.stop_event.set()
    try:
        inp, out = source.join(timeout=10), output.join(timeout=10)
    except Exception as exc:  # the report goes on without it
        _say(f"could not measure the added latency: {exc}")
        return None
    return added_latency(inp, out)


def recorder_alive(stack: Stack) -> bool:
    """The stack is still up (the output can still end normally)."""
    try:
        stack.check_alive()
    except ServiceError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
