"""CPU of the media side per target language: the paced muxer rendering and encoding N languages.

Offline and faster than real time (a simulated clock), so it measures the work, not the waiting: the flash/beep pattern
(H.264 copied, AAC decoded once) goes through `PacedMuxer` exactly as the worker builds it — one lane per target with
its RTMP outputs (FLV files here: `out` + `out/<first>`, `out/<lang>` for the others), optionally the HLS presentation
(original + every target, WebVTT), each language AAC-encoded once for all of its outputs — with a dub placed on every
phrase in every language (1.5 s of every 2 s, so the mix path runs most of the time). Ingest, segmentation and the STS
client are the same for any number of languages and are not included.

CPU share = process CPU seconds / media seconds (100 % = one core at real time).

Usage: python bench/media_targets_bench.py [--seconds 60] [--languages 1,2,3,4] [--repeat 3] [--encoders output]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from prometheus_client import CollectorRegistry

from livedub.analysis import PatternSpec, write_pattern
from livedub.media.metrics import WorkerMetrics
from livedub.media.outputs.publisher import AacEncoder, FlvPublisher, Publisher
from livedub.media.pipeline.background import DuckedBackground
from livedub.media.pipeline.dubtrack import DubClip, DubTrack
from livedub.media.pipeline.ingest import AudioChunk, StreamLayout, VideoPacket
from livedub.media.pipeline.muxer import Lane, PacedMuxer, Presentation
from livedub.media.types import AudioSegment

LANGS = ["es", "fr", "it", "de", "pt", "ru"]
RATE = 48000
PHRASE_S = 2.0
DUB_S = 1.5


def load(source: Path) -> tuple[av.VideoStream, list[VideoPacket], list[AudioChunk]]:
    """The pattern's video packets (demuxed, untouched) and its audio as s16 chunks, with media times as arrival."""
    container = av.open(str(source))
    vstream = container.streams.video[0]
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
    video: list[VideoPacket] = []
    audio: list[AudioChunk] = []
    sample = 0
    for packet in container.demux():
        if packet.stream.type == "video" and packet.dts is not None:
            ms = int(packet.dts * packet.time_base * 1000)
            comp = int((packet.pts - packet.dts) * packet.time_base * 1000)
            video.append(VideoPacket(packet, ms, comp, packet.is_keyframe, ms / 1000))
        elif packet.stream.type == "audio":
            for frame in packet.decode():
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1, 2)
                    audio.append(AudioChunk(sample, pcm, 1000 * sample / RATE, (sample + len(pcm)) / RATE))
                    sample += len(pcm)
    return vstream, video, audio


def run(
    vstream: av.VideoStream,
    video: list[VideoPacket],
    audio: list[AudioChunk],
    languages: int,
    hls: bool,
    out_dir: Path,
    seed_layout: bool = False,
    encoder_per_output: bool = False,
) -> float:
    """CPU seconds to write every output for the whole input. `encoder_per_output`: each output encodes its own audio
    (as before one encoder per language was shared), for a comparison in one run."""
    metrics = WorkerMetrics(CollectorRegistry())
    layout = StreamLayout(video=vstream, audio_channels=2, sample_rate=RATE, audio_offset_ms=0)
    started = time.process_time()
    targets = LANGS[:languages]
    lanes = []
    encoders = {lang: AacEncoder(RATE, 2) for lang in targets}  # one per language, as the worker: shared by its outputs

    def encoder(lang: str) -> AacEncoder:
        return AacEncoder(RATE, 2) if encoder_per_output else encoders[lang]

    for i, lang in enumerate(targets):
        names = ["out"] * (i == 0) + ([] if seed_layout else [f"out-{lang}"])
        outs: list[Publisher] = [FlvPublisher(str(out_dir / f"{n}.flv"), vstream, encoder(lang)) for n in names]
        lanes.append(Lane(lang, DubTrack(RATE, stretch=lambda a, _s: a, fade_s=0.05), outs))
    presentation: Presentation | None = None
    if hls:
        from livedub.media.outputs.hls import HlsPresentation, renditions_for

        renditions = renditions_for("en", targets)
        presentation = HlsPresentation(
            out_dir / "hls",
            vstream,
            RATE,
            2,
            renditions,
            renditions,
            shared_encoders=None if encoder_per_output else encoders,
        )
    now = [0.0]
    mux = PacedMuxer(
        "bench", layout, 1.0, metrics, clock=lambda: now[0], background=DuckedBackground(-15),
        lanes=lanes, presentation=presentation, original_language="en" if hls else "",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    clip = (rng.standard_normal(round(DUB_S * RATE)) * 0.1).astype(np.float32)
    end_s = audio[-1].arrival
    vi = ai = 0
    seq = 0
    t = 0.0
    while t <= end_s + 2.0:
        while vi < len(video) and video[vi].arrival <= t:
            mux.add_video(video[vi])
            vi += 1
        while ai < len(audio) and audio[ai].arrival <= t:
            mux.add_audio(audio[ai])
            ai += 1
        if t >= (seq + 1) * PHRASE_S and (seq + 1) * PHRASE_S <= end_s:  # a phrase ends: its dubs come back
            start = round(seq * PHRASE_S * RATE)
            segment = AudioSegment("bench", seq, start, np.zeros((round(PHRASE_S * RATE), 2), np.int16), RATE)
            mux.add_phrase(segment)
            for lang in targets:
                mux.resolve(seq, DubClip(seq, start + 4800, clip), language=lang)
            seq += 1
        now[0] = t
        mux.step(t)
        t += 0.04
    mux.finish()
    mux.step(t + 10)
    mux.close_out()
    mux.close_outputs()
    assert mux.stats.dubbed == seq, (mux.stats.dubbed, seq)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--languages", default="1,2,3,4")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median is shown")
    parser.add_argument(
        "--encoders",
        choices=["language", "output"],
        default="language",
        help="one AAC encoder per language shared by its outputs (the worker's), or one per output (before)",
    )
    args = parser.parse_args()
    per_output = args.encoders == "output"
    with tempfile.TemporaryDirectory() as tmp:
        source = write_pattern(Path(tmp) / "pattern.flv", PatternSpec(duration_s=args.seconds, width=640, height=360))
        vstream, video, audio = load(source)
        media_s = audio[-1].arrival
        rows = [("seed layout: `out` only", 1, False, True)]
        for n in (int(x) for x in args.languages.split(",")):
            rows += [(f"{n} target(s), RTMP only", n, False, False), (f"{n} target(s), RTMP + HLS", n, True, False)]
        print(f"media: {media_s:.1f} s of 640x360 H.264 + 48 kHz stereo AAC; median of {args.repeat} runs;"
              f" one AAC encoder per {args.encoders}")  # fmt: skip
        print("| outputs | CPU s | CPU share of one core at real time |")
        print("|---|---|---|")
        for label, n, hls, seed in rows:
            cpu = []
            for r in range(args.repeat):
                out_dir = Path(tmp) / f"run-{n}-{hls}-{seed}-{r}"
                out_dir.mkdir()
                cpu.append(run(vstream, video, audio, n, hls, out_dir, seed_layout=seed, encoder_per_output=per_output))
            median = sorted(cpu)[len(cpu) // 2]
            print(f"| {label} | {median:.2f} | {100 * median / media_s:.2f} % |", flush=True)


if __name__ == "__main__":
    main()
