"""The sample fixture: 60 s of H.264 720p30 + AAC 48 kHz whose speech is real human recordings.

The speech comes from Debian's ``asterisk-core-sounds-en-wav`` prompts (8 kHz recordings of a human speaker) with
their published transcripts. Ten 6 s slots each hold two short prompts, centred in the slot, so that no prompt
crosses a 6 s boundary: with the media-service's ``fixed`` 6 s policy each fragment carries whole sentences and its
expected transcript is known. The video is FFmpeg's ``testsrc2`` pattern (cheap to encode, a keyframe every 2 s).

The file is generated deterministically (bit-exact flags, fixed inputs) into ``$LIVEDUB_HOME/fixtures/`` and
cached there; a JSON sidecar next to it lists each slot's prompts, times and text.

    python -m livedub.fixture            # build (if missing) and print the paths
    python -m livedub.fixture --force    # rebuild
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from livedub.paths import livedub_home

SOUNDS_DIR = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
# The wav files come from -en-wav; the sounds/en link (an alternative) and the transcripts from -en, which -en-wav
# only recommends.
SOUND_PACKAGES = "asterisk-core-sounds-en asterisk-core-sounds-en-wav"

FIXTURE_VERSION = 1
SLOT_S = 6.0
NUM_SLOTS = 10
WIDTH, HEIGHT, FPS = 1280, 720, 30
SAMPLE_RATE = 48000
CHANNELS = 2
GOP_FRAMES = 2 * FPS
GAP_S = 0.3  # silence between the two prompts of a slot

# Two prompts per slot; each pair lasts <= 5.2 s so that it sits well inside its 6 s slot.
SLOT_PROMPTS: tuple[tuple[str, ...], ...] = (
    ("cannot-complete-as-dialed", "check-number-dial-again"),
    ("conf-waitforleader", "conf-full"),
    ("pls-hold-while-try", "please-try-call-later"),
    ("vm-nobodyavail", "vm-msgsaved"),
    ("tt-weasels", "vm-tooshort"),
    ("feature-not-avail-line", "one-moment-please"),
    ("vm-passchanged", "demo-echodone"),
    ("conf-placeintoconf", "conf-leaderhasleft"),
    ("dir-nomore", "queue-thankyou"),
    ("tt-monkeysintro", "conf-now-muted"),
)


@dataclass
class PromptPlacement:
    name: str
    text: str
    start_s: float
    end_s: float


@dataclass
class Slot:
    index: int
    start_s: float
    end_s: float
    text: str
    prompts: list[PromptPlacement] = field(default_factory=list)


@dataclass
class Fixture:
    """A generated fixture and what is known about its content."""

    path: Path
    sidecar: Path
    duration_s: float
    slot_s: float
    language: str
    slots: list[Slot]

    @property
    def texts(self) -> list[str]:
        return [slot.text for slot in self.slots]

    @classmethod
    def load(cls, sidecar: Path) -> Fixture:
        data = json.loads(sidecar.read_text())
        slots = [
            Slot(
                index=s["index"],
                start_s=s["start_s"],
                end_s=s["end_s"],
                text=s["text"],
                prompts=[PromptPlacement(**p) for p in s["prompts"]],
            )
            for s in data["slots"]
        ]
        return cls(
            path=sidecar.with_name(data["file"]),
            sidecar=sidecar,
            duration_s=data["duration_s"],
            slot_s=data["slot_s"],
            language=data["language"],
            slots=slots,
        )


def fixtures_dir() -> Path:
    """`LIVEDUB_FIXTURES_DIR`, default `$LIVEDUB_HOME/fixtures`."""
    env = os.environ.get("LIVEDUB_FIXTURES_DIR")
    path = Path(env).expanduser() if env else livedub_home() / "fixtures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_transcripts(path: Path = TRANSCRIPTS) -> dict[str, str]:
    """Prompt name -> transcript, from the package's `core-sounds-en.txt.gz`."""
    if not path.exists():
        raise RuntimeError(f"{path} is missing: apt-get install asterisk-core-sounds-en (or make setup)")
    result: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = line.split(":", 1)
            result[name.strip()] = re.sub(r"\s+", " ", text.strip())
    return result


