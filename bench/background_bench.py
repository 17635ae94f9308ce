"""Background under the dub: `duck` (the original, lowered) vs `separate` (DeepFilterNet3 bed) on known stems.

Each mixture is human English speech (asterisk prompts, 8 kHz, upsampled to 48 kHz) over a music bed (Debian
`asterisk-moh-opsound-wav`, the 5 files in turn) at 5 dB speech-to-music ratio: 1 s of music, then 3 phrases with
1 s pauses. The "dub" of each phrase is the Spanish recording of the same prompt, scaled to the English phrase's
level, placed at its start. Under each dub the background is (the original plays elsewhere, 50 ms linear fades):
- duck D: the mix x 10^(D/20);
- separate: the `BedSeparator` bed (DeepFilterNet3, 48 kHz mono, 1024-sample blocks) at full level, re-aligned by
  its reported latency;
- separate, bed -6 dB: the same bed 6 dB lower (a hybrid of the two).

Measured per mixture over the samples where a dub plays:
- voice left: the original speech inside the background relative to the dub (dB; the lower, the less you hear);
- voice kept: the same relative to the original speech (dB);
- music kept: the music inside the background relative to the music stem (dB; 0 = all of it);
- background SI-SDR: the background against the music stem (dB; the ideal bed is the music itself).
The separator is not linear, so its bed is split into speech and music parts by phase inversion (Hagerman &
Olofsson 2004, the usual way to measure SNR after non-linear noise reduction): with the bed of music + speech and
the bed of music - speech, the speech part is their half-difference and the music part their half-sum. A second
split, "shadow filtering" (per STFT bin, 20 ms window, the background is G x mix and its speech part G x speech),
is printed as a cross-check: it charges to the voice whatever the bed keeps in bins where the voice dominates, so it
reads higher for the separator (it is exact for ducking).
CPU: process CPU seconds per second of audio (RTF) of one stream, for the separator also by input format.
Tables give the p50 over the mixtures (min..max in brackets).

Usage: flock /tmp/livedub-cpu.lock .venv/bin/python bench/background_bench.py [--mixtures 10]
       [--write docs/benchmarks-background.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from livedub.media.pipeline.separation import DEFAULT_ATTEN_LIM_DB, BedSeparator
from livedub.testing.corpus import read_wav

Audio = npt.NDArray[np.float64]
RATE = 48000
SOUNDS = Path("/usr/share/asterisk/sounds")
# The `en`/`es` links are Debian alternatives that the non-wav packages set up; the wav folders are always there.
SOUND_DIRS = {"en": ("en", "en_US_f_Allison"), "es": ("es", "es_MX_f_Allison")}
MOH = Path("/usr/share/asterisk/moh")
SNR_DB = 5.0
FADE_S = 0.05
PAUSE_S = 1.0
PHRASES_PER_MIXTURE = 3
WINDOW, HOP = 960, 240  # shadow-filter STFT at 48 kHz


@dataclass(frozen=True)
class Mixture:
    music_name: str
    speech: Audio
    music: Audio
    dub: Audio
    spans: list[tuple[int, int]]  # where each dub plays, in samples

    @property
    def mix(self) -> Audio:
        return self.speech + self.music


@dataclass(frozen=True)
class Levels:
    voice_left_db: float
    voice_kept_db: float
    shadow_voice_kept_db: float
    music_kept_db: float
    bed_si_sdr_db: float


# ---- material ------------------------------------------------------------------------------------------------------
def sound_dir(language: str) -> Path:
    for name in SOUND_DIRS[language]:
        if (SOUNDS / name).is_dir():
            return SOUNDS / name
    raise SystemExit(f"no asterisk prompts for {language}: apt-get install asterisk-core-sounds-{language}-wav")


def trimmed(audio: Audio, floor_db: float = -40.0) -> Audio:
    """Drop the silence around a prompt (10 ms frames more than 40 dB under its loudest frame)."""
    frames = audio[: len(audio) // 480 * 480].reshape(-1, 480)
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(energy > energy.max() + floor_db)
    return audio[loud[0] * 480 : (loud[-1] + 1) * 480]


def phrase_pairs(count: int) -> list[tuple[Audio, Audio]]:
    """(English, Spanish) recordings of the same prompts, 1.5-4.5 s of English speech, spread over the corpus."""
    en, es = sound_dir("en"), sound_dir("es")
    names = sorted(p.name for p in en.glob("*.wav") if (es / p.name).is_file())
    pairs = []
    for name in names[:: max(1, len(names) // (3 * count))]:
        english = trimmed(read_wav(en / name, RATE).astype(np.float64))
        if 1.5 <= len(english) / RATE <= 4.5:
            pairs.append((english, trimmed(read_wav(es / name, RATE).astype(np.float64))))
    if len(pairs) < count:
        raise SystemExit(f"only {len(pairs)} usable prompt pairs, need {count}")
    return pairs[:count]


def music_track(index: int, seconds: float) -> tuple[str, Audio]:
    files = sorted(MOH.glob("*.wav"))
    if not files:
        raise SystemExit(f"no music in {MOH}: apt-get install asterisk-moh-opsound-wav")
    path = files[index % len(files)]
    music = read_wav(path, RATE).astype(np.float64)
    start = int((10 + 7 * index) * RATE) % max(1, len(music) - int(seconds * RATE))
    return path.stem, np.resize(music[start:], int(seconds * RATE))  # np.resize repeats a short file


def rms(audio: Audio) -> float:
    return float(np.sqrt(np.mean(audio**2) + 1e-20))


def build_mixture(index: int, pairs: list[tuple[Audio, Audio]]) -> Mixture:
    pause = int(PAUSE_S * RATE)
    length = pause + sum(max(len(en), len(es)) + pause for en, es in pairs)
    speech, dub, spans, cursor = np.zeros(length), np.zeros(length), [], pause
    for english, spanish in pairs:
        speech[cursor : cursor + len(english)] = english
        dub[cursor : cursor + len(spanish)] = spanish * rms(english) / rms(spanish)
        spans.append((cursor, cursor + len(spanish)))
        cursor += max(len(english), len(spanish)) + pause
    music_name, music = music_track(index, length / RATE)
    voiced = np.concatenate([speech[a : a + len(en)] for (a, _), (en, _) in zip(spans, pairs, strict=True)])
    music_under_voice = np.concatenate([music[a : a + len(en)] for (a, _), (en, _) in zip(spans, pairs, strict=True)])
    music *= rms(voiced) / rms(music_under_voice) * 10 ** (-SNR_DB / 20)
    peak = np.abs(speech + music).max() / 0.7  # headroom: int16 for the separator, the dub on top
    return Mixture(music_name, speech / peak, music / peak, dub / peak, spans)


def mixtures(count: int) -> list[Mixture]:
    pairs = phrase_pairs(count * PHRASES_PER_MIXTURE)
    return [build_mixture(i, pairs[i * PHRASES_PER_MIXTURE : (i + 1) * PHRASES_PER_MIXTURE]) for i in range(count)]


# ---- the two modes -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Background:
    """What plays under the dubs (the original elsewhere), and its parts from each stem."""

    audio: Audio
    speech: Audio
    music: Audio


def dub_weight(length: int, spans: list[tuple[int, int]]) -> Audio:
    """1 where a dub plays, 0 elsewhere, with FADE_S linear ramps just outside each span."""
    fade = int(FADE_S * RATE)
    weight = np.zeros(length)
    ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
    for start, end in spans:
        weight[start:end] = 1.0
        lo = max(0, start - fade)
        weight[lo:start] = np.maximum(weight[lo:start], ramp[fade - (start - lo) :])
        hi = min(length, end + fade)
        weight[end:hi] = np.maximum(weight[end:hi], ramp[::-1][: hi - end])
    return weight


def duck(mixture: Mixture, depth_db: float) -> Background:
    gain = 1.0 - dub_weight(len(mixture.mix), mixture.spans) * (1.0 - 10 ** (depth_db / 20))
    return Background(mixture.mix * gain, mixture.speech * gain, mixture.music * gain)


@dataclass(frozen=True)
class Separated:
    bed: Audio  # aligned with the mix
    cpu_s: float


def separate(mix: Audio, sample_rate: int = RATE, channels: int = 1, block: int = 1024) -> Separated:
    """Run one stream's BedSeparator over the mix in 1024-sample blocks (as PyAV decodes AAC); bed re-aligned."""
    pcm = np.repeat(np.round(mix * 32767).astype(np.int16)[:, None], channels, axis=1)
    beds = []
    with BedSeparator(sample_rate, channels, atten_lim_db=DEFAULT_ATTEN_LIM_DB) as separator:
        started = time.process_time()
        beds.extend(separator.process(pcm[i : i + block]).bed for i in range(0, len(pcm), block))
        beds.append(separator.flush().bed)
        cpu = time.process_time() - started
        latency = separator.latency_samples
    bed = np.concatenate(beds)[latency : latency + len(mix), 0].astype(np.float64) / 32767
    return Separated(bed, cpu)


