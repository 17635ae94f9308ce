"""Soak benchmark: the real chain on air for `--minutes`, sampled over time, with a verdict per series.

Starts the stack `livedub up` runs (media server, STS with the real models, media-service; en → es by default) on
free ports, publishes the soak cycle (bench/soak_input.py: speaker A over music, a pause, speaker B, music only) in a
loop in real time, stops the publisher for `--drop-s` in the middle and starts it again (the return starts over at
timestamp 0: the input's timestamps jump back), and every `--interval` seconds samples:
- RSS (MiB) and open file descriptors of every process of the stack, by role (`service:process`, processes of a
  role summed: nginx's workers, the media-service's worker child, ...);
- the stream's HLS directory without its caption logs (bounded by the playlist window) and the caption logs
  (captions.jsonl + phrases.jsonl, append-only: the phrase log lives there, not in memory; no API exposes a phrase
  log's memory, the worker's RSS carries it);
- output lag: how long after the same video packet arrived on the input it left on `out` (p50 over the interval),
  and the media-service's `output_lag_seconds`;
- A/V: the media-service's |A/V| at each phrase start (mean over the interval, `av_sync_delta_abs_ms`) and the
  output's interleave (audio minus video timestamp on `out`, median);
- dubbed speech over the interval and its split by tier (`language_dubbed_speech_seconds`: translator main = LLM,
  fast = Apertium; voice usual | fast).
At the end: the table over time and, per series, its slope per hour and the change from the first to the last third
(the drop sits in the middle third) against a tolerance: `flat`, `bounded` or `GROWS`. Exit status 1 when one grows.

    python bench/soak_bench.py                          # 30 minutes, a sample every 30 s
    python bench/soak_bench.py --minutes 2 --interval 10 --out /tmp/soak.md
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from livedub.mediaserver.urls import rtmp_options
from livedub.observe import Metrics, rss_mib
from livedub.paths import runtime_dir
from livedub.stack import ManagedProcess, Stack, StackConfig, http_get, publish_argv
from soak_input import SoakInput, ensure_soak_input

CAPTION_LOGS = ("captions.jsonl", "phrases.jsonl")
METRIC = "media_service_worker_"
Say = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------- processes


def process_role(service: str, pid: int, leader: int | None) -> str:
    """`service:process` for a member of a service's session: main, worker, nginx-worker, ..."""
    if pid == leader:
        return f"{service}:main"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"{service}:gone"
    text = b" ".join(argv).decode(errors="replace")
    if "spawn_main" in text:
        return f"{service}:worker"
    if "resource_tracker" in text:
        return f"{service}:resource-tracker"
    if text.startswith("nginx: "):
        return f"{service}:nginx-{text.split()[1]}"
    if "nanotts" in text:  # the Pico voice's child, alive as long as the STS
        return f"{service}:voice-child"
    # Anything else lives for one call (Apertium's pipeline of ~12 programs per translation): judged by how many
    # are left between calls (`procs ... floor`), not by their sizes, which depend on whether a call is in flight.
    return f"{service}:{PER_CALL}"


PER_CALL = "per-call"


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def sample_processes(services: dict[str, ManagedProcess]) -> dict[str, float]:
    """`rss <role>` (MiB) and `fds <role>` for every process of every service, a role's processes summed."""
    values: dict[str, float] = {}
    for name, proc in services.items():
        for pid in proc.members():
            role = process_role(name, pid, proc.pid)
            values[f"rss {role}"] = values.get(f"rss {role}", 0.0) + rss_mib(pid)
            values[f"fds {role}"] = values.get(f"fds {role}", 0.0) + open_fds(pid)
            values[f"procs {name} floor"] = values.get(f"procs {name} floor", 0.0) + 1
    return values


def directory_sizes(stream_dir: Path) -> dict[str, float]:
    """The stream's HLS files and its caption logs, in MiB (what an hour on air leaves on disk)."""
    hls = logs = 0
    for path in stream_dir.rglob("*") if stream_dir.exists() else []:
        try:
            size = path.stat().st_size if path.is_file() else 0
        except OSError:
            continue  # a segment deleted as the window moved on
        if path.name in CAPTION_LOGS:
            logs += size
        else:
            hls += size
    return {"hls MiB": hls / 2**20, "caption logs MiB": logs / 2**20}


# ---------------------------------------------------------------------------------------------------- packets


