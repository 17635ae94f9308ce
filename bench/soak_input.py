"""The soak benchmark's input: one ~2 minute cycle of the existing fixtures, published in a loop.

The cycle holds what hours on air bring, in the order a broadcast might: speaker A over music (the 60 s
speech-over-music fixture), a pause (8 s of silence over the test pattern), a second speaker (30 s of the speech
fixture, its voice lowered by about a fifth: another pitch and timbre for the speaker matching, the same words) and a
music-only stretch (20 s of the isolated music bed, no speech). Encoded once (H.264 720p30, a keyframe every 2 s,
AAC 48 kHz stereo) into the fixtures directory and cached there; `ffmpeg -stream_loop -1` repeats it.

    python bench/soak_input.py            # build (if missing) and print the path
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from livedub.fixture import ensure_fixture, fixtures_dir
from livedub.testing.fixture_music import ensure_music_fixture

SOAK_INPUT_VERSION = 1
PAUSE_S = 8.0
SECOND_SPEAKER_S = 30.0
MUSIC_ONLY_S = 20.0
PITCH = 0.82  # the second speaker's voice: frequencies × 0.82, duration kept (atempo undoes asetrate's speed-up)
WIDTH, HEIGHT, FPS = 1280, 720, 30


@dataclass(frozen=True)
class SoakPart:
    name: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SoakInput:
    path: Path
    parts: tuple[SoakPart, ...]

    @property
    def cycle_s(self) -> float:
        return self.parts[-1].end_s


def soak_input_path(directory: Path | None = None) -> Path:
    return (directory or fixtures_dir()) / f"livedub-soak-cycle-v{SOAK_INPUT_VERSION}.mp4"


def _parts(first_s: float) -> tuple[SoakPart, ...]:
    bounds = [("speaker A over music", first_s), ("pause", PAUSE_S), ("speaker B, no music", SECOND_SPEAKER_S)]
    bounds.append(("music only", MUSIC_ONLY_S))
    parts, t = [], 0.0
    for name, length in bounds:
        parts.append(SoakPart(name, t, t + length))
        t += length
    return tuple(parts)


def _encode_argv(music_mp4: Path, music_bed: Path, speech_mp4: Path, out: Path) -> list[str]:
    video = f"scale={WIDTH}:{HEIGHT},fps={FPS},format=yuv420p,setsar=1"
    audio = "aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo"
    graph = ";".join(
        [
            f"[0:v]{video}[v0]",
            f"[0:a]{audio}[a0]",
            f"testsrc2=s={WIDTH}x{HEIGHT}:r={FPS}:d={PAUSE_S},{video}[v1]",
            f"anullsrc=r=48000:cl=stereo,atrim=0:{PAUSE_S},{audio}[a1]",
            f"[1:v]trim=0:{SECOND_SPEAKER_S},setpts=PTS-STARTPTS,{video}[v2]",
            f"[1:a]atrim=0:{SECOND_SPEAKER_S},asetpts=PTS-STARTPTS,asetrate=48000*{PITCH},"
            f"atempo={1 / PITCH:.4f},{audio}[a2]",
            f"testsrc2=s={WIDTH}x{HEIGHT}:r={FPS}:d={MUSIC_ONLY_S},{video}[v3]",
            f"[2:a]atrim=0:{MUSIC_ONLY_S},asetpts=PTS-STARTPTS,{audio}[a3]",
            "[v0][a0][v1][a1][v2][a2][v3][a3]concat=n=4:v=1:a=1[v][a]",
        ]
    )
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", str(music_mp4), "-i", str(speech_mp4), "-i", str(music_bed),
        "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", str(2 * FPS), "-keyint_min", str(2 * FPS),
        "-sc_threshold", "0", "-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2",
        "-movflags", "+faststart", str(out),
    ]  # fmt: skip


def ensure_soak_input(directory: Path | None = None, force: bool = False) -> SoakInput:
    """Build the cycle from the music and speech fixtures (each built first when missing); cached."""
    music = ensure_music_fixture(directory)
    path = soak_input_path(directory)
    parts = _parts(music.duration_s)
    if path.exists() and not force:
        return SoakInput(path, parts)
    speech = ensure_fixture(directory)
    partial = path.with_suffix(".partial.mp4")
    subprocess.run(_encode_argv(music.path, music.music_path, speech.path, partial), check=True)
    partial.replace(path)
    return SoakInput(path, parts)


if __name__ == "__main__":
    built = ensure_soak_input(force="--force" in sys.argv)
    print(built.path)
    for part in built.parts:
        print(f"  {part.start_s:6.1f}–{part.end_s:6.1f} s  {part.name}")