def read_wav_mono(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise RuntimeError(f"{path}: expected 16-bit PCM")
        rate, channels = wav.getframerate(), wav.getnchannels()
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data, rate


def build_speech_track(sounds_dir: Path = SOUNDS_DIR) -> tuple[np.ndarray, int, list[Slot]]:
    """The 60 s mono speech track at the prompts' sample rate (8 kHz) and where each prompt sits."""
    transcripts = load_transcripts()
    rate = 0
    track: np.ndarray | None = None
    slots: list[Slot] = []
    for index, names in enumerate(SLOT_PROMPTS):
        clips = []
        for name in names:
            wav_path = sounds_dir / f"{name}.wav"
            if not wav_path.exists():
                raise RuntimeError(f"{wav_path} is missing: apt-get install {SOUND_PACKAGES} (or make setup)")
            pcm, clip_rate = read_wav_mono(wav_path)
            if rate and clip_rate != rate:
                raise RuntimeError(f"{wav_path}: sample rate {clip_rate} differs from {rate}")
            rate = clip_rate
            clips.append((name, pcm))
        if track is None:
            track = np.zeros(round(SLOT_S * NUM_SLOTS * rate), dtype=np.int16)
        gap = round(GAP_S * rate)
        total = sum(len(pcm) for _, pcm in clips) + gap * (len(clips) - 1)
        slot_len = round(SLOT_S * rate)
        if total > slot_len - int(0.6 * rate):
            raise RuntimeError(f"slot {index}: prompts {names} do not fit in {SLOT_S}s with margins")
        pos = index * slot_len + (slot_len - total) // 2
        slot = Slot(index=index, start_s=index * SLOT_S, end_s=(index + 1) * SLOT_S, text="")
        for name, pcm in clips:
            track[pos : pos + len(pcm)] = pcm
            slot.prompts.append(
                PromptPlacement(name=name, text=transcripts[name], start_s=pos / rate, end_s=(pos + len(pcm)) / rate)
            )
            pos += len(pcm) + gap
        slot.text = " ".join(p.text for p in slot.prompts)
        slots.append(slot)
    assert track is not None
    return track, rate, slots


def _write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.astype("<i2").tobytes())


def encode_video(speech_wav: Path, out: Path, duration_s: float) -> None:
    """H.264 `testsrc2` video (keyframe every 2 s) + AAC of `speech_wav`, bit-exact, `duration_s` long."""
    cmd = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={duration_s}",
        "-i", str(speech_wav),
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "main",
        "-pix_fmt", "yuv420p", "-b:v", "1500k", "-maxrate", "2000k", "-bufsize", "2000k",
        "-g", str(GOP_FRAMES), "-keyint_min", str(GOP_FRAMES), "-sc_threshold", "0",
        "-threads", "2",
        "-af", f"aresample={SAMPLE_RATE}",
        "-c:a", "aac", "-b:a", "128k", "-ar", str(SAMPLE_RATE), "-ac", str(CHANNELS),
        "-t", str(duration_s),
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-movflags", "+faststart",
        str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True)


def fixture_paths(directory: Path | None = None) -> tuple[Path, Path]:
    directory = directory or fixtures_dir()
    stem = f"livedub-speech-60s-v{FIXTURE_VERSION}"
    return directory / f"{stem}.mp4", directory / f"{stem}.json"


def ensure_fixture(directory: Path | None = None, force: bool = False) -> Fixture:
    """Build the fixture if it is not cached yet (or `force`), and return it."""
    video, sidecar = fixture_paths(directory)
    if not force and video.exists() and sidecar.exists():
        return Fixture.load(sidecar)
    track, rate, slots = build_speech_track()
    duration_s = SLOT_S * NUM_SLOTS
    video.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=video.parent) as tmp:
        speech = Path(tmp) / "speech.wav"
        _write_wav(speech, track, rate)
        partial = Path(tmp) / video.name
        encode_video(speech, partial, duration_s)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        os.replace(partial, video)
    data = {
        "file": video.name,
        "version": FIXTURE_VERSION,
        "sha256": digest,
        "duration_s": duration_s,
        "slot_s": SLOT_S,
        "language": "en",
        "video": {"codec": "h264", "width": WIDTH, "height": HEIGHT, "fps": FPS, "gop_frames": GOP_FRAMES},
        "audio": {"codec": "aac", "sample_rate": SAMPLE_RATE, "channels": CHANNELS},
        "source": "asterisk-core-sounds-en-wav (human recordings) with core-sounds-en.txt transcripts",
        "slots": [asdict(slot) for slot in slots],
    }
    tmp_sidecar = sidecar.with_suffix(".json.tmp")
    tmp_sidecar.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp_sidecar, sidecar)
    return Fixture.load(sidecar)


def cli_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m livedub.fixture", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="output directory (default $LIVEDUB_HOME/fixtures)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    fixture = ensure_fixture(args.dir, force=args.force)
    print(fixture.path)
    print(fixture.sidecar)
    for slot in fixture.slots:
        print(f"  {slot.start_s:4.0f}-{slot.end_s:<4.0f} {slot.text}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
