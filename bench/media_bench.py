"""Media pipeline benchmark: added latency, A/V offset, CPU per stream, and how many concurrent streams hold.

For each level N (default 1..4 streams): nginx-rtmp on free ports; a child process (the "media-service") runs N
WorkerRunners; N ffmpeg publishers send the flash/beep test pattern in real time (-re, copied); this process reads
every `/in` and `/out` with PyAV and notes when each video packet arrives.

- added latency: output arrival - input arrival of the identical video packet (matched by SHA-1), p50/p95;
- A/V offset: flash-to-beep offsets of stream 0's recorded output (content markers every 2 s);
- CPU per stream: the child's CPU time while streaming / (N x seconds of media) (imports and model load excluded);
- a level holds when every stream's output has all input video packets, latency p95 <= delay + 1 s, no slot missed
  its deadline (fallbacks{reason=late} == 0) and the A/V offset is within ±20 ms.

Usage: python bench/media_bench.py [--policy speech] [--streams 1,2,3,4] [--sts-url http://127.0.0.1:3000]
       [--write docs/benchmarks-media.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livedub.analysis import PatternSpec, measure_av_sync, write_pattern
from livedub.analysis.recorder import PacketInfo, StreamRecorder
from livedub.mediaserver import NginxRtmpServer, RtmpServerConfig
from livedub.stack import free_port
from livedub.testing.media import publish

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench-media"


# ---- child: the media-service side --------------------------------------------------------------------------------
async def serve(args: argparse.Namespace) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from livedub.media.metrics import WorkerMetrics
    from livedub.media.pipeline.plan import StreamPlan
    from livedub.media.pipeline.worker import WorkerRunner
    from livedub.media.settings import MediaSettings
    from livedub.media.types import DubClient
    from livedub.testing.media import EchoDubClient

    settings = MediaSettings(
        rtmp_base_url=args.rtmp_base,
        segment_policy=args.policy,
        segment_duration_ms=args.segment_ms,
        segment_min_ms=args.segment_min_ms,
        segment_max_ms=args.segment_max_ms,
        output_delay_ms=args.delay_ms,
        ingest_read_timeout_s=2.0,
        ingest_open_timeout_s=60.0,
        **({"sts_service_url": args.sts_url} if args.sts_url else {}),
    )
    metrics = WorkerMetrics(CollectorRegistry())
    runners = []
    for i in range(args.streams):
        plan = StreamPlan.for_stream(f"bench{i}", settings)
        stream_id = plan.stream_id
        client: DubClient
        if args.sts_url:
            from livedub.media.sts_link.sts_client import StsClient

            client = StsClient(stream_id, settings, metrics, targets=plan.targets)
        else:
            client = EchoDubClient(plan.targets, delay_s=0.05)
        runners.append(WorkerRunner(plan, settings, client, metrics))
    if args.policy == "speech":  # load the VAD model before the clock starts
        from faster_whisper.vad import get_vad_model

        get_vad_model()
    print("ready", flush=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(r.run() for r in runners))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    late = [metrics.fallbacks.labels(stream_id=f"bench{i}", reason="late")._value.get() for i in range(args.streams)]
    return {"cpu_s": cpu, "wall_s": wall, "status": [r.status() for r in runners], "late": late}


# ---- parent: publish, record, measure -----------------------------------------------------------------------------
@dataclass
class LevelResult:
    streams: int
    latency_p50_s: float
    latency_p95_s: float
    latency_max_s: float
    av_offsets_ms: list[float]
    cpu_pct_per_stream: float  # CPU seconds / (streams x media seconds): the steady cost of one stream
    cpu_pct_of_wall: float  # CPU seconds / wall seconds of the whole run (startup wait and end timeout included)
    complete: bool
    late_fallbacks: int
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def dubbed(self) -> int:
        return sum(int(s["dubbed"]) for s in self.statuses)

    @property
    def slots(self) -> int:
        return sum(int(s["segments"]) for s in self.statuses)

    def holds(self, delay_s: float) -> bool:
        sync_ok = bool(self.av_offsets_ms) and max(abs(x) for x in self.av_offsets_ms) <= 20.0
        return self.complete and self.latency_p95_s <= delay_s + 1.0 and self.late_fallbacks == 0 and sync_ok


def latencies(inp: list[PacketInfo], out: list[PacketInfo]) -> list[float]:
    """Match the k-th occurrence of a payload on the output with its k-th occurrence on the input (a still picture
    repeats identical packets)."""
    arrivals: dict[str, list[float]] = {}
    for p in inp:
        if p.kind == "video":
            arrivals.setdefault(p.digest, []).append(p.arrival)
    seen: dict[str, int] = {}
    result = []
    for p in out:
        if p.kind != "video" or p.digest not in arrivals:
            continue
        k = seen.get(p.digest, 0)
        seen[p.digest] = k + 1
        if k < len(arrivals[p.digest]):
            result.append(p.arrival - arrivals[p.digest][k])
    return result


def run_level(args: argparse.Namespace, pattern: Path, n: int, workdir: Path) -> LevelResult:
    cfg = RtmpServerConfig(rtmp_port=free_port(), http_port=free_port(), bind="127.0.0.1", workdir=workdir / "nginx")
    with NginxRtmpServer(cfg) as server:
        child_args = [
            sys.executable, __file__, "--child", "--streams", str(n), "--rtmp-base", server.rtmp_url,
            "--policy", args.policy, "--delay-ms", str(args.delay_ms), "--segment-ms", str(args.segment_ms),
            "--segment-min-ms", str(args.segment_min_ms), "--segment-max-ms", str(args.segment_max_ms),
        ] + (["--sts-url", args.sts_url] if args.sts_url else [])  # fmt: skip
        child = subprocess.Popen(child_args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.kill()
            raise RuntimeError(f"media child did not start: {line!r}")
        base = server.rtmp_url
        ins = [StreamRecorder(f"{base}/bench{i}/in", open_timeout_s=30) for i in range(n)]
        outs = [
            StreamRecorder(f"{base}/bench{i}/out", copy_to=workdir / "out0.flv" if i == 0 else None, open_timeout_s=60)
            for i in range(n)
        ]
        time.sleep(0.5)
        publishers = [publish(pattern, f"{base}/bench{i}/in") for i in range(n)]
        for p in publishers:
            p.wait()
        out_text, _ = child.communicate(timeout=args.duration + args.delay_ms / 1000 + 60)
        report = json.loads(out_text.strip().splitlines()[-1])
        in_packets = [r.join(60) for r in ins]
        out_packets = [r.join(60) for r in outs]
    lat = [x for i in range(n) for x in latencies(in_packets[i], out_packets[i])]
    complete = all(
        len([p for p in out_packets[i] if p.kind == "video"]) >= len([p for p in in_packets[i] if p.kind == "video"])
        for i in range(n)
    )
    sync = measure_av_sync(workdir / "out0.flv")
    return LevelResult(
        streams=n,
        latency_p50_s=float(np.percentile(lat, 50)) if lat else float("nan"),
        latency_p95_s=float(np.percentile(lat, 95)) if lat else float("nan"),
        latency_max_s=max(lat) if lat else float("nan"),
        av_offsets_ms=sync.offsets_ms,
        cpu_pct_per_stream=100 * report["cpu_s"] / (n * args.duration),
        cpu_pct_of_wall=100 * report["cpu_s"] / report["wall_s"],
        complete=complete,
        late_fallbacks=int(sum(report["late"])),
        statuses=report["status"],
    )


def render(args: argparse.Namespace, results: list[LevelResult], command: str) -> str:
    delay_s = args.delay_ms / 1000
    held = [r.streams for r in results if r.holds(delay_s)]
    lines = [
        f"policy={args.policy} delay={args.output_delay_label} segment: "
        + (f"fixed {args.segment_ms} ms" if args.policy == "fixed" else f"{args.segment_min_ms}-{args.segment_max_ms}")
        + f"; STS: {args.sts_url or 'echo (in-process, 50 ms)'}; pattern {args.size} {args.duration:.0f} s",
        "",
        "| streams | latency p50 (s) | p95 (s) | max (s) | A/V offset max abs (ms) | A/V mean (ms)"
        " | CPU/stream (% core) | process CPU/wall (%) | all packets | dubbed/slots | late slots | holds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        offsets = r.av_offsets_ms
        max_abs = max((abs(x) for x in offsets), default=float("nan"))
        mean = float(np.mean(offsets)) if offsets else float("nan")
        lines.append(
            f"| {r.streams} | {r.latency_p50_s:.2f} | {r.latency_p95_s:.2f} | {r.latency_max_s:.2f} | {max_abs:.1f} "
            f"({len(offsets)} markers) | {mean:.1f} | {r.cpu_pct_per_stream:.1f} | {r.cpu_pct_of_wall:.1f}"
            f" | {r.complete} | {r.dubbed}/{r.slots} | {r.late_fallbacks}"
            f" | {r.holds(delay_s)} |"
        )
    lines += ["", f"Streams held: {max(held) if held else 0} (of the levels tried).", "", f"Command: `{command}`"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", choices=["fixed", "speech"], default="speech")
    parser.add_argument("--streams", default="1,2,3,4", help="levels of concurrent streams to try")
    parser.add_argument("--delay-ms", type=int, default=3000, help="OUTPUT_DELAY_MS")
    parser.add_argument("--segment-ms", type=int, default=2000, help="SEGMENT_DURATION_MS (fixed)")
    parser.add_argument("--segment-min-ms", type=int, default=1000)
    parser.add_argument("--segment-max-ms", type=int, default=2500)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of test pattern per stream")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--sts-url", default="", help="use the real STS at this URL instead of the echo client")
    parser.add_argument("--stop-at-first-failure", action="store_true", default=True)
    parser.add_argument("--write", type=Path, help="append the results to this markdown file")
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rtmp-base", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.output_delay_label = f"{args.delay_ms} ms"

    if args.child:
        args.streams = int(args.streams)
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        print(json.dumps(asyncio.run(serve(args))), flush=True)
        return 0

    width, height = (int(x) for x in args.size.split("x"))
    CACHE.mkdir(parents=True, exist_ok=True)
    pattern = CACHE / f"pattern-{args.size}-{args.duration:.0f}s.flv"
    if not pattern.exists():
        write_pattern(pattern, PatternSpec(duration_s=args.duration, width=width, height=height))
    results: list[LevelResult] = []
    for n in (int(x) for x in args.streams.split(",")):
        workdir = CACHE / f"run-{os.getpid()}-{n}"
        workdir.mkdir(parents=True, exist_ok=True)
        result = run_level(args, pattern, n, workdir)
        results.append(result)
        print(
            f"{n} stream(s): latency p50 {result.latency_p50_s:.2f} s p95 {result.latency_p95_s:.2f} s; "
            f"A/V offsets {[round(x, 1) for x in result.av_offsets_ms]} ms; CPU {result.cpu_pct_per_stream:.1f} % "
            f"of a core per stream; all packets {result.complete}; dubbed {result.dubbed}/{result.slots}; "
            f"late slots {result.late_fallbacks}; "
            f"holds {result.holds(args.delay_ms / 1000)}",
            flush=True,
        )
        if args.stop_at_first_failure and not result.holds(args.delay_ms / 1000):
            break
    command = "python bench/media_bench.py " + " ".join(argv)
    text = render(args, results, command)
    print(text)
    if args.write:
        with args.write.open("a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