class PacketWatch:
    """Reads `in` and `out` of a stream (reconnecting through drops) and measures lag and interleave per interval.

    Input video packets are remembered by content for `memory_s` (a bounded map: hours on air keep it small);
    an output video packet's lag is its arrival minus the same packet's arrival on the input, so neither the
    input's timestamps nor their jumps enter it.
    """

    def __init__(self, input_url: str, output_url: str, memory_s: float = 120.0) -> None:
        self.memory_s = memory_s
        self.arrivals: OrderedDict[bytes, float] = OrderedDict()
        self.lags: list[float] = []
        self.interleave: list[float] = []
        self.last_audio_s: float | None = None
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._follow, args=(input_url, self._on_input), daemon=True, name="soak-in"),
            threading.Thread(target=self._follow, args=(output_url, self._on_output), daemon=True, name="soak-out"),
        ]

    def __enter__(self) -> PacketWatch:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def _follow(self, url: str, handle: Callable[[object, float], None]) -> None:
        import av

        options = {"analyzeduration": "3000000", "probesize": "50000000", **rtmp_options(url)}
        while not self.stop_event.is_set():
            try:
                with av.open(url, options=options, timeout=(5.0, 3.0)) as container:
                    streams = [s for s in container.streams if s.type in ("video", "audio")]
                    for packet in container.demux(*streams):
                        if self.stop_event.is_set():
                            return
                        if packet.dts is not None and packet.size:
                            handle(packet, time.monotonic())
            except (av.error.FFmpegError, OSError):
                pass  # not published yet, or the publisher left: open it again
            self.stop_event.wait(0.5)

    def _on_input(self, packet: object, now: float) -> None:
        if packet.stream.type != "video":  # type: ignore[attr-defined]
            return
        with self.lock:
            self.arrivals[bytes(packet)[:4096] + bytes(str(packet.size), "ascii")] = now  # type: ignore[attr-defined]
            while self.arrivals and next(iter(self.arrivals.values())) < now - self.memory_s:
                self.arrivals.popitem(last=False)

    def _on_output(self, packet: object, now: float) -> None:
        seconds = float(packet.dts * packet.time_base)  # type: ignore[attr-defined]
        if packet.stream.type == "audio":  # type: ignore[attr-defined]
            self.last_audio_s = seconds
            return
        key = bytes(packet)[:4096] + bytes(str(packet.size), "ascii")  # type: ignore[attr-defined]
        with self.lock:
            arrived = self.arrivals.get(key)
            if arrived is not None:
                self.lags.append(now - arrived)
            if self.last_audio_s is not None:
                self.interleave.append(self.last_audio_s - seconds)

    def take(self) -> dict[str, float]:
        """This interval's lag p50 (s) and interleave median (ms); NaN when the output carried nothing."""
        with self.lock:
            lags, interleave, self.lags, self.interleave = self.lags, self.interleave, [], []
        return {
            "lag p50 s": statistics.median(lags) if lags else float("nan"),
            "interleave ms": 1000 * statistics.median(interleave) if interleave else float("nan"),
        }


# ---------------------------------------------------------------------------------------------------- metrics


@dataclass
class MetricsWatch:
    """Per-interval figures from the media-service's /metrics (counters as differences between samples)."""

    url: str
    stream_id: str
    language: str
    previous: dict[str, float] = field(default_factory=dict)

    def _counters(self, metrics: Metrics) -> dict[str, float]:
        labels = {"stream_id": self.stream_id}
        values = {
            "av sum": metrics.value(f"{METRIC}av_sync_delta_abs_ms_sum", **labels),
            "av count": metrics.value(f"{METRIC}av_sync_delta_abs_ms_count", **labels),
        }
        speech = metrics.by_label(f"{METRIC}language_speech_seconds_total", "outcome", language=self.language, **labels)
        values["speech dubbed"], values["speech original"] = speech.get("dubbed", 0.0), speech.get("original", 0.0)
        for sample in metrics.select(f"{METRIC}language_dubbed_speech_seconds_total", language=self.language, **labels):
            tier = f"{'LLM' if sample.labels['translator'] == 'main' else 'Apertium'}+{sample.labels['voice_tier']}"
            values[f"tier {tier}"] = values.get(f"tier {tier}", 0.0) + sample.value
        return values

    def take(self) -> dict[str, float]:
        status, body = http_get(f"{self.url}/metrics", timeout=5.0)
        metrics = Metrics.parse(body) if status == 200 else Metrics()
        now = self._counters(metrics)
        # A counter that went back (the worker restarted after the drop) counts from zero again.
        delta = {k: v - self.previous.get(k, 0.0) if v >= self.previous.get(k, 0.0) else v for k, v in now.items()}
        self.previous = now
        speech = delta.get("speech dubbed", 0.0) + delta.get("speech original", 0.0)
        tiers = {k: v for k, v in delta.items() if k.startswith("tier ")}
        dubbed = sum(tiers.values())
        result = {
            "metric lag s": metrics.value(f"{METRIC}output_lag_seconds", float("nan"), stream_id=self.stream_id),
            "A/V abs ms": delta["av sum"] / delta["av count"] if delta.get("av count") else float("nan"),
            "dubbed %": 100 * delta.get("speech dubbed", 0.0) / speech if speech else float("nan"),
        }
        result.update({f"{k} %": 100 * v / dubbed for k, v in tiers.items() if dubbed})
        # Seconds (hidden from the table, `_`): the run's shares at the end are sums over the intervals.
        result.update({f"_{k} s": v for k, v in tiers.items()})
        result["_speech dubbed s"], result["_speech s"] = delta.get("speech dubbed", 0.0), speech
        return result


