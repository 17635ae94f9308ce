"""Live benchmark: the whole chain on the speech-over-music fixture, per delay line, with the real models.

One STS (real models, started once) serves every run; each run starts the media server and the media-service with
its own OUTPUT_DELAY_MS, publishes the 60 s fixture in real time (`streams` copies at once), records the output and
reports, per run:
- share of speech dubbed (the media-service's speech seconds by outcome, per target language) and phrases kept
  original, by reason;
- ASR-BLEU of each output: Whisper (in the target language) over the recorded `out/<lang>` against that language's
  transcripts of the same prompts (the Asterisk packages share prompt names);
- added lag p50/p95: output minus input arrival of the same video packet;
- CPU of each service in % of one core (utime+stime of its processes over the run's wall time), and the STS's cores
  in its busiest 10 s (sampled every second: how much of the machine it uses while speech is dense);
- which tier made the dubs, as shares of the dubbed speech (the STS's answers in its monitor room: `metadata.translator`
  main = LLM, fast = Apertium; `metadata.voice_tier` usual = the language's voice, fast = its fast voice);
- how long after its phrase ended the dub's first audio was back (the STS's time to its first `fragment:chunk`, or to
  its answer without chunks; queue included: p50 / p95), and the share of dubs that came in chunks.

    python bench/live_bench.py                              # delays 2,3,4,6,8 s + the fixed 6 s mode, 1 stream
    python bench/live_bench.py --delays 4 --streams 2       # two streams at once
    python bench/live_bench.py --delays 6,12 --targets es/es,fr/es,fr,it   # one, two, three targets per stream
    python bench/live_bench.py --out docs/benchmarks-live.md
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_device import add_device_option
from livedub.analysis.recorder import StreamRecorder as PacketReader
from livedub.demo import added_latency
from livedub.dubbing.device import WhisperDevice, device_plan, load_placed
from livedub.observe import Metrics, StsMonitor, cpu_seconds
from livedub.paths import runtime_dir
from livedub.stack import FilePublisher, ManagedProcess, Stack, StackConfig, free_ports, http_get, rtmp_streams
from livedub.sts.settings import StsSettings
from livedub.testing.fixture_music import MusicFixture, ensure_music_fixture


@dataclass
class RunConfig:
    label: str
    delay_ms: int
    streams: int = 1
    media_env: dict[str, str] = field(default_factory=dict)
    targets: tuple[str, ...] = ("es",)


@dataclass
class StreamResult:
    target: str
    dubbed_s: float
    original_s: float
    fallbacks: dict[str, float]
    lag: tuple[float, float, int] | None
    asr_bleu: float | None
    heard: str
    tiers: dict[str, float] = field(default_factory=dict)  # share of dubbed speech per "translator+voice" tier
    answer_s: tuple[float, float] | None = None  # p50 / p95 of the STS's time per phrase to its dub's first audio
    chunked: float = 0.0  # share of the dubs that came in chunks


class CpuSampler:
    """CPU seconds of a process, sampled every second on a thread: the busiest `window_s` in cores."""

    def __init__(self, pid: int, window_s: int = 10) -> None:
        self.pid, self.window_s = pid, window_s
        self.samples: list[float] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append(cpu_seconds(self.pid))
            self.stop_event.wait(1.0)

    def __enter__(self) -> CpuSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)

    def busiest_cores(self) -> float:
        w = self.window_s
        spans = [(self.samples[i + w] - self.samples[i]) / w for i in range(len(self.samples) - w)]
        return max(spans, default=0.0)


def tier_shares(answers: list[dict], target: str) -> dict[str, float]:
    """Share of the dubbed speech (the STS's speech spans) in each translator+voice tier, for `target`."""
    seconds: dict[str, float] = {}
    for answer in answers:
        meta = answer.get("metadata") or {}
        if answer.get("status") == "failed" or answer.get("target_language", target) != target:
            continue
        if not meta.get("translator"):
            continue
        tier = f"{'LLM' if meta['translator'] == 'main' else 'Apertium'}+{meta.get('voice_tier', '?')}"
        seconds[tier] = seconds.get(tier, 0.0) + float(meta.get("speech_duration_ms") or 0.0) / 1000
    total = sum(seconds.values())
    return {tier: s / total for tier, s in sorted(seconds.items())} if total else {}


def first_audio(monitor: StsMonitor, stream_id: str) -> list[dict]:
    """The stream's answers, each with `first_audio_s`: how long after the fragment reached the STS its dub's first
    audio left (its first `fragment:chunk`, else the answer itself)."""
    firsts: dict[tuple[int, str], float] = {}
    for event in monitor.of("fragment:chunk"):
        key = (event.data.get("sequence_number"), event.data.get("target_language"))
        if event.data.get("stream_id") == stream_id and event.data.get("index") == 0:
            firsts.setdefault(key, event.received_at)
    answers = []
    for event in monitor.of("fragment:processed"):
        data = dict(event.data)
        if data.get("stream_id") != stream_id:
            continue
        total_s = float(data.get("processing_time_ms") or 0.0) / 1000
        chunk_at = firsts.get((data.get("sequence_number"), data.get("target_language")))
        data["first_audio_s"] = total_s - (event.received_at - chunk_at) if chunk_at is not None else total_s
        data["chunked"] = chunk_at is not None
        answers.append(data)
    return answers


def chunked_share(answers: list[dict], target: str) -> float:
    dubs = [a for a in answers if a.get("target_language", target) == target and a.get("translated_text")]
    return sum(1 for a in dubs if a.get("chunked")) / len(dubs) if dubs else 0.0


def answer_times(answers: list[dict], target: str) -> tuple[float, float] | None:
    import numpy as np

    times = [
        float(a["first_audio_s"])
        for a in answers
        if a.get("status") != "failed" and a.get("target_language", target) == target and a.get("translated_text")
    ]
    return (float(np.percentile(times, 50)), float(np.percentile(times, 95))) if times else None


def transcribe(path: Path, language: str, scorer: WhisperDevice) -> str:
    """What Whisper (the scorer's, on the device `scorer` names) hears in a recorded output."""
    from faster_whisper import WhisperModel

    from livedub.models.cache import model_dir
    from livedub.sts.payload_audio import decode_audio

    audio = decode_audio(path.read_bytes(), "m4a", 16000, 1, 16000) if path.suffix == ".m4a" else None
    if audio is None:
        import av
        import numpy as np

        with av.open(str(path)) as container:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
            frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames else np.zeros(0, np.float32)

    def load(placed: WhisperDevice) -> WhisperModel:
        return WhisperModel(
            str(model_dir("whisper-base")),
            device=placed.device,
            compute_type=placed.compute_type,
            local_files_only=True,
        )

    model, _ = load_placed("asr scorer whisper-base", scorer, load)
    piece = 12 * 16000  # Whisper's long-form decoding skips stretches of a mix of short phrases
    texts: list[str] = []
    for start in range(0, len(audio), piece):
        segments, _ = model.transcribe(
            audio[start : start + piece], language=language, beam_size=5, vad_filter=True,
            condition_on_previous_text=False,
        )  # fmt: skip
        texts.extend(s.text.strip() for s in segments)
    return " ".join(texts)


def asr_bleu(heard: str, fixture: MusicFixture, language: str) -> float:
    """BLEU of what Whisper heard against the prompts' transcripts in `language`."""
    import sacrebleu

    from livedub.testing import corpus

    prompts = corpus.load_prompts(language)
    references = " ".join(prompts[p.name].text for p in fixture.prompts)
    return float(sacrebleu.corpus_bleu([heard], [[references]]).score)


def start_sts(log_dir: Path, port: int, env: dict[str, str]) -> ManagedProcess:
    argv = [sys.executable, "-m", "livedub.cli", "sts"]
    full_env = {**os.environ, "STS_HOST": "127.0.0.1", "STS_PORT": str(port), **env}
    sts = ManagedProcess("sts", argv, log_dir / "sts.log", env=full_env).start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if http_get(f"http://127.0.0.1:{port}/health")[0] == 200:
            return sts
        if not sts.running:
            raise RuntimeError(f"STS exited: {sts.tail()}")
        time.sleep(1)
    raise RuntimeError("STS not healthy in 300 s")


def run_once(
    cfg: RunConfig, fixture: MusicFixture, sts_url: str, sts: ManagedProcess, log_dir: Path, scorer: WhisperDevice
) -> dict:
    rtmp, stat, media = free_ports(3)
    stack = Stack(
        StackConfig(
            rtmp_port=rtmp, rtmp_http_port=stat, media_port=media, sts_port=0, start_sts=False, sts_url=sts_url,
            output_delay_ms=cfg.delay_ms, target_language=cfg.targets[0], log_dir=log_dir / cfg.label,
            media_env={"WORKER_TARGET_LANGUAGES": ",".join(cfg.targets), **cfg.media_env},
        )
    ).start()  # fmt: skip
    ids = [f"b{i}" for i in range(cfg.streams)]
    work = log_dir / cfg.label
    try:
        readers = {
            sid: (
                PacketReader(stack.input_url(sid), open_timeout_s=30),
                PacketReader(stack.output_url(sid), copy_to=work / f"{sid}.flv", open_timeout_s=60),
            )
            for sid in ids
        }
        # The other targets' outputs (the first is `out`, read above): recorded for their ASR-BLEU.
        others = [
            PacketReader(f"{stack.output_url(sid)}/{t}", copy_to=work / f"{sid}-{t}.flv", open_timeout_s=60)
            for sid in ids
            for t in cfg.targets[1:]
        ]
        media_proc = stack.services["media"]
        cpu0 = {"media": cpu_seconds(media_proc.pid), "sts": cpu_seconds(sts.pid)}
        t0 = time.monotonic()
        with StsMonitor(sts_url) as monitor, CpuSampler(sts.pid) as sts_cpu:
            publishers = [
                FilePublisher(fixture.path, stack.input_url(sid), work / f"pub-{sid}.log").start() for sid in ids
            ]
            for pub in publishers:
                pub.wait()
            ends = time.monotonic() + cfg.delay_ms / 1000 + 30
            while time.monotonic() < ends and any(name.endswith("/out") for name in rtmp_streams(stack.stat_url)):
                time.sleep(0.5)  # the output plays out the delay line
            time.sleep(1.0)  # the worker child is reaped: its CPU is in the media-service's cutime
        answers = {sid: first_audio(monitor, sid) for sid in ids}
        wall = time.monotonic() - t0
        cpu = {
            "media": (cpu_seconds(media_proc.pid) - cpu0["media"]) / wall,
            "sts": (cpu_seconds(sts.pid) - cpu0["sts"]) / wall,
            "sts_busiest": sts_cpu.busiest_cores(),
        }
        metrics = Metrics.parse(http_get(f"{stack.media_url}/metrics")[1])
        lags = {}
        for sid, (inp, out) in readers.items():
            inp.stop_event.set()
            out.stop_event.set()
            lags[sid] = added_latency(inp.join(timeout=10), out.join(timeout=10))
        for reader in others:
            reader.stop_event.set()
            reader.join(timeout=10)
    finally:
        stack.stop()
    results = []
    for sid in ids:
        for i, target in enumerate(cfg.targets):
            labels = {"stream_id": sid, "language": target}
            speech = metrics.by_label("media_service_worker_language_speech_seconds_total", "outcome", **labels)
            reasons = metrics.by_label("media_service_worker_language_fallbacks_total", "reason", **labels)
            heard = transcribe(work / (f"{sid}.flv" if i == 0 else f"{sid}-{target}.flv"), target, scorer)
            results.append(
                StreamResult(
                    target=target,
                    dubbed_s=speech.get("dubbed", 0.0),
                    original_s=speech.get("original", 0.0),
                    fallbacks={k: v for k, v in reasons.items() if v},
                    lag=lags[sid],
                    asr_bleu=asr_bleu(heard, fixture, target),
                    heard=heard,
                    tiers=tier_shares(answers[sid], target),
                    answer_s=answer_times(answers[sid], target),
                    chunked=chunked_share(answers[sid], target),
                )
            )
    return {"cfg": cfg, "streams": results, "cpu": cpu}


def fallbacks(metrics: Metrics, stream_id: str) -> dict[str, float]:
    return metrics.by_label("media_service_worker_fallbacks_total", "reason", stream_id=stream_id)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def table(rows: list[dict]) -> str:
    lines = [
        "| run | delay line | streams | target | speech dubbed | phrases kept original (reason: count) | ASR-BLEU |"
        " added lag p50 / p95 s | CPU media / STS (% of a core) | STS cores, busiest 10 s |"
        " dubbed speech by tier | first dub audio after phrase end p50 / p95 s (in chunks) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cfg: RunConfig = row["cfg"]
        for i, r in enumerate(row["streams"]):
            total = r.dubbed_s + r.original_s
            lag = f"{r.lag[0]:.2f} / {r.lag[1]:.2f}" if r.lag else "—"
            fall = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(r.fallbacks.items())) or "none"
            cpu = f"{100 * row['cpu']['media']:.0f} / {100 * row['cpu']['sts']:.0f}" if i == 0 else "″"
            busiest = f"{row['cpu']['sts_busiest']:.2f}" if i == 0 else "″"
            tiers = ", ".join(f"{tier} {100 * share:.0f} %" for tier, share in r.tiers.items()) or "—"
            back = f"{r.answer_s[0]:.2f} / {r.answer_s[1]:.2f} ({100 * r.chunked:.0f} %)" if r.answer_s else "—"
            stream = i // len(cfg.targets)
            lines.append(
                f"| {cfg.label}{f' #{stream + 1}' if cfg.streams > 1 else ''} | {cfg.delay_ms / 1000:g} s |"
                f" {cfg.streams} | {r.target} | {pct(r.dubbed_s / total if total else None)} | {fall} |"
                f" {r.asr_bleu:.1f} | {lag} | {cpu} | {busiest} | {tiers} | {back} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", default="2,3,4,6,8", help="delay lines in seconds, phrase streaming")
    parser.add_argument(
        "--fixed-delay", type=float, default=14.0, help="delay of the fixed 6 s reference run (0: none)"
    )
    parser.add_argument("--streams", default="1", help="concurrent streams per run, e.g. 1,2")
    parser.add_argument(
        "--targets", default="es", help="target languages per run, `/` between runs: `es/es,fr` = one, then two"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    parser.add_argument("--sts-env", default="", help="STS settings, e.g. STS_WORKER_THREADS=2,STS_CPU_THREADS=1")
    add_device_option(parser, StsSettings())
    args = parser.parse_args()
    # The STS's models and the scorer's Whisper on the same device setting, each resolved by its own process.
    scorer = device_plan(args.device).whisper
    sts_env = dict(item.split("=", 1) for item in args.sts_env.split(",") if item)
    target_sets = [tuple(t.split(",")) for t in args.targets.split("/") if t]

    fixture = ensure_music_fixture()
    log_dir = runtime_dir() / f"live-bench-{os.getpid()}"
    port = free_ports(1)[0]
    print(f"[bench] starting the STS (real models); logs in {log_dir}", flush=True)
    pairs = sorted({f"en-{t}" for targets in target_sets for t in targets})
    sts = start_sts(log_dir, port, {"STS_WARMUP_PAIRS": ",".join(pairs), "STS_DEVICE": args.device, **sts_env})
    runs: list[RunConfig] = []
    for streams in (int(s) for s in args.streams.split(",")):
        for targets in target_sets:
            label = "phrase" if targets == ("es",) else f"phrase → {'+'.join(targets)}"
            runs += [
                RunConfig(f"{label} {d}s", int(float(d) * 1000), streams, targets=targets)
                for d in args.delays.split(",")
                if d
            ]
        if args.fixed_delay:
            fixed_env = {"SEGMENT_POLICY": "fixed", "SEGMENT_DURATION_MS": "6000", "DUB_OVERRUN_MS": "0"}
            runs.append(RunConfig("fixed 6 s", int(args.fixed_delay * 1000), streams, fixed_env))
    rows = []
    try:
        for cfg in runs:
            print(f"[bench] {cfg.label}, {cfg.streams} stream(s) ...", flush=True)
            row = run_once(cfg, fixture, f"http://127.0.0.1:{port}", sts, log_dir, scorer)
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
            for r in row["streams"]:
                print(f"    heard: {r.heard[:300]}", flush=True)
    finally:
        sts.stop()
    load = os.getloadavg()
    text = (
        f"Live benchmark, `python bench/live_bench.py --delays {args.delays} --streams {args.streams}"
        f" --targets {args.targets} --device {args.device}{f' --sts-env {args.sts_env}' if args.sts_env else ''}`"
        f" ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load average at the end {load[0]:.1f}):"
        f" the 60 s speech-over-music fixture ({len(fixture.prompts)} prompts), defaults otherwise.\n\n" + table(rows)
    )
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "live-bench"
    sys.exit(main())
