"""`livedub dub-file IN --from en --to es -o OUT`: run the STS pipeline over an audio or video file.

The file's audio is cut into pieces of about `--chunk` seconds, preferably in pauses (Silero VAD), each piece is
dubbed like a live fragment, and the dubs are joined in place. OUT is audio (.wav or .m4a) or, when IN has video
and OUT is a video container (.mp4, .mkv, .mov), the video copied as it is with the dubbed audio.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from livedub.dubbing.audio import resample
from livedub.dubbing.interfaces import FloatAudio
from livedub.languages import LANGUAGES, UnsupportedLanguageError, check_pair
from livedub.protocol import AudioFormat
from livedub.sts.payload_audio import encode_audio
from livedub.sts.settings import TRANSLATOR_NAMES, TTS_BACKENDS, StsSettings

RATE = 48000  # the pipeline runs on 48 kHz fragments, like the live media-service sends
ASR_RATE = 16000
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov"}
AUDIO_SUFFIXES = {".wav", ".m4a"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Piece:
    start: int  # samples at RATE
    end: int


def read_audio(path: Path) -> tuple[FloatAudio, float]:
    """The first audio stream as mono float32 at RATE, and its start time in seconds."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise SystemExit(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        start_s = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return (np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)), start_s


def cut_points(audio: FloatAudio, chunk_s: float, max_s: float = 28.0) -> list[Piece]:
    """Pieces of about `chunk_s`, cut in the middle of a pause when one lies within ±50 % of the target."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    speech = get_speech_timestamps(resample(audio, RATE, ASR_RATE), VadOptions(min_silence_duration_ms=200))
    scale = RATE / ASR_RATE
    pauses = [round((a["end"] + b["start"]) / 2 * scale) for a, b in itertools.pairwise(speech)]
    target, total = round(chunk_s * RATE), len(audio)
    pieces: list[Piece] = []
    start = 0
    while start < total:
        if total - start <= 1.5 * target:
            end = total
        else:
            window = [p for p in pauses if start + 0.5 * target <= p <= min(start + 1.5 * target, start + max_s * RATE)]
            end = min(window, key=lambda p: abs(p - start - target)) if window else start + target
        pieces.append(Piece(start, end))
        start = end
    return pieces


def write_audio(path: Path, audio: FloatAudio) -> None:
    if path.suffix.lower() == ".wav":
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(encode_audio(audio, RATE, AudioFormat.PCM_S16LE))
    else:
        path.write_bytes(encode_audio(audio, RATE, AudioFormat.M4A))


def write_video(source: Path, path: Path, audio: FloatAudio, audio_start_s: float) -> None:
    """Copy the video stream of `source` (no re-encoding) and add `audio` as AAC, aligned to the original audio."""
    with av.open(str(source)) as inp, av.open(str(path), mode="w") as out:
        video_in = inp.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        audio_out = out.add_stream("aac", rate=RATE, layout="mono")
        offset = round(audio_start_s * RATE)
        for start in range(0, len(audio), 1024):
            samples = np.ascontiguousarray(audio[np.newaxis, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate = RATE
            frame.pts = offset + start
            frame.time_base = Fraction(1, RATE)
            for packet in audio_out.encode(frame):
                out.mux(packet)
        for packet in audio_out.encode(None):
            out.mux(packet)
        for packet in inp.demux(video_in):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            packet.stream = video_out
            out.mux(packet)


def dub_audio(audio: FloatAudio, source: str, target: str, chunk_s: float, settings: StsSettings) -> FloatAudio:
    """Each piece through the dubbing engine (the live pipeline's, without the wire), joined in place."""
    from livedub.dubbing import StageFailed, Utterance
    from livedub.sts.backends import load_engine

    check_pair(source, target)  # UnsupportedLanguageError
    engine = load_engine(settings, ((source, target),))  # loads only this direction's models
    engine.warm_up()
    out = audio.copy()
    pieces = cut_points(audio, chunk_s)
    for seq, piece in enumerate(pieces):
        chunk = audio[piece.start : piece.end]
        started = time.perf_counter()
        try:
            dub = engine.dub(Utterance(chunk, RATE), source, target)
        except StageFailed as exc:  # the piece keeps its original audio
            status, said, translated = f"failed ({exc.stage}: {exc})", "", ""
        else:
            # A dub that failed its duration check still carries audio: it replaces the piece like any other.
            out[piece.start : piece.end] = dub.fitted.audio[: len(chunk)]
            status = dub.fitted.status.value
            said, translated = dub.transcript.text, dub.translation.text if dub.translation else ""
        print(
            f"[{seq + 1}/{len(pieces)}] {piece.start / RATE:7.2f}-{piece.end / RATE:7.2f} s {status} "
            f"{time.perf_counter() - started:.1f} s | {said} -> {translated}",
            flush=True,
        )
    return out


def cli_main(argv: list[str]) -> int:
    languages = ", ".join(LANGUAGES)
    parser = argparse.ArgumentParser(prog="livedub dub-file", description=__doc__.split("\n")[0])
    parser.add_argument("input", type=Path, help="audio or video file")
    parser.add_argument("--from", dest="source", default="en", help=f"language spoken in the file ({languages})")
    parser.add_argument("--to", dest="target", default="es", help=f"language of the dub ({languages})")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .wav/.m4a, or .mp4/.mkv/.mov")
    parser.add_argument("--chunk", type=float, default=6.0, help="seconds per piece (cut in pauses when possible)")
    parser.add_argument("--translator", choices=TRANSLATOR_NAMES, help="override the translator")
    parser.add_argument("--tts", choices=TTS_BACKENDS, help="override the synthesiser (its default voice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if not args.input.exists():
        parser.error(f"{args.input} does not exist")
    suffix = args.output.suffix.lower()
    if suffix not in AUDIO_SUFFIXES | VIDEO_SUFFIXES:
        parser.error(f"output must end in one of {sorted(AUDIO_SUFFIXES | VIDEO_SUFFIXES)}")
    overrides: dict[str, str] = {}
    if args.translator:
        overrides["STS_TRANSLATOR_OVERRIDES"] = f"{args.source}-{args.target}={args.translator}"
    if args.tts:
        overrides["STS_TTS_VOICES"] = f"{args.target}={args.tts}"
    settings = StsSettings(STS_PIPELINE="dub", **overrides)  # type: ignore[arg-type]

    started = time.perf_counter()
    audio, audio_start_s = read_audio(args.input)
    try:
        dubbed = dub_audio(audio, args.source, args.target, args.chunk, settings)
    except UnsupportedLanguageError as exc:
        parser.error(str(exc))
    with av.open(str(args.input)) as probe:
        has_video = bool(probe.streams.video)
    if suffix in VIDEO_SUFFIXES:
        if not has_video:
            parser.error(f"{args.input} has no video: write .wav or .m4a")
        write_video(args.input, args.output, dubbed, audio_start_s)
    else:
        write_audio(args.output, dubbed)
    elapsed = time.perf_counter() - started
    print(f"wrote {args.output} ({len(dubbed) / RATE:.1f} s of audio in {elapsed:.1f} s)", file=sys.stderr)
    return 0