# ---------------------------------------------------------------------------------------------------- publisher


class DroppingPublisher:
    """ffmpeg publishing the cycle in a loop (real time, packets copied); gone for `drop_s` from `drop_at_s` on.

    The return is a new ffmpeg: its timestamps start over at 0, a jump back from where the first one was.
    """

    def __init__(self, path: Path, url: str, log_dir: Path, drop_at_s: float, drop_s: float) -> None:
        self.path, self.url, self.log_dir = path, url, log_dir
        self.drop_at_s, self.drop_s = drop_at_s, drop_s
        self.current: ManagedProcess | None = None
        self.starts = 0
        self.dropped = threading.Event()  # off at some time since the last `state()`
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-publisher", daemon=True)

    def _start(self) -> None:
        self.starts += 1
        argv = publish_argv(self.path, self.url, realtime=True, loop=True)
        self.current = ManagedProcess("publisher", argv, self.log_dir / f"publisher-{self.starts}.log").start()

    def _stop(self) -> None:
        if self.current is not None:
            self.current.stop(timeout=3, sig=signal.SIGINT)
            self.current = None
            self.dropped.set()

    def _run(self) -> None:
        self._start()
        if self.stop_event.wait(self.drop_at_s):
            return
        self._stop()
        if self.stop_event.wait(self.drop_s):
            return
        self._start()

    def state(self) -> str:
        """`on`, `off`, or `dropped` (gone and back within the interval since the last call)."""
        on_air = self.current is not None and self.current.running()
        was_dropped = self.dropped.is_set()
        self.dropped.clear()
        return "off" if not on_air else "dropped" if was_dropped else "on"

    def __enter__(self) -> DroppingPublisher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)
        self._stop()


# ---------------------------------------------------------------------------------------------------- the run


@dataclass
class SoakPlan:
    minutes: float = 30.0
    interval_s: float = 30.0
    drop_s: float = 10.0
    warmup_s: float = 60.0  # samples before this are in the table, not in the verdicts (queues and caches fill)
    language: str = "es"

    @property
    def duration_s(self) -> float:
        return self.minutes * 60


def hls_root_of(stack: Stack) -> Path:
    """Where the stack's media-service writes `<stream_id>/` (MEDIA_HLS_DIR, else its default)."""
    return Path(stack.cfg.media_env.get("MEDIA_HLS_DIR") or runtime_dir() / "hls")