@dataclass(frozen=True)
class BedParts:
    """The bed of music + speech, and its speech and music parts by phase inversion (Hagerman & Olofsson, 2004):
    with the bed of music - speech too, the speech part is the half-difference and the music part the half-sum."""

    bed: Audio
    speech: Audio
    music: Audio
    cpu_s: float


def separate_parts(mixture: Mixture) -> BedParts:
    plus, minus = separate(mixture.music + mixture.speech), separate(mixture.music - mixture.speech)
    return BedParts(plus.bed, (plus.bed - minus.bed) / 2, (plus.bed + minus.bed) / 2, plus.cpu_s)


def under_bed(mixture: Mixture, parts: BedParts, gain_db: float = 0.0) -> Background:
    weight = dub_weight(len(mixture.mix), mixture.spans)
    bed_gain = weight * 10 ** (gain_db / 20)
    return Background(
        (1.0 - weight) * mixture.mix + bed_gain * parts.bed,
        (1.0 - weight) * mixture.speech + bed_gain * parts.speech,
        (1.0 - weight) * mixture.music + bed_gain * parts.music,
    )


# ---- measures ------------------------------------------------------------------------------------------------------
def stft(audio: Audio) -> npt.NDArray[np.complex128]:
    window = np.hanning(WINDOW)
    starts = range(0, len(audio) - WINDOW, HOP)
    return np.stack([np.fft.rfft(audio[s : s + WINDOW] * window) for s in starts])


