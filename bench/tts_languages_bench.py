"""Which voice to use per target language: round-trip intelligibility of every voice that ships here, and ASR-BLEU.

    flock /tmp/livedub-cpu.lock .venv/bin/python bench/tts_languages_bench.py --n 10 --out bench/results/languages.md

WER section: for each language, N of its own Asterisk prompt transcripts are synthesised by every candidate voice
(Piper joe for English; every Kokoro style of the voices npz fed the language's espeak-ng IPA; SVOX Pico's voice
for the language and its lower `+low` variant where Pico speaks it; espeak-ng's male voice and its `+f3` female
variant; `--candidates` keeps some of them), and the real Whisper (forced to the language; beam 5, VAD, the pipeline's
encoder window STS_ASR_MIN_WINDOW_S) transcribes them. Per voice: per-prompt WER p50 and mean, and CPU seconds per
second of speech (the process and its children, so espeak-ng's subprocess counts).

BLEU section: the same prompt names in English (Spanish for English as a target) → the LLM → the language's best
voice of the WER section → Whisper → BLEU (sacrebleu) against the target language's own transcripts of those
prompts (the packages share prompt names, so they are reference translations). MT BLEU is the text before speech.
Text is normalised before scoring (lower case, accents and punctuation removed).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench_device import add_device_option, placed_models, with_device
from livedub.dubbing.audio import resample
from livedub.dubbing.interfaces import ASRBackend, TTSBackend
from livedub.languages import LANGUAGES, VoiceRef
from livedub.sts.backends import asr_device
from livedub.sts.settings import StsSettings
from livedub.testing import corpus

LANGS = tuple(LANGUAGES)


def normalise(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return " ".join("".join(c if c.isalnum() else " " for c in plain).split())


def cpu_s() -> float:
    """CPU seconds of this process and its finished children (espeak-ng runs as a subprocess; Pico's process, which
    lives on, is read by score_voice)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def prompt_names(n: int) -> list[str]:
    """N prompt names that every language has, sentences of 4+ English words and at most 8 s, spread over the
    sorted names (so not all from one menu)."""
    prompts = {language: corpus.load_prompts(language) for language in LANGS}
    shared = sorted(set.intersection(*(set(p) for p in prompts.values())))
    good = [
        name
        for name in shared
        if len(prompts["en"][name].text.split()) >= 4 and all(prompts[lang][name].duration_s <= 8.0 for lang in LANGS)
    ]
    step = max(1, len(good) // n)
    return good[::step][:n]


@dataclass
class VoiceScore:
    language: str
    voice: VoiceRef
    wers: list[float]
    cpu_per_speech_s: float

    @property
    def p50(self) -> float:
        return float(np.percentile(self.wers, 50)) * 100

    @property
    def mean(self) -> float:
        return statistics.mean(self.wers) * 100


class Backends:
    def __init__(self, settings: StsSettings) -> None:
        from livedub.dubbing.asr import WhisperASR
        from livedub.dubbing.model_files import cpu_threads, resolve_model_dir

        self.settings = settings
        threads = cpu_threads(settings.cpu_threads)
        self.threads = threads
        # The pipeline's Whisper with beam 5 and VAD (its shorter encoder window: 2-2.5x faster, same words).
        self.listener: ASRBackend = WhisperASR(
            resolve_model_dir(settings.asr_model), asr_device(settings), 5, True, threads, settings.asr_min_window_s
        )  # type: ignore[assignment]
        self._tts: dict[str, TTSBackend] = {}

    def tts(self, ref: VoiceRef) -> TTSBackend:
        from livedub.dubbing import tts
        from livedub.dubbing.model_files import resolve_model, resolve_model_dir

        key = f"piper:{ref.voice}" if ref.backend == "piper" else ref.backend
        if key not in self._tts:
            if ref.backend == "piper":
                self._tts[key] = tts.PiperTTS(resolve_model(ref.voice), self.settings.device)
            elif ref.backend == "kokoro":
                self._tts[key] = tts.KokoroTTS(
                    resolve_model_dir(self.settings.kokoro_model), cpu_threads=self.threads, device=self.settings.device
                )
            elif ref.backend == "pico":
                self._tts[key] = tts.PicoTTS()
            else:
                self._tts[key] = tts.EspeakTTS(self.settings.espeak_binary)
            self._tts[key].synthesize("Hello there.", "en")  # the first inference is slow: keep it out of the timing
        return self._tts[key]

    def candidates(self, language: str, only: set[str] | None = None) -> list[VoiceRef]:
        """Every voice that ships for `language`; `only`: those whose backend or `backend:voice` is named."""
        from livedub.dubbing.tts.pico import PICO_VOICES, PicoTTS

        def wanted(backend: str, voice: str = "") -> bool:
            return not only or backend in only or f"{backend}:{voice}" in only

        row = LANGUAGES[language]
        refs = [VoiceRef("piper", "piper-en_US-joe-medium", "male")] if language == "en" else []
        if wanted("kokoro") or any(name.startswith("kokoro:") for name in only or ()):
            kokoro = self.tts(VoiceRef("kokoro", "", "unknown"))
            refs += [
                VoiceRef("kokoro", v, "female" if v.startswith("jf_") else "male")
                for v in kokoro.voices  # type: ignore[attr-defined]
            ]
        if PicoTTS.capabilities.speaks(language):  # one female speaker per language; `+low` for a male one
            refs += [
                VoiceRef("pico", PICO_VOICES[language], "female"),
                VoiceRef("pico", f"{PICO_VOICES[language]}+low", "male"),
            ]
        refs += [VoiceRef("espeak-ng", row.espeak, "male"), VoiceRef("espeak-ng", f"{row.espeak}+f3", "female")]
        return [ref for ref in refs if wanted(ref.backend, ref.voice)]

    def speak(self, ref: VoiceRef, text: str, language: str) -> np.ndarray:
        backend = self.tts(ref)
        audio = backend.synthesize(text, language, ref.voice)
        return np.clip(resample(np.asarray(audio, dtype=np.float32), backend.sample_rate, 16000), -1, 1)


def score_voice(backends: Backends, language: str, ref: VoiceRef, names: list[str]) -> VoiceScore:
    import jiwer

    prompts = corpus.load_prompts(language)
    wers, spent, speech_s = [], 0.0, 0.0
    backend = backends.tts(ref)
    # Pico speaks in a process of its own that lives on: its CPU is read from it.
    worker_cpu_s = getattr(backend, "worker_cpu_s", lambda: 0.0)
    for name in names:
        text = prompts[name].text
        started = cpu_s() + worker_cpu_s()
        audio = backends.speak(ref, text, language)
        spent += cpu_s() + worker_cpu_s() - started
        speech_s += len(audio) / 16000
        heard = normalise(backends.listener.transcribe(audio, LANGUAGES[language].whisper).text)
        wers.append(min(1.0, jiwer.wer(normalise(text), heard or "-")))
    return VoiceScore(language, ref, wers, spent / max(speech_s, 1e-6))


def human_score(backends: Backends, language: str, names: list[str]) -> VoiceScore:
    """The same Whisper on the human recordings (8 kHz telephone prompts): what a perfect voice could score."""
    import jiwer

    prompts = corpus.load_prompts(language)
    wers = []
    for name in names:
        heard = normalise(backends.listener.transcribe(prompts[name].audio(16000), LANGUAGES[language].whisper).text)
        wers.append(min(1.0, jiwer.wer(normalise(prompts[name].text), heard or "-")))
    return VoiceScore(language, VoiceRef("human", "asterisk prompts"), wers, 0.0)


def wer_section(
    backends: Backends, names: list[str], languages: tuple[str, ...], only: set[str] | None = None
) -> dict[str, list[VoiceScore]]:
    scores: dict[str, list[VoiceScore]] = {}
    for language in languages:
        human = human_score(backends, language, names)
        print(f"  {language} human recordings WER p50 {human.p50:.1f} mean {human.mean:.1f}", file=sys.stderr)
        scores.setdefault(language, []).append(human)
        for ref in backends.candidates(language, only):
            started = time.perf_counter()
            score = score_voice(backends, language, ref, names)
            print(
                f"  {language} {ref} WER p50 {score.p50:.1f} mean {score.mean:.1f} cpu/s {score.cpu_per_speech_s:.3f}"
                f" ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )
            scores.setdefault(language, []).append(score)
        scores[language].sort(key=lambda s: (s.voice.backend != "human", s.mean, s.p50))
    return scores


def wer_table(scores: dict[str, list[VoiceScore]], n: int) -> str:
    lines = [
        f"### Round-trip WER per voice ({n} prompts per language, Whisper forced to the language)\n",
        "| language | voice | gender | WER p50 | WER mean | CPU s per s of speech |",
        "|---|---|---|---|---|---|",
    ]
    for language, rows in scores.items():
        for s in rows:
            lines.append(
                f"| {language} | `{s.voice}` | {s.voice.gender} | {s.p50:.1f} % | {s.mean:.1f} % |"
                f" {s.cpu_per_speech_s:.3f} |"
                if s.voice.backend != "human"
                else f"| {language} | human recordings (reference) | | {s.p50:.1f} % | {s.mean:.1f} % | |"
            )
    return "\n".join(lines) + "\n"


def bleu_section(backends: Backends, names: list[str], voices: dict[str, VoiceRef]) -> str:
    import sacrebleu

    from livedub.dubbing.model_files import resolve_model
    from livedub.dubbing.translate import LlmTranslator

    s = backends.settings
    llm = LlmTranslator(resolve_model(s.llm_model), s.llm_context, backends.threads, s.device)
    lines = [
        f"### ASR-BLEU per target language ({len(names)} prompts; LLM `{backends.settings.llm_model}`)\n",
        "| pair | voice | MT BLEU | ASR-BLEU | MT s per prompt |",
        "|---|---|---|---|---|",
    ]
    for target, voice in voices.items():
        source = "es" if target == "en" else "en"
        sources, references = corpus.load_prompts(source), corpus.load_prompts(target)
        translations, heard, refs, mt_s = [], [], [], 0.0
        for name in names:
            started = time.perf_counter()
            text = llm.translate(sources[name].text, source, target)
            mt_s += time.perf_counter() - started
            audio = backends.speak(voice, text, target)
            translations.append(normalise(text))
            heard.append(normalise(backends.listener.transcribe(audio, LANGUAGES[target].whisper).text))
            refs.append(normalise(references[name].text))
        mt = sacrebleu.corpus_bleu(translations, [refs]).score
        asr_bleu = sacrebleu.corpus_bleu(heard, [refs]).score
        print(f"  {source}->{target} {voice}: MT BLEU {mt:.1f} ASR-BLEU {asr_bleu:.1f}", file=sys.stderr)
        lines.append(f"| {source}→{target} | `{voice}` | {mt:.1f} | {asr_bleu:.1f} | {mt_s / len(names):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    settings = StsSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10, help="prompts per language")
    parser.add_argument("--languages", default=",".join(LANGS), help="comma-separated target languages")
    parser.add_argument("--only", default="wer,bleu", help="sections: wer, bleu, human (the human rows of wer alone)")
    parser.add_argument(
        "--voices", default="", help="bleu without wer: lang=backend:voice,... (default: the table's first voice)"
    )
    parser.add_argument(
        "--candidates",
        default="",
        help="wer: only these voices, comma-separated backends or backend:voice (e.g. pico,kokoro:jm_kumo)",
    )
    parser.add_argument("--out", type=Path, help="also write the report (markdown) here")
    add_device_option(parser, settings)
    args = parser.parse_args(argv)
    languages = tuple(lang.strip() for lang in args.languages.split(",") if lang.strip())
    sections = {s.strip() for s in args.only.split(",")}
    started_wall, started_cpu = time.perf_counter(), cpu_s()
    backends = Backends(with_device(settings, args.device))
    names = prompt_names(args.n)
    print(f"prompts: {', '.join(names)}", file=sys.stderr)
    parts = [f"Prompts: {', '.join(f'`{n}`' for n in names)}\n"]
    voices = {language: LANGUAGES[language].voices[0] for language in languages}
    for item in filter(None, args.voices.split(",")):
        language, _, voice = item.partition("=")
        voices[language] = VoiceRef.parse(voice)
    if "wer" in sections:
        only = {c.strip() for c in args.candidates.split(",") if c.strip()} or None
        scores = wer_section(backends, names, languages, only)
        parts.append(wer_table(scores, len(names)))
        if not args.voices:  # the best synthesised voice (the human row comes first)
            voices = {language: rows[1].voice for language, rows in scores.items()}
    if "human" in sections and "wer" not in sections:
        scores = {language: [human_score(backends, language, names)] for language in languages}
        parts.append(wer_table(scores, len(names)))
    if "bleu" in sections:
        parts.append(bleu_section(backends, names, voices))
    parts.append(
        f"Run: {time.perf_counter() - started_wall:.0f} s wall, {cpu_s() - started_cpu:.0f} s CPU; models:"
        f" {placed_models()} "
        f"(`bench/tts_languages_bench.py {' '.join(argv if argv is not None else sys.argv[1:])}`)\n"
    )
    report = "\n".join(parts)
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