def run_soak(stack: Stack, stream_id: str, soak: SoakInput, plan: SoakPlan, log_dir: Path, say: Say) -> list[dict]:
    """Publish, drop, return and sample every `plan.interval_s` until `plan.duration_s`; the samples."""
    stream_dir = hls_root_of(stack) / stream_id
    metrics = MetricsWatch(stack.media_url, stream_id, plan.language)
    metrics.take()  # counters from before this run (a shared stack) are the baseline
    out_url = stack.output_url(stream_id, plan.language)
    samples: list[dict] = []
    drop_at = plan.duration_s / 2
    with (
        PacketWatch(stack.input_url(stream_id), out_url) as packets,
        DroppingPublisher(soak.path, stack.input_url(stream_id), log_dir, drop_at, plan.drop_s) as publisher,
    ):
        t0 = time.monotonic()
        for tick in range(1, int(plan.duration_s // plan.interval_s) + 1):
            time.sleep(max(0.0, t0 + tick * plan.interval_s - time.monotonic()))
            stack.check_alive()
            sample: dict = {"t s": time.monotonic() - t0, "publisher": publisher.state()}
            sample.update(sample_processes(stack.services))
            sample.update(directory_sizes(stream_dir))
            sample.update(packets.take())
            sample.update(metrics.take())
            samples.append(sample)
            say(one_line(sample))
    return samples


def one_line(sample: dict) -> str:
    rss = sum(v for k, v in sample.items() if k.startswith("rss "))
    fds = sum(v for k, v in sample.items() if k.startswith("fds "))
    return (
        f"[soak] {sample['t s']:6.0f} s  publisher {sample['publisher']:>3}  RSS {rss:7.0f} MiB  fds {fds:4.0f}"
        f"  hls {sample['hls MiB']:5.1f} MiB  lag {sample['lag p50 s']:5.2f} s  dubbed {sample['dubbed %']:5.1f} %"
    )


# ---------------------------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Tolerance:
    """How far a series may move from the first third of the run to the last (means; `bounded`: maxima)."""

    absolute: float
    relative: float = 0.0  # of the first third's level
    kind: str = "flat"  # flat: mean may not rise more | bounded: the last third's peak stays near the first's | both:
    # may not move either way (timing) | floor: the last third's minimum may not rise more (leaked processes)


TOLERANCES: dict[str, Tolerance] = {
    "procs ": Tolerance(absolute=0.0, kind="floor"),  # processes left between calls: any one more is a leak
    "rss ": Tolerance(absolute=40.0, relative=0.10),  # MiB: allocator noise, a model's lazily loaded tier
    "fds ": Tolerance(absolute=4.0),
    "hls MiB": Tolerance(absolute=1.0, relative=0.5, kind="bounded"),  # the playlist window, segments vary in size
    "caption logs MiB": Tolerance(absolute=1.0),  # append-only on disk: ~KiB per minute of speech
    "lag p50 s": Tolerance(absolute=1.0, kind="both"),
    "metric lag s": Tolerance(absolute=1.0, kind="both"),
    "A/V abs ms": Tolerance(absolute=20.0),
    "interleave ms": Tolerance(absolute=100.0, kind="both"),
}


@dataclass(frozen=True)
class Verdict:
    series: str
    first: float  # mean (bounded: max) over the first third after the warm-up
    last: float
    slope_per_h: float
    allowed: float
    verdict: str  # flat | bounded | GROWS | MOVES | no data

    @property
    def failed(self) -> bool:
        return self.verdict in ("GROWS", "MOVES")


def tolerance_of(series: str) -> Tolerance | None:
    if series.endswith(f":{PER_CALL}"):
        return None  # shown, not judged: see process_role
    return next((tol for prefix, tol in TOLERANCES.items() if series.startswith(prefix)), None)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return float("nan")
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return 3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else float("nan")


def judge(series: str, points: list[tuple[float, float]], start_s: float, end_s: float) -> Verdict | None:
    """`series` over its points after the warm-up (start_s): its first third against its last third."""
    tol = tolerance_of(series)
    if tol is None:
        return None
    third = (end_s - start_s) / 3
    first = [v for t, v in points if t <= start_s + third]
    last = [v for t, v in points if t >= end_s - third]
    if not first or not last:
        return Verdict(series, float("nan"), float("nan"), slope_per_hour(points), float("nan"), "no data")
    level = {"bounded": max, "floor": min}.get(tol.kind, statistics.fmean)
    a, b = level(first), level(last)
    allowed = tol.absolute + tol.relative * abs(a)
    change = abs(b - a) if tol.kind == "both" else b - a
    good = {"flat": "flat", "bounded": "bounded", "both": "flat", "floor": "flat"}[tol.kind]
    bad = "MOVES" if tol.kind == "both" else "GROWS"
    return Verdict(series, a, b, slope_per_hour(points), allowed, good if change <= allowed else bad)


def verdicts(samples: list[dict], warmup_s: float) -> list[Verdict]:
    end_s = max((s["t s"] for s in samples), default=0.0)
    names = sorted({k for s in samples for k in s if tolerance_of(k) is not None})
    found = []
    for name in names:
        points = [
            (s["t s"], float(s[name]))
            for s in samples
            if s["t s"] >= warmup_s and name in s and not math.isnan(float(s[name]))
        ]
        verdict = judge(name, points, warmup_s, end_s)
        if verdict is not None:
            found.append(verdict)
    return found


# ---------------------------------------------------------------------------------------------------- tables


def _cell(value: object, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def roles(samples: list[dict]) -> list[str]:
    return sorted({k[4:] for s in samples for k in s if k.startswith("rss ")})


def samples_table(samples: list[dict]) -> str:
    """One row per sample: RSS MiB / fds per role, disk, lag, A/V, dubbed share and its tiers."""
    names = roles(samples)
    head = ["t s", "publisher", *(f"{r} RSS/fds" for r in names), "HLS MiB", "caption logs KiB"]
    head += ["lag p50 s", "metric lag s", "A/V abs ms", "interleave ms", "dubbed %", "tiers %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in samples:
        cells = [f"{s['t s']:.0f}", s["publisher"]]
        cells += [f"{_cell(s.get(f'rss {r}'), 0)} / {_cell(s.get(f'fds {r}'), 0)}" for r in names]
        cells += [_cell(s.get("hls MiB"), 2), _cell(1024 * s.get("caption logs MiB", float("nan")), 0)]
        cells += [_cell(s.get(k), d) for k, d in (("lag p50 s", 2), ("metric lag s", 2), ("A/V abs ms", 1))]
        cells += [_cell(s.get("interleave ms"), 0), _cell(s.get("dubbed %"), 0)]
        tiers = [f"{k[5:-2]} {v:.0f}" for k, v in sorted(s.items()) if k.startswith("tier ") and k.endswith(" %")]
        cells.append(", ".join(tiers) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_table(found: list[Verdict]) -> str:
    lines = [
        "| series | first third | last third | change allowed | slope per hour | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for v in found:
        lines.append(
            f"| {v.series} | {_cell(v.first, 2)} | {_cell(v.last, 2)} | {_cell(v.allowed, 2)} |"
            f" {_cell(v.slope_per_h, 2)} | {v.verdict} |"
        )
    return "\n".join(lines)


def run_shares(samples: list[dict]) -> str:
    """The whole run's dubbed share and its split by tier (sums of the intervals' seconds)."""
    speech = sum(s.get("_speech s", 0.0) for s in samples)
    dubbed = sum(s.get("_speech dubbed s", 0.0) for s in samples)
    tiers: dict[str, float] = {}
    for s in samples:
        for k, v in s.items():
            if k.startswith("_tier "):
                tiers[k[6:-2]] = tiers.get(k[6:-2], 0.0) + v
    total = sum(tiers.values())
    split = ", ".join(f"{t} {100 * v / total:.0f} %" for t, v in sorted(tiers.items())) if total else "—"
    share = f"{100 * dubbed / speech:.0f} %" if speech else "—"
    return f"speech dubbed over the run: {share} of {speech:.0f} s; by tier: {split}"


# ---------------------------------------------------------------------------------------------------- main


def report(samples: list[dict], plan: SoakPlan, soak: SoakInput, command: str) -> tuple[str, list[Verdict]]:
    found = verdicts(samples, plan.warmup_s)
    load = os.getloadavg()
    text = (
        f"Soak, `{command}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average at the end"
        f" {load[0]:.1f}): {plan.minutes:g} min of the {soak.cycle_s:.0f} s cycle in a loop, the publisher gone"
        f" {plan.drop_s:g} s from minute {plan.minutes / 2:g}; en → {plan.language}.\n\n"
        + samples_table(samples)
        + f"\n\n{run_shares(samples)}\n\nVerdicts (after the first {plan.warmup_s:g} s; RSS MiB, fds, HLS and caption"
        " logs MiB, lag s, A/V ms):\n\n" + verdict_table(found)
    )
    return text, found


def start_stack(work: Path, language: str, say: Say) -> Stack:
    cfg = StackConfig.with_free_ports(
        target_language=language,
        sts_env={"STS_WARMUP_PAIRS": f"en-{language}"},
        media_env={"MEDIA_HLS_DIR": str(work / "hls")},
        log_dir=work,
    )
    return Stack(cfg, progress=lambda msg: say(f"[soak] {msg}")).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--drop-s", type=float, default=10.0, help="how long the publisher is gone mid-run")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the verdicts")
    parser.add_argument("--to", default="es", help="target language")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this markdown file")
    args = parser.parse_args()
    plan = SoakPlan(args.minutes, args.interval, args.drop_s, args.warmup, args.to)

    def say(msg: str) -> None:
        print(msg, flush=True)

    soak = ensure_soak_input()
    work = runtime_dir() / f"soak-bench-{os.getpid()}"
    say(f"[soak] starting the stack (real models); logs in {work}")
    stack = start_stack(work, plan.language, say)
    try:
        samples = run_soak(stack, "soak", soak, plan, work, say)
    finally:
        stack.stop()
    left = stack.orphans()
    command = "python bench/soak_bench.py " + " ".join(sys.argv[1:])
    text, found = report(samples, plan, soak, command.strip())
    if left:
        text += f"\n\nProcesses left behind after the stop: {left}"
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if left or any(v.failed for v in found) else 0


if __name__ == "__main__":
    threading.current_thread().name = "soak-bench"
    sys.exit(main())