def shadow_voice_db(mixture: Mixture, background: Audio, under: npt.NDArray[np.intp]) -> float:
    """Cross-check of the speech part: per STFT bin the background is G x mix; its speech part is G x speech."""
    mix, speech, bg = stft(mixture.mix), stft(mixture.speech), stft(background)
    gain = bg * np.conj(mix) / (np.abs(mix) ** 2 + 1e-12)
    centres = np.arange(len(mix)) * HOP + WINDOW // 2
    inside = np.isin(centres, under)
    left = np.sum(np.abs(gain[inside] * speech[inside]) ** 2)
    return float(10 * np.log10(left / np.sum(np.abs(speech[inside]) ** 2)))


def si_sdr(estimate: Audio, reference: Audio) -> float:
    scale = np.dot(estimate, reference) / np.dot(reference, reference)
    target = scale * reference
    return float(10 * np.log10(np.sum(target**2) / np.sum((estimate - target) ** 2)))


def levels(mixture: Mixture, background: Background) -> Levels:
    """Energies of the background's parts over the samples where a dub plays."""
    under = np.concatenate([np.arange(a, b) for a, b in mixture.spans])

    def db(numerator: Audio, denominator: Audio) -> float:
        return float(10 * np.log10(np.sum(numerator[under] ** 2) / np.sum(denominator[under] ** 2)))

    return Levels(
        voice_left_db=db(background.speech, mixture.dub),
        voice_kept_db=db(background.speech, mixture.speech),
        shadow_voice_kept_db=shadow_voice_db(mixture, background.audio, under),
        music_kept_db=db(background.music, mixture.music),
        bed_si_sdr_db=si_sdr(background.audio[under], mixture.music[under]),
    )


# ---- run -----------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    mode: str
    levels: list[Levels]
    rtf: list[float]


def measure(mixes: list[Mixture]) -> list[Row]:
    depths = (-10.0, -15.0, -20.0)
    rows = {f"duck {d:.0f} dB": Row(f"duck {d:.0f} dB", [], []) for d in depths}
    rows |= {name: Row(name, [], []) for name in ("separate", "separate, bed -6 dB")}
    for mixture in mixes:
        seconds = len(mixture.mix) / RATE
        for depth in depths:
            started = time.process_time()
            background = duck(mixture, depth)
            rows[f"duck {depth:.0f} dB"].rtf.append((time.process_time() - started) / seconds)
            rows[f"duck {depth:.0f} dB"].levels.append(levels(mixture, background))
        parts = separate_parts(mixture)
        for name, gain_db in (("separate", 0.0), ("separate, bed -6 dB", -6.0)):
            rows[name].levels.append(levels(mixture, under_bed(mixture, parts, gain_db)))
            rows[name].rtf.append(parts.cpu_s / seconds)
    return list(rows.values())


