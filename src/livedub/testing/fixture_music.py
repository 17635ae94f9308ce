"""The speech-over-music fixture: 60 s of H.264 + AAC where a human speaks English (or Spanish, French, Italian) over
a music bed.

Twelve Asterisk prompts (Debian ``asterisk-core-sounds-<lang>``, human recordings with transcripts; the prompt of the
same name in the reference language — Spanish for English, English for the others — is the reference translation)
are trimmed to their voice and laid out with natural pauses:
0.6–1.2 s between most prompts, two pauses of 4 s and more, music alone before the first and after the last. Under
the whole of it runs a steady stretch of a Debian ``asterisk-moh-opsound-wav`` track, set 8 dB below the speech
(RMS over the spoken spans). The video is the sample fixture's ``testsrc2`` (keyframe every 2 s).

Next to the video, cached in ``$LIVEDUB_HOME/fixtures/`` like the sample fixture: the isolated music bed and speech
as wav files (the exact signals that were summed, at the sources' 8 kHz) and a JSON sidecar with each prompt's
times, English text, Spanish reference and levels, and each pause's music level.

    python -m livedub.testing.fixture_music                  # build (if missing) and print the timeline
    python -m livedub.testing.fixture_music --language es    # the same prompts spoken in Spanish
    python -m livedub.testing.fixture_music --force          # rebuild
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from livedub.fixture import encode_video, fixtures_dir
from livedub.testing import corpus

MUSIC_DIR = Path("/usr/share/asterisk/moh")
MUSIC_PACKAGE = "asterisk-moh-opsound-wav"
MUSIC_TRACK = "reno_project-system"  # the steadiest 60 s of the package's tracks: per-second RMS within 4 dB
MUSIC_OFFSET_S = 61.0

FIXTURE_VERSION = 1
DURATION_S = 60.0
LEAD_IN_S = 2.0  # music alone before the first prompt
SPEECH_OVER_MUSIC_DB = 8.0  # a talk show's bed: clearly under the voice, clearly audible
PEAK_LIMIT = 0.89  # the mix is scaled down (speech and music alike) if it would peak above this
TRIM_FLOOR_DB = -40.0  # relative to the prompt's loudest 10 ms: below is the recording's leading/trailing silence
TRIM_MARGIN_S = 0.02

# Prompts in speaking order; each exists in every language of the corpus under the same name.
PROMPTS: tuple[str, ...] = (
    "conf-waitforleader",
    "vm-nonumber",
    "tt-weasels",
    "privacy-unident",
    "conf-onlyperson",
    "vm-sorry",
    "dir-nomatch",
    "priv-introsaved",
    "conf-invalid",
    "vm-mailboxfull",
    "confbridge-lock-no-join",
    "vm-rec-name",
)
# Silence between consecutive prompts' voices (music only): short natural pauses and two long ones.
GAPS_S: tuple[float, ...] = (0.8, 1.0, 0.7, 4.0, 0.9, 1.2, 0.6, 4.5, 1.1, 0.8, 0.9)

FloatAudio = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SpokenPrompt:
    name: str
    start_s: float  # first and last voiced sample (the recording's silence is trimmed off)
    end_s: float
    text: str  # English transcript
    reference: str  # the Spanish prompt's transcript: a reference translation
    speech_dbfs: float  # RMS of the voice over [start_s, end_s]
    music_dbfs: float  # RMS of the music bed under it

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Pause:
    start_s: float  # between two prompts, or before the first / after the last
    end_s: float
    music_dbfs: float  # RMS of the music bed here (the mix holds nothing else in a pause)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class MusicFixture:
    """A generated speech-over-music fixture and its timeline."""

    path: Path  # the video (.mp4)
    sidecar: Path
    music_path: Path  # the isolated music bed, exactly as mixed (mono 16-bit wav at `sample_rate`)
    speech_path: Path  # the isolated speech, exactly as mixed
    sample_rate: int
    duration_s: float
    music_track: str
    music_gain_db: float
    speech_over_music_db: float  # speech RMS over the spoken spans minus the bed's RMS over the same spans
    prompts: tuple[SpokenPrompt, ...]
    pauses: tuple[Pause, ...]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    @property
    def references(self) -> list[str]:
        return [p.reference for p in self.prompts]

    def long_pauses(self, min_s: float = 2.0) -> list[Pause]:
        return [p for p in self.pauses if p.duration_s >= min_s]

    def music_audio(self, sample_rate: int | None = None) -> npt.NDArray[np.float32]:
        """The isolated music bed, mono float32 (resampled to `sample_rate` when given)."""
        return corpus.read_wav(self.music_path, sample_rate)

    def speech_audio(self, sample_rate: int | None = None) -> npt.NDArray[np.float32]:
        return corpus.read_wav(self.speech_path, sample_rate)

    @classmethod
    def load(cls, sidecar: Path) -> MusicFixture:
        data = json.loads(sidecar.read_text())
        return cls(
            path=sidecar.with_name(data["file"]),
            sidecar=sidecar,
            music_path=sidecar.with_name(data["music"]["file"]),
            speech_path=sidecar.with_name(data["speech_file"]),
            sample_rate=data["sample_rate"],
            duration_s=data["duration_s"],
            music_track=data["music"]["track"],
            music_gain_db=data["music"]["gain_db"],
            speech_over_music_db=data["speech_over_music_db"],
            prompts=tuple(SpokenPrompt(**p) for p in data["prompts"]),
            pauses=tuple(Pause(**p) for p in data["pauses"]),
        )


def level_dbfs(audio: npt.ArrayLike, sample_rate: int, start_s: float = 0.0, end_s: float | None = None) -> float:
    """RMS level in dBFS of `audio[start_s:end_s]` (-120 for digital silence)."""
    samples = np.asarray(audio, dtype=np.float64)
    stop = len(samples) if end_s is None else round(end_s * sample_rate)
    window = samples[round(start_s * sample_rate) : stop]
    rms = float(np.sqrt(np.mean(window**2))) if window.size else 0.0
    return max(-120.0, 20 * np.log10(rms)) if rms > 0 else -120.0


def trim_silence(audio: FloatAudio, sample_rate: int) -> FloatAudio:
    """The span from the first to the last 10 ms block within `TRIM_FLOOR_DB` of the loudest, plus a margin."""
    block = sample_rate // 100
    blocks = audio[: len(audio) // block * block].reshape(-1, block)
    levels = 10 * np.log10(np.mean(blocks**2, axis=1) + 1e-12)
    voiced = np.flatnonzero(levels > levels.max() + TRIM_FLOOR_DB)
    margin = round(TRIM_MARGIN_S * sample_rate)
    start = max(0, voiced[0] * block - margin)
    end = min(len(audio), (voiced[-1] + 1) * block + margin)
    return audio[start:end]


def music_bed(sample_rate: int, duration_s: float = DURATION_S) -> FloatAudio:
    """`duration_s` of the music track from `MUSIC_OFFSET_S`, at its own level."""
    path = MUSIC_DIR / f"{MUSIC_TRACK}.wav"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: apt-get install {MUSIC_PACKAGE} (or make setup)")
    audio = corpus.read_wav(path, sample_rate).astype(np.float64)
    start = round(MUSIC_OFFSET_S * sample_rate)
    return audio[start : start + round(duration_s * sample_rate)]


@dataclass(frozen=True)
class _Placed:
    spoken: corpus.Prompt
    reference: corpus.Prompt
    start: int  # sample index in the track
    audio: FloatAudio


def reference_language_of(language: str) -> str:
    """The language whose transcripts serve as reference translations: Spanish for English, else English."""
    return "es" if language == "en" else "en"


def _place_prompts(language: str = "en") -> tuple[list[_Placed], int, float]:
    """The prompts on the track, its sample rate and its duration: 60 s, or longer for slower speakers (Spanish
    takes 73 s), always with at least 2 s of music alone at the end."""
    spoken, reference = corpus.load_prompts(language), corpus.load_prompts(reference_language_of(language))
    rate = 0
    placed: list[_Placed] = []
    position_s = LEAD_IN_S
    for name, gap_s in zip(PROMPTS, (*GAPS_S, 0.0), strict=True):
        prompt = spoken[name]
        rate = rate or _wav_rate(prompt.path)
        audio = trim_silence(corpus.read_wav(prompt.path, rate).astype(np.float64), rate)
        start = round(position_s * rate)
        placed.append(_Placed(prompt, reference[name], start, audio))
        position_s = (start + len(audio)) / rate + gap_s
    duration_s = DURATION_S if position_s <= DURATION_S - 2.0 else float(math.ceil(position_s + 2.0))
    return placed, rate, duration_s


def _wav_rate(path: Path) -> int:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate()


def _spans_rms_db(audio: FloatAudio, placed: list[_Placed]) -> float:
    """RMS over the spoken spans only (the pauses would dilute the speech level)."""
    return level_dbfs(np.concatenate([audio[p.start : p.start + len(p.audio)] for p in placed]), 1)


def mix_tracks(language: str = "en") -> tuple[FloatAudio, FloatAudio, int, list[_Placed], float]:
    """(speech, music, sample rate, placed prompts, music gain dB): speech + music is the fixture's audio."""
    placed, rate, duration_s = _place_prompts(language)
    speech = np.zeros(round(duration_s * rate), dtype=np.float64)
    for p in placed:
        speech[p.start : p.start + len(p.audio)] = p.audio
    music = music_bed(rate, duration_s)
    # Rounded to 0.1 dB so that the last bits of a floating-point sum cannot change the file.
    gain_db = round(_spans_rms_db(speech, placed) - _spans_rms_db(music, placed) - SPEECH_OVER_MUSIC_DB, 1)
    music = music * 10 ** (gain_db / 20)
    peak = float(np.max(np.abs(speech + music)))
    if peak > PEAK_LIMIT:
        scale_db = round(20 * np.log10(PEAK_LIMIT / peak) - 0.05, 1)
        speech, music = speech * 10 ** (scale_db / 20), music * 10 ** (scale_db / 20)
        gain_db = round(gain_db + scale_db, 1)
    return _quantize(speech), _quantize(music), rate, placed, gain_db


