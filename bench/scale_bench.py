"""Scale-out benchmark (issue 12): streams held per number of STS replicas, on this machine.

Each run starts `replicas` STS processes (echo or real models), the media server and one media-service given every
replica in STS_SERVICE_URLS, publishes `streams` copies of the 60 s speech-over-music fixture at once in real time,
and reports per stream: the replica it was placed on, the share of its speech dubbed, phrases kept original (by
reason) and the added lag (output minus input arrival of the same video packet); per run: the CPU of the STS
replicas and of the media-service, in % of one core, and the STS cost per stream (STS CPU / streams), what a user
multiplies to size a cluster. A run "holds" its streams when every stream has at least `--hold` of its speech dubbed.

    python bench/scale_bench.py --pipeline echo --replicas 1,2 --streams 1,2,4
    python bench/scale_bench.py --pipeline dub --replicas 1 --streams 1,2      # real models (2 cores: ~1 stream)
    python bench/scale_bench.py ... --out docs/benchmarks-scale.md --append
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from livedub.analysis.recorder import StreamRecorder
from livedub.demo import added_latency
from livedub.observe import Metrics, cpu_seconds, rss_mib
from livedub.paths import runtime_dir
from livedub.stack import FilePublisher, ManagedProcess, Stack, StackConfig, free_ports, http_get, rtmp_streams
from livedub.testing.fixture_music import ensure_music_fixture


@dataclass
class StreamRow:
    stream_id: str
    endpoint: str
    dubbed_s: float
    original_s: float
    fallbacks: dict[str, float]
    lag: tuple[float, float, int] | None

    @property
    def dubbed_share(self) -> float | None:
        total = self.dubbed_s + self.original_s
        return self.dubbed_s / total if total else None


@dataclass
class RunRow:
    pipeline: str
    replicas: int
    streams: list[StreamRow]
    sts_cpu: list[float]  # per replica, cores
    sts_rss_mib: list[float]
    media_cpu: float
    wall_s: float


def start_replicas(count: int, pipeline: str, log_dir: Path) -> list[tuple[str, ManagedProcess]]:
    replicas = []
    for i, port in enumerate(free_ports(count)):
        env = {**os.environ, "STS_HOST": "127.0.0.1", "STS_PORT": str(port), "STS_PIPELINE": pipeline}
        process = ManagedProcess(
            f"sts{i}", [sys.executable, "-m", "livedub.cli", "sts"], log_dir / f"sts{i}.log", env=env
        )
        replicas.append((f"http://127.0.0.1:{port}", process.start()))
    deadline = time.monotonic() + 600
    for url, process in replicas:
        while http_get(url + "/health")[0] != 200:
            if not process.running or time.monotonic() > deadline:
                raise RuntimeError(f"STS {url} not healthy: {process.tail()}")
            time.sleep(1)
    return replicas


def run_once(
    pipeline: str, replicas: list[tuple[str, ManagedProcess]], streams: int, delay_ms: int, log_dir: Path
) -> RunRow:
    urls = [url for url, _ in replicas]
    rtmp, stat, media = free_ports(3)
    work = log_dir / f"{pipeline}-{len(replicas)}r-{streams}s"
    stack = Stack(
        StackConfig(
            rtmp_port=rtmp, rtmp_http_port=stat, media_port=media, sts_port=0, start_sts=False, sts_url=urls[0],
            output_delay_ms=delay_ms, log_dir=work,
            media_env={"STS_SERVICE_URLS": ",".join(urls), "MAX_CONCURRENT_STREAMS": str(max(streams, 4))},
        )
    ).start()  # fmt: skip
    fixture = ensure_music_fixture()
    ids = [f"s{i}" for i in range(streams)]
    try:
        readers = {
            sid: (
                StreamRecorder(stack.input_url(sid), open_timeout_s=30),
                StreamRecorder(stack.output_url(sid), open_timeout_s=60),
            )
            for sid in ids
        }
        media_proc = stack.services["media"]
        cpu0 = [cpu_seconds(p.pid) for _, p in replicas], cpu_seconds(media_proc.pid)
        t0 = time.monotonic()
        publishers = [FilePublisher(fixture.path, stack.input_url(sid), work / f"pub-{sid}.log").start() for sid in ids]
        time.sleep(20)
        metrics = Metrics.parse(http_get(f"{stack.media_url}/metrics")[1])  # placements, while the workers run
        placed = {
            sid: next(
                (
                    u
                    for u in urls
                    if metrics.value("media_service_worker_sts_endpoint_current", stream_id=sid, endpoint=u)
                ),
                "?",
            )
            for sid in ids
        }
        rss = [rss_mib(p.pid) for _, p in replicas]
        for publisher in publishers:
            publisher.wait()
        ends = time.monotonic() + delay_ms / 1000 + 30
        while time.monotonic() < ends and any(name.endswith("/out") for name in rtmp_streams(stack.stat_url)):
            time.sleep(0.5)
        time.sleep(1.0)  # worker children reaped: their CPU is in the media-service's cutime
        wall = time.monotonic() - t0
        sts_cpu = [(cpu_seconds(p.pid) - c) / wall for (_, p), c in zip(replicas, cpu0[0], strict=True)]
        media_cpu = (cpu_seconds(media_proc.pid) - cpu0[1]) / wall
        metrics = Metrics.parse(http_get(f"{stack.media_url}/metrics")[1])
        rows = []
        for sid, (inp, out) in readers.items():
            inp.stop_event.set()
            out.stop_event.set()
            lag = added_latency(inp.join(timeout=10), out.join(timeout=10))
            speech = metrics.by_label(
                "media_service_worker_language_speech_seconds_total", "outcome", stream_id=sid, language="es"
            )
            reasons = metrics.by_label(
                "media_service_worker_language_fallbacks_total", "reason", stream_id=sid, language="es"
            )
            rows.append(
                StreamRow(
                    sid, placed[sid], speech.get("dubbed", 0.0), speech.get("original", 0.0),
                    {k: v for k, v in reasons.items() if v}, lag,
                )
            )  # fmt: skip
    finally:
        stack.stop()
    return RunRow(pipeline, len(replicas), rows, sts_cpu, rss, media_cpu, wall)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def table(rows: list[RunRow], hold: float) -> str:
    lines = [
        "| STS | replicas | streams | held | per stream: replica · speech dubbed · lag p50/p95 s · kept original |"
        " STS CPU per replica (% core) | STS cost per stream (% core) | media CPU (% core) | STS RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        urls = sorted({s.endpoint for s in row.streams})
        per_stream = "<br>".join(
            f"{s.stream_id} → r{urls.index(s.endpoint) + 1} · {pct(s.dubbed_share)} · "
            + (f"{s.lag[0]:.2f}/{s.lag[1]:.2f}" if s.lag else "—")
            + " · "
            + (", ".join(f"{k}: {v:.0f}" for k, v in sorted(s.fallbacks.items())) or "none")
            for s in row.streams
        )
        held = all((s.dubbed_share or 0) >= hold for s in row.streams)
        n = len(row.streams)
        lines.append(
            f"| {row.pipeline} | {row.replicas} | {n} | {'yes' if held else 'no'} | {per_stream} |"
            f" {' / '.join(f'{100 * c:.1f}' for c in row.sts_cpu)} | {100 * sum(row.sts_cpu) / n:.1f} |"
            f" {100 * row.media_cpu:.0f} | {' / '.join(f'{r:.0f}' for r in row.sts_rss_mib)} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", choices=["echo", "dub"], default="echo")
    parser.add_argument("--replicas", default="1,2", help="STS replica counts, e.g. 1,2")
    parser.add_argument("--streams", default="1,2,4", help="concurrent streams per run, e.g. 1,2,4")
    parser.add_argument("--delay-ms", type=int, default=6000, help="OUTPUT_DELAY_MS (the default delay line)")
    parser.add_argument("--hold", type=float, default=0.9, help="share of speech dubbed that counts as held")
    parser.add_argument("--out", type=Path, default=None, help="write (or --append) the table to this file")
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args()

    log_dir = runtime_dir() / f"scale-bench-{os.getpid()}"
    rows: list[RunRow] = []
    for count in (int(r) for r in args.replicas.split(",")):
        print(f"[bench] {count} {args.pipeline} replica(s); logs in {log_dir}", flush=True)
        replicas = start_replicas(count, args.pipeline, log_dir)
        try:
            for streams in (int(s) for s in args.streams.split(",")):
                row = run_once(args.pipeline, replicas, streams, args.delay_ms, log_dir)
                rows.append(row)
                print(table([row], args.hold).splitlines()[-1], flush=True)
        finally:
            for _, process in replicas:
                process.stop()
    load = os.getloadavg()
    command = " ".join(["python", "bench/scale_bench.py", *sys.argv[1:]])
    text = (
        f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores,"
        f" load average at the end {load[0]:.1f}; the 60 s speech-over-music fixture per stream, delay line"
        f" {args.delay_ms / 1000:g} s, held = every stream ≥ {100 * args.hold:.0f} % of its speech dubbed)\n\n"
        + table(rows, args.hold)
    )
    print("\n" + text)
    if args.out:
        with args.out.open("a" if args.append else "w") as out:
            out.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