def separator_cpu(mixes: list[Mixture]) -> list[tuple[str, list[float], float]]:
    """RTF per stream of the separator alone, by input format; and its latency in ms."""
    out = []
    for label, rate, channels in (("48 kHz mono", RATE, 1), ("48 kHz stereo", RATE, 2), ("44.1 kHz stereo", 44100, 2)):
        rtfs = []
        for mixture in mixes[:4]:
            mix = mixture.mix if rate == RATE else resampled(mixture.mix, rate)
            rtfs.append(separate(mix, rate, channels).cpu_s / (len(mix) / rate))
        with BedSeparator(rate, channels) as probe:
            latency_ms = probe.latency_ms
        out.append((label, rtfs, latency_ms))
    return out


def resampled(audio: Audio, rate: int) -> Audio:
    from livedub.dubbing.audio import resample

    return resample(audio.astype(np.float32), RATE, rate).astype(np.float64)


def p50_range(values: list[float], digits: int = 1) -> str:
    return f"{np.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def table(rows: list[Row]) -> Iterator[str]:
    yield (
        "| mode | original voice left, dB re dub | voice kept, dB re original voice | (shadow-filter voice kept, dB)"
        " | music kept, dB re original music | background SI-SDR vs music, dB | CPU RTF per stream |"
    )
    yield "|---|---|---|---|---|---|---|"
    names = ("voice_left_db", "voice_kept_db", "shadow_voice_kept_db", "music_kept_db", "bed_si_sdr_db")
    for row in rows:
        cells = " | ".join(p50_range([getattr(levels, name) for levels in row.levels]) for name in names)
        yield f"| {row.mode} | {cells} | {np.median(row.rtf):.4f} |"


def mixture_table(mixes: list[Mixture], rows: list[Row]) -> Iterator[str]:
    """Voice and music kept per mixture, for the separate mode and duck -15 dB (the spread behind the p50)."""
    by_mode = {row.mode: row.levels for row in rows}
    yield "| mixture | music | separate: voice kept (dB) | separate: music kept (dB) | duck -15 dB: voice kept (dB) |"
    yield "|---|---|---|---|---|"
    for i, mixture in enumerate(mixes):
        sep, ducked = by_mode["separate"][i], by_mode["duck -15 dB"][i]
        yield (
            f"| {i} | {mixture.music_name} | {sep.voice_kept_db:.1f} | {sep.music_kept_db:.1f}"
            f" | {ducked.voice_kept_db:.1f} |"
        )


def cpu_table(cpu: list[tuple[str, list[float], float]]) -> Iterator[str]:
    yield "| separator input | CPU RTF per stream p50 (min..max) | latency (ms) |"
    yield "|---|---|---|"
    for label, rtfs, latency_ms in cpu:
        yield f"| {label} | {p50_range(rtfs, 3)} | {latency_ms:.1f} |"


def machine() -> str:
    commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load}; commit {commit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixtures", type=int, default=10)
    parser.add_argument("--write", type=Path, help="write the tables into this markdown file (replacing its results)")
    args = parser.parse_args()
    mixes = mixtures(args.mixtures)
    seconds = sum(len(m.mix) for m in mixes) / RATE
    rows = measure(mixes)
    cpu = separator_cpu(mixes)
    header = f"{len(mixes)} mixtures, {seconds:.0f} s in all, speech/music {SNR_DB:.0f} dB; {machine()}"
    lines = [header, "", *table(rows), "", *mixture_table(mixes, rows), "", *cpu_table(cpu)]
    print("\n".join(lines))
    if args.write:
        write(args.write, lines)


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def write(path: Path, lines: list[str]) -> None:
    """Replace the text between the results markers (the prose around them stays)."""
    text = path.read_text()
    head, _, rest = text.partition(RESULTS_START)
    _, _, tail = rest.partition(RESULTS_END)
    path.write_text(f"{head}{RESULTS_START}\n" + "\n".join(lines) + f"\n{RESULTS_END}{tail}")


if __name__ == "__main__":
    main()
