"""STS benchmark on human speech (asterisk prompts): latency per stage, ASR WER, MT chrF, ASR-BLEU, TTS comparison.

    .venv/bin/python bench/sts_bench.py --n 10               # everything, 10 fragments / 40 prompts per measure
    .venv/bin/python bench/sts_bench.py --only latency --n 3 # one section
    .venv/bin/python bench/sts_bench.py --out docs/benchmarks-sts.md

Sections:
- latency: 6 s fragments (48 kHz pcm, as the media-service sends them) through `DubbingPipeline` for each backend
  combination; per-stage and total seconds p50/p95 and the real-time factor (processing time / fragment duration),
  plus ASR-BLEU: BLEU of an ASR pass over the dub against the other language's transcripts of the same prompts.
- asr: Whisper word error rate on single prompts against their transcripts.
- mt: chrF/BLEU of the translators on the prompts' gold transcripts against the other language's transcripts.
- tts: Spanish synthesisers compared by round-trip ASR WER and DNSMOS (naturalness predictor).

Text is normalised before scoring (lower case, accents and punctuation removed): the Spanish transcripts are
written without accents ("numero", "contrasena"), which would otherwise count as errors.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dnsmos import dnsmos_scores
from livedub import corpus
from livedub.protocol import AudioFormat, FragmentData, StreamConfig
from livedub.sts.audio import decode_audio, mono_payload, resample
from livedub.sts.interfaces import ASRBackend, Translator, TTSBackend
from livedub.sts.pipeline import DubbingPipeline
from livedub.sts.settings import StsSettings

RATE = 48000
SECTIONS = ("latency", "asr", "mt", "tts")
# (source, target, translator, tts)
COMBINATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("en", "es", "llm", "kokoro"),
    ("en", "es", "apertium", "espeak-ng"),
    ("en", "es", "apertium", "kokoro"),
    ("en", "es", "llm", "espeak-ng"),
    ("es", "en", "llm", "piper"),
    ("es", "en", "apertium", "piper"),
)


def normalise(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return " ".join("".join(c if c.isalnum() else " " for c in plain).split())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class Models:
    """Every backend, loaded once and shared by the combinations."""

    def __init__(self, settings: StsSettings) -> None:
        self.settings = settings
        self._cache: dict[str, object] = {}

    def _get(self, key: str, build: Callable[[], object]) -> object:
        if key not in self._cache:
            started = time.perf_counter()
            self._cache[key] = build()
            print(f"  loaded {key} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return self._cache[key]

    def asr(self) -> ASRBackend:
        from livedub.sts.asr import WhisperASR
        from livedub.sts.model_files import cpu_threads, resolve_model_dir

        s = self.settings
        return self._get(  # type: ignore[return-value]
            "asr",
            lambda: WhisperASR(
                resolve_model_dir(s.asr_model), s.asr_device, s.asr_beam_size, s.asr_vad, cpu_threads(s.cpu_threads)
            ),
        )

    def translator(self, kind: str) -> Translator:
        from livedub.sts import translate
        from livedub.sts.model_files import cpu_threads, resolve_model

        s = self.settings
        builders: dict[str, Callable[[], object]] = {
            "llm": lambda: translate.LlmTranslator(resolve_model(s.llm_model), s.llm_context, cpu_threads(0)),
            "apertium": lambda: translate.ApertiumTranslator(s.apertium_binary),
        }
        return self._get(f"mt:{kind}", builders[kind])  # type: ignore[return-value]

    def tts(self, kind: str) -> TTSBackend:
        from livedub.sts import tts
        from livedub.sts.model_files import resolve_model, resolve_model_dir

        s = self.settings
        builders: dict[str, Callable[[], object]] = {
            "piper": lambda: tts.PiperTTS(resolve_model(s.piper_voice)),
            "kokoro": lambda: tts.KokoroTTS(resolve_model_dir(s.kokoro_model), s.kokoro_voice),
            "espeak-ng": lambda: tts.EspeakTTS(s.espeak_binary),
        }
        return self._get(f"tts:{kind}", builders[kind])  # type: ignore[return-value]


def markdown_table(headers: list[str], rows: Iterable[list[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- latency + ASR-BLEU


@dataclass
class ComboResult:
    name: str
    asr: list[float] = field(default_factory=list)
    translation: list[float] = field(default_factory=list)
    tts: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    dub_transcripts: list[str] = field(default_factory=list)
    translations: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)


def run_latency(models: Models, n: int, combos: tuple[tuple[str, str, str, str], ...]) -> str:
    import sacrebleu

    results: list[ComboResult] = []
    asr = models.asr()
    for source, target, mt_kind, tts_kind in combos:
        name = f"{source}→{target} {mt_kind}+{tts_kind}"
        print(f"latency: {name}", file=sys.stderr)
        pipeline = DubbingPipeline(
            models.settings,
            asr=asr,
            translators={(source, target): models.translator(mt_kind)},
            tts={target: models.tts(tts_kind)},
            pairs=((source, target),),
        )
        pipeline.warmup()
        config = StreamConfig(source_language=source, target_language=target, format=AudioFormat.PCM_S16LE)
        result = ComboResult(name)
        for seq, clip in enumerate(corpus.speech_clips(source, 6.0, reference_language=target, limit=n)):
            audio = resample(clip.audio, clip.sample_rate, RATE)
            fragment = FragmentData(
                fragment_id=f"bench-{seq}",
                stream_id="bench",
                sequence_number=seq,
                audio=mono_payload(audio, RATE, AudioFormat.PCM_S16LE),
            )
            started = time.perf_counter()
            processed = pipeline.process(fragment, config)
            result.total.append(time.perf_counter() - started)
            result.asr.append(processed.stage_timings.asr_ms / 1000)
            result.translation.append(processed.stage_timings.translation_ms / 1000)
            result.tts.append(processed.stage_timings.tts_ms / 1000)
            result.durations.append(clip.duration_s)
            result.statuses[processed.status.value] += 1
            heard = ""
            if processed.dubbed_audio is not None:
                dub = decode_audio(processed.dubbed_audio.decode_bytes(), AudioFormat.PCM_S16LE, RATE, 1, 16000)
                heard = asr.transcribe(dub, target).text
            result.dub_transcripts.append(normalise(heard))
            result.translations.append(normalise(processed.translated_text or ""))
            result.references.append(normalise(clip.reference or ""))
        results.append(result)

    rows = []
    for r in results:
        rtf = sum(r.total) / sum(r.durations)
        rows.append(
            [
                r.name,
                len(r.total),
                f"{pct(r.asr, 50):.2f} / {pct(r.asr, 95):.2f}",
                f"{pct(r.translation, 50):.2f} / {pct(r.translation, 95):.2f}",
                f"{pct(r.tts, 50):.2f} / {pct(r.tts, 95):.2f}",
                f"{pct(r.total, 50):.2f} / {pct(r.total, 95):.2f}",
                f"{rtf:.2f}",
                " ".join(f"{k} {v}" for k, v in sorted(r.statuses.items())),
                sacrebleu.corpus_chrf(r.translations, [r.references]).score,
                sacrebleu.corpus_bleu(r.dub_transcripts, [r.references]).score,
            ]
        )
    mean_s = statistics.mean(d for r in results for d in r.durations)
    return (
        f"### Latency per {mean_s:.1f} s fragment (seconds, p50 / p95) and ASR-BLEU\n\n"
        + markdown_table(
            [
                "combination",
                "n",
                "ASR",
                "translation",
                "TTS",
                "total",
                "RTF",
                "status",
                "chrF (cascade)",
                "ASR-BLEU",
            ],
            rows,
        )
        + "\n\nRTF = processing time / fragment duration. chrF (cascade) scores the translation of the ASR"
        " transcript; ASR-BLEU is BLEU of Whisper's transcript of the dub, both against the target-language"
        " transcripts of the same prompts. Total includes decode, duration fit and encode.\n"
    )


# ---------------------------------------------------------------- ASR WER


def run_asr(models: Models, n: int) -> str:
    import jiwer

    asr = models.asr()
    rows = []
    for language in corpus.LANGUAGES:
        # Whisper decodes 30 s windows; the few longer prompts (menus) are left out, as fragments never are that long.
        prompts = [p for p in corpus.load_prompts(language).values() if p.duration_s <= 28.0][:n]
        hypotheses, references, seconds, audio_s = [], [], 0.0, 0.0
        print(f"asr: {language} ({len(prompts)} prompts)", file=sys.stderr)
        for prompt in prompts:
            audio = prompt.audio(asr.sample_rate)
            started = time.perf_counter()
            hypotheses.append(normalise(asr.transcribe(audio, language).text))
            seconds += time.perf_counter() - started
            audio_s += len(audio) / asr.sample_rate
            references.append(normalise(prompt.text))
        wer = jiwer.wer(references, hypotheses) * 100
        rows.append([language, len(prompts), f"{wer:.1f} %", f"{seconds / audio_s:.3f}"])
    return (
        f"### ASR word error rate (Whisper base int8, beam {models.settings.asr_beam_size}, Silero VAD)\n\n"
        + markdown_table(["language", "prompts", "WER", "RTF"], rows)
        + "\n"
    )


# ---------------------------------------------------------------- MT chrF


def run_mt(models: Models, n: int) -> str:
    import sacrebleu

    rows = []
    for source, target in (("en", "es"), ("es", "en")):
        pairs = corpus.shared_prompts(source, target)[:n]
        references = [normalise(tgt.text) for _, tgt in pairs]
        for kind in ("llm", "apertium"):
            translator = models.translator(kind)
            print(f"mt: {source}→{target} {kind} ({len(pairs)} prompts)", file=sys.stderr)
            outputs, times = [], []
            for src, _ in pairs:
                started = time.perf_counter()
                outputs.append(normalise(translator.translate(src.text, source, target)))
                times.append(time.perf_counter() - started)
            rows.append(
                [
                    f"{source}→{target}",
                    kind,
                    len(pairs),
                    sacrebleu.corpus_chrf(outputs, [references]).score,
                    sacrebleu.corpus_bleu(outputs, [references]).score,
                    f"{pct(times, 50):.2f} / {pct(times, 95):.2f}",
                ]
            )
    return (
        "### Translation quality on the prompts' transcripts (gold input)\n\n"
        + markdown_table(["direction", "translator", "prompts", "chrF", "BLEU", "s per prompt p50 / p95"], rows)
        + "\n"
    )


# ---------------------------------------------------------------- TTS comparison (Spanish)


def run_tts(
    models: Models,
    n: int,
    language: str = "es",
    kinds: tuple[str, ...] = ("espeak-ng", "kokoro"),
    all_voices: bool = False,
) -> str:
    """With `all_voices`, every Kokoro voice style is scored (the configured one is the default)."""
    import jiwer

    from livedub.sts.model_files import resolve_model_dir
    from livedub.sts.tts import KokoroTTS

    asr = models.asr()
    # Sentences (3+ words) short enough that even a slow synthesiser stays inside one 30 s Whisper window.
    prompts = [p for p in corpus.load_prompts(language).values() if len(p.text.split()) >= 3 and p.duration_s <= 12.0][
        :n
    ]
    references = [normalise(p.text) for p in prompts]
    rows = []
    human = [dnsmos_scores(p.audio(16000)) for p in prompts]
    rows.append(["human prompts (8 kHz recordings)", len(prompts), "-", *_mos_cells(human), "-"])
    synthesisers: list[tuple[str, TTSBackend]] = [(kind, models.tts(kind)) for kind in kinds]
    if all_voices:
        kokoro_dir = resolve_model_dir(models.settings.kokoro_model)
        default_voice = getattr(models.tts("kokoro"), "voice", "")
        for voice in KokoroTTS(kokoro_dir).voices:
            if voice != default_voice:
                synthesisers.append(("kokoro", KokoroTTS(kokoro_dir, voice)))
    for kind, tts in synthesisers:
        print(f"tts: {tts.name} ({len(prompts)} prompts)", file=sys.stderr)
        heard, scores, seconds, audio_s = [], [], 0.0, 0.0
        for prompt in prompts:
            started = time.perf_counter()
            audio = tts.synthesize(prompt.text, language)
            seconds += time.perf_counter() - started
            audio_s += len(audio) / tts.sample_rate
            audio16 = np.clip(resample(audio, tts.sample_rate, 16000), -1, 1)
            heard.append(normalise(asr.transcribe(audio16, language).text))
            scores.append(dnsmos_scores(audio16))
        wer = jiwer.wer(references, heard) * 100
        rtf = seconds / audio_s
        rows.append([f"{kind} ({tts.name})", len(prompts), f"{wer:.1f} %", *_mos_cells(scores), f"{rtf:.3f}"])
    return (
        f"### TTS comparison ({language}): round-trip ASR WER and DNSMOS\n\n"
        + markdown_table(["synthesiser", "prompts", "round-trip WER", "DNSMOS OVRL", "SIG", "BAK", "RTF"], rows)
        + "\n\nRound trip: Whisper transcribes the synthesised prompt text, scored against that text. DNSMOS"
        " (Microsoft's non-intrusive MOS predictor, 1–5, the ONNX models shipped in the `speechmos` wheel) predicts"
        " naturalness/quality.\n"
    )


def _mos_cells(scores: list[dict[str, float]]) -> list[float]:
    return [statistics.mean(s[key] for s in scores) for key in ("ovrl", "sig", "bak")]


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10, help="fragments per combination (latency)")
    parser.add_argument("--n-prompts", type=int, default=None, help="prompts per language for asr/mt/tts (4x --n)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--combos", default="all", help="'all', 'main' (the four required) or indices like 0,4")
    parser.add_argument("--all-voices", action="store_true", help="tts: score every Kokoro voice style")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}")
    if args.combos == "all":
        combos = COMBINATIONS
    elif args.combos == "main":
        combos = (COMBINATIONS[0], COMBINATIONS[1], COMBINATIONS[4], COMBINATIONS[5])
    else:
        combos = tuple(COMBINATIONS[int(i)] for i in args.combos.split(","))
    n_prompts = args.n_prompts or 4 * args.n

    models = Models(StsSettings())
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    parts = []
    for section in sections:
        if section == "latency":
            parts.append(run_latency(models, args.n, combos))
        elif section == "asr":
            parts.append(run_asr(models, n_prompts))
        elif section == "mt":
            parts.append(run_mt(models, n_prompts))
        elif section == "tts":
            parts.append(run_tts(models, n_prompts, all_voices=args.all_voices))
        print(parts[-1], flush=True)
    command = "python bench/sts_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} with {os.cpu_count()} CPU cores"
        f" (no GPU), `{command.strip()}`, {time.perf_counter() - started:.0f} s; 1-min load average"
        f" {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (the cores are shared).\n"
    )
    print(header)
    if args.out:
        args.out.write_text(header + "\n" + "\n".join(parts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