def _quantize(audio: FloatAudio) -> FloatAudio:
    """To 16-bit steps, so that the wav files hold exactly the signals described by the sidecar."""
    return np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768) / 32768


def _write_wav(path: Path, audio: FloatAudio, rate: int) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.round(audio * 32768).astype("<i2").tobytes())


def _timeline(speech: FloatAudio, music: FloatAudio, rate: int, placed: list[_Placed]) -> dict[str, object]:
    duration_s = len(speech) / rate
    prompts, pauses = [], []
    previous_end = 0.0
    for p in placed:
        start, end = p.start / rate, (p.start + len(p.audio)) / rate
        pauses.append(Pause(previous_end, start, round(level_dbfs(music, rate, previous_end, start), 2)))
        prompts.append(
            SpokenPrompt(
                name=p.spoken.name,
                start_s=start,
                end_s=end,
                text=p.spoken.text,
                reference=p.reference.text,
                speech_dbfs=round(level_dbfs(speech, rate, start, end), 2),
                music_dbfs=round(level_dbfs(music, rate, start, end), 2),
            )
        )
        previous_end = end
    pauses.append(Pause(previous_end, duration_s, round(level_dbfs(music, rate, previous_end, duration_s), 2)))
    ratio = _spans_rms_db(speech, placed) - _spans_rms_db(music, placed)
    return {
        "duration_s": duration_s,
        "speech_over_music_db": round(ratio, 2),
        "prompts": [asdict(p) for p in prompts],
        "pauses": [asdict(p) for p in pauses],
    }


def music_fixture_paths(directory: Path | None = None, language: str = "en") -> dict[str, Path]:
    """Where the video, the sidecar and the two isolated tracks are (or will be) cached."""
    directory = directory or fixtures_dir()
    stem = f"livedub-speech-music-60s-v{FIXTURE_VERSION}" if language == "en" else f"livedub-speech-music-{language}-v1"
    names = {"video": ".mp4", "sidecar": ".json", "music": "-music.wav", "speech": "-speech.wav"}
    return {key: directory / f"{stem}{suffix}" for key, suffix in names.items()}


def ensure_music_fixture(directory: Path | None = None, force: bool = False, language: str = "en") -> MusicFixture:
    """Build the speech-over-music fixture spoken in `language` if it is not cached yet (or `force`), and return it."""
    paths = music_fixture_paths(directory, language)
    if not force and all(path.exists() for path in paths.values()):
        return MusicFixture.load(paths["sidecar"])
    speech, music, rate, placed, gain_db = mix_tracks(language)
    paths["video"].parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=paths["video"].parent) as tmp:
        mixed = Path(tmp) / "mix.wav"
        _write_wav(mixed, speech + music, rate)
        partial = {key: Path(tmp) / paths[key].name for key in ("video", "music", "speech")}
        encode_video(mixed, partial["video"], len(speech) / rate)
        _write_wav(partial["music"], music, rate)
        _write_wav(partial["speech"], speech, rate)
        digest = hashlib.sha256(partial["video"].read_bytes()).hexdigest()
        for key, path in partial.items():
            os.replace(path, paths[key])
    data = {
        "file": paths["video"].name,
        "version": FIXTURE_VERSION,
        "sha256": digest,
        "language": language,
        "reference_language": reference_language_of(language),
        "sample_rate": rate,
        "speech_file": paths["speech"].name,
        "music": {"file": paths["music"].name, "track": MUSIC_TRACK, "offset_s": MUSIC_OFFSET_S, "gain_db": gain_db},
        "source": f"asterisk-core-sounds-{language}/-{reference_language_of(language)} (human recordings, transcripts)"
        " over asterisk-moh-opsound-wav music",
        **_timeline(speech, music, rate, placed),
    }
    tmp_sidecar = paths["sidecar"].with_suffix(".json.tmp")
    tmp_sidecar.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp_sidecar, paths["sidecar"])
    return MusicFixture.load(paths["sidecar"])


def cli_main(argv: list[str]) -> int:
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m livedub.testing.fixture_music", description=description)
    parser.add_argument("--dir", type=Path, default=None, help="output directory (default $LIVEDUB_HOME/fixtures)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--language", default="en", choices=corpus.LANGUAGES, help="the language spoken (default en)")
    args = parser.parse_args(argv)
    fixture = ensure_music_fixture(args.dir, force=args.force, language=args.language)
    print(fixture.path)
    print(f"speech over music: {fixture.speech_over_music_db:.1f} dB (music gain {fixture.music_gain_db} dB)")
    for prompt in fixture.prompts:
        print(f"  {prompt.start_s:5.2f}-{prompt.end_s:5.2f}  {prompt.text}  |  {prompt.reference}")
    for pause in fixture.long_pauses():
        print(f"  pause {pause.start_s:5.2f}-{pause.end_s:5.2f}  music {pause.music_dbfs:.1f} dBFS")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(sys.argv[1:]))
