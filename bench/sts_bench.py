"""STS benchmark on human speech (asterisk prompts) over a music bed: per-stage latency and RTF, chrF, ASR-BLEU.

    .venv/bin/python bench/sts_bench.py --only latency,mt --combos 0 --n 12       # the default en→es path
    .venv/bin/python bench/sts_bench.py --only latency --combos 0 --n 12 --save after.json --before \
        bench/results/sts-before.json                                              # before → after table
    .venv/bin/python bench/sts_bench.py --out docs/benchmarks-sts.md

Run it under the shared CPU lock (`flock /tmp/livedub-cpu.lock ...`): the cores are shared.

Sections:
- latency: pieces through `DubbingPipeline.process` (the engine behind the STS server, 48 kHz pcm in and out) for
  each backend combination, two kinds of piece: `phrase` (single prompts of 1.5-4 s, whole sentences, as the media
  side cuts at pauses) and `6s` (~6 s clips of consecutive prompts). Each piece has 0.25 s of music before and after
  and the Asterisk music-on-hold (Debian `asterisk-moh-opsound-wav`) under the speech, `--music-db` below it.
  Per stage p50/p95 seconds and RTF (compute seconds per second of audio), the first piece after warm-up, chrF of
  the cascade's translation and ASR-BLEU (BLEU of a fixed Whisper listener over the dub), both against the other
  language's transcripts of the same prompts. `--save` keeps the rows as JSON; `--before` prints before → after.
- asr: Whisper word error rate on single prompts against their transcripts: the same prompts in every language
  (names all of them have), sentences of 3 words or more, as one-word prompts make a WER of two or three words.
- mt: chrF/BLEU of the translators on the prompts' gold transcripts against the other language's transcripts.
- context: the LLM tier on the same gold transcripts, in corpus order, without and with a translation context: the
  two previous prompts and their translations (as the STS gives a stream's last phrases) and/or a glossary
  (`--glossary`, default bench/glossary-telephony.tsv). chrF, BLEU, how often the one-shot example leaked into an
  answer (the model's raw answers, and what is left after the translator's check), glossary terms honoured, seconds
  per prompt.
- tts: Spanish synthesisers compared by round-trip ASR WER and DNSMOS (naturalness predictor).

Text is normalised before scoring (lower case, accents and punctuation removed): the Spanish transcripts are
written without accents ("numero", "contrasena"), which would otherwise count as errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_device import add_device_option, placed_models, with_device
from dnsmos import dnsmos_scores
from livedub.dubbing.audio import resample
from livedub.dubbing.interfaces import ASRBackend, Translator, TTSBackend
from livedub.protocol import AudioFormat, FragmentData, StreamConfig
from livedub.sts.backends import asr_device
from livedub.sts.payload_audio import decode_audio, mono_payload
from livedub.sts.pipeline import DubbingPipeline
from livedub.sts.settings import StsSettings
from livedub.testing import corpus

RATE = 48000
SECTIONS = ("latency", "asr", "mt", "context", "tts")
GLOSSARY = Path(__file__).resolve().parent / "glossary-telephony.tsv"
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
        from livedub.dubbing.asr import WhisperASR
        from livedub.dubbing.model_files import cpu_threads, resolve_model_dir

        s = self.settings
        return self._get(  # type: ignore[return-value]
            "asr",
            lambda: WhisperASR(
                resolve_model_dir(s.asr_model),
                asr_device(s),
                s.asr_beam_size,
                s.asr_vad,
                cpu_threads(s.cpu_threads),
                s.asr_min_window_s,
            ),
        )

    def listener(self) -> ASRBackend:
        """The ASR that scores dubs (ASR-BLEU), fixed (beam 5, VAD, full 30 s window) so that tuning the pipeline's
        ASR does not move the score."""
        from livedub.dubbing.asr import WhisperASR
        from livedub.dubbing.model_files import cpu_threads, resolve_model_dir

        s = self.settings
        return self._get(  # type: ignore[return-value]
            "listener",
            lambda: WhisperASR(resolve_model_dir(s.asr_model), asr_device(s), 5, True, cpu_threads(s.cpu_threads)),
        )

    def translator(self, kind: str) -> Translator:
        from livedub.dubbing import translate
        from livedub.dubbing.model_files import cpu_threads, resolve_model

        s = self.settings
        builders: dict[str, Callable[[], object]] = {
            "llm": lambda: translate.LlmTranslator(resolve_model(s.llm_model), s.llm_context, cpu_threads(0), s.device),
            "apertium": lambda: translate.ApertiumTranslator(s.apertium_binary),
        }
        return self._get(f"mt:{kind}", builders[kind])  # type: ignore[return-value]

    def tts(self, kind: str, language: str = "es") -> TTSBackend:
        """The synthesiser `kind` speaking with the language table's first voice of that backend for `language`."""
        from livedub.dubbing import tts
        from livedub.dubbing.model_files import cpu_threads, resolve_model, resolve_model_dir
        from livedub.languages import LANGUAGES

        s = self.settings
        voice = next((v.voice for v in LANGUAGES[language].voices if v.backend == kind), "")
        builders: dict[str, Callable[[], object]] = {
            "piper": lambda: tts.PiperTTS(resolve_model(voice or "piper-en_US-joe-medium"), s.device),
            "kokoro": lambda: tts.KokoroTTS(
                resolve_model_dir(s.kokoro_model), voice, cpu_threads=cpu_threads(s.cpu_threads), device=s.device
            ),
            "espeak-ng": lambda: tts.EspeakTTS(s.espeak_binary),
        }
        return self._get(f"tts:{kind}:{voice}", builders[kind])  # type: ignore[return-value]


def markdown_table(headers: list[str], rows: Iterable[list[object]]) -> str:
    def cell(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- latency + ASR-BLEU

MOH_DIR = Path("/usr/share/asterisk/moh")  # Debian asterisk-moh-opsound-wav: the music bed under the speech
PAD_S = 0.25  # music-only lead and tail around each piece, as a cut at pauses leaves
PHRASE_S = (1.5, 4.0)  # phrase pieces: single prompts of this length (the media side cuts 1.5-4 s phrases)
STAGES = ("asr", "translation", "tts", "other")


@dataclass(frozen=True)
class Piece:
    audio: np.ndarray  # mono float at RATE: speech with music under it
    text: str
    reference: str


def music_bed(seconds: float, offset_s: float) -> np.ndarray:
    """`seconds` of the first Asterisk music-on-hold track at RATE, looped, starting `offset_s` in."""
    tracks = sorted(MOH_DIR.glob("*.wav"))
    if not tracks:
        raise SystemExit(f"no music in {MOH_DIR}: install the Debian package asterisk-moh-opsound-wav")
    track = _track(str(tracks[0]))
    start = round(offset_s * RATE) % len(track)
    reps = 2 + round(seconds * RATE) // len(track)
    return np.tile(track, reps)[start : start + round(seconds * RATE)]


_TRACKS: dict[str, np.ndarray] = {}


def _track(path: str) -> np.ndarray:
    if path not in _TRACKS:
        _TRACKS[path] = corpus.read_wav(path, RATE)
    return _TRACKS[path]


def with_music(speech: np.ndarray, snr_db: float | None, offset_s: float) -> np.ndarray:
    """Speech (at RATE) padded by PAD_S of bed on each side, music mixed `snr_db` below the speech's RMS."""
    pad = np.zeros(round(PAD_S * RATE), np.float32)
    speech = np.concatenate([pad, speech.astype(np.float32), pad])
    if snr_db is None:
        return speech
    bed = music_bed(len(speech) / RATE, offset_s)
    voiced = speech[np.abs(speech) > 0.01]
    speech_rms = float(np.sqrt(np.mean(voiced**2))) if len(voiced) else 0.1
    bed_rms = float(np.sqrt(np.mean(bed**2))) or 1.0
    return np.clip(speech + bed * (speech_rms / bed_rms) * 10 ** (-snr_db / 20), -1, 1).astype(np.float32)


def pieces(source: str, target: str, kind: str, n: int, snr_db: float | None) -> list[Piece]:
    """`phrase`: single prompts of PHRASE_S seconds (whole sentences, like a cut at pauses); `6s`: ~6 s clips."""
    out: list[Piece] = []
    if kind == "phrase":
        for src, tgt in corpus.shared_prompts(source, target):
            if len(out) >= n:
                break
            if PHRASE_S[0] <= src.duration_s <= PHRASE_S[1] and len(src.text.split()) >= 3:
                audio = with_music(src.audio(RATE), snr_db, offset_s=7.0 * len(out))
                out.append(Piece(audio, src.text, tgt.text))
        return out
    for i, clip in enumerate(corpus.speech_clips(source, 6.0, reference_language=target, limit=n)):
        audio = with_music(resample(clip.audio, clip.sample_rate, RATE), snr_db, offset_s=7.0 * i)
        out.append(Piece(audio, clip.text, clip.reference or ""))
    return out


@dataclass
class ComboResult:
    name: str
    kind: str
    seconds: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in (*STAGES, "total")})
    durations: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    dub_transcripts: list[str] = field(default_factory=list)
    translations: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)

    def row(self) -> dict[str, object]:
        import sacrebleu

        audio_s = sum(self.durations)
        stats = {
            stage: [pct(v, 50), pct(v, 95), sum(v) / audio_s, v[0] if v else float("nan")]
            for stage, v in self.seconds.items()
        }
        return {
            "name": self.name,
            "kind": self.kind,
            "n": len(self.durations),
            "mean_s": statistics.mean(self.durations) if self.durations else 0.0,
            "stats": stats,  # stage -> [p50 s, p95 s, RTF, first piece s]
            "status": " ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())),
            "chrf": sacrebleu.corpus_chrf(self.translations, [self.references]).score,
            "asr_bleu": sacrebleu.corpus_bleu(self.dub_transcripts, [self.references]).score,
        }


def run_latency(
    models: Models, n: int, combos: tuple[tuple[str, str, str, str], ...], kinds: list[str], snr_db: float | None
) -> list[dict[str, object]]:
    """Each piece goes through `DubbingPipeline.process` as the server runs it (48 kHz pcm in and out)."""
    listener = models.listener()
    rows = []
    for source, target, mt_kind, tts_kind in combos:
        name = f"{source}→{target} {mt_kind}+{tts_kind}"
        pipeline = DubbingPipeline(
            models.settings,
            asr=models.asr(),
            translators={(source, target): models.translator(mt_kind)},
            tts={target: models.tts(tts_kind, target)},
            pairs=((source, target),),
        )
        pipeline.warmup()
        config = StreamConfig(source_language=source, target_language=target, format=AudioFormat.PCM_S16LE)
        for kind in kinds:
            print(f"latency: {name} {kind}", file=sys.stderr)
            result = ComboResult(name, kind)
            for seq, piece in enumerate(pieces(source, target, kind, n, snr_db)):
                fragment = FragmentData(
                    fragment_id=f"bench-{seq}",
                    stream_id="bench",
                    sequence_number=seq,
                    audio=mono_payload(piece.audio, RATE, AudioFormat.PCM_S16LE),
                )
                started = time.perf_counter()
                processed = pipeline.process(fragment, config)
                total = time.perf_counter() - started
                t = processed.stage_timings
                stages = {"asr": t.asr_ms / 1000, "translation": t.translation_ms / 1000, "tts": t.tts_ms / 1000}
                stages["other"] = max(0.0, total - sum(stages.values()))  # decode, fit, encode
                for stage, seconds in {**stages, "total": total}.items():
                    result.seconds[stage].append(seconds)
                result.durations.append(len(piece.audio) / RATE)
                result.statuses[processed.status.value] += 1
                heard = ""
                if processed.dubbed_audio is not None:
                    dub = decode_audio(processed.dubbed_audio.decode_bytes(), AudioFormat.PCM_S16LE, RATE, 1, 16000)
                    heard = listener.transcribe(dub, target).text
                result.dub_transcripts.append(normalise(heard))
                result.translations.append(normalise(processed.translated_text or ""))
                result.references.append(normalise(piece.reference))
            rows.append(result.row())
    return rows


def _p(stats: dict[str, list[float]], stage: str) -> str:
    p50, p95, _rtf, _first = stats[stage]
    return f"{p50:.2f} / {p95:.2f}"


def latency_table(rows: list[dict[str, object]], snr_db: float | None) -> str:
    table = []
    for r in rows:
        stats: dict[str, list[float]] = r["stats"]  # type: ignore[assignment]
        table.append(
            [
                r["name"],
                f"{r['kind']} ({r['mean_s']:.1f} s)",
                r["n"],
                *(_p(stats, s) for s in (*STAGES, "total")),
                " / ".join(f"{stats[s][2]:.2f}" for s in (*STAGES, "total")),
                f"{stats['total'][3]:.2f}",
                r["status"],
                r["chrf"],
                r["asr_bleu"],
            ]
        )
    bed = "no music" if snr_db is None else f"music bed {snr_db:g} dB under the speech"
    return (
        f"### Latency per piece (seconds, p50 / p95), RTF and ASR-BLEU ({bed})\n\n"
        + markdown_table(
            [
                "combination",
                "pieces",
                "n",
                "ASR",
                "translation",
                "TTS",
                "other",
                "total",
                "RTF asr / mt / tts / other / total",
                "first piece s",
                "status",
                "chrF (cascade)",
                "ASR-BLEU",
            ],
            table,
        )
        + "\n\nRTF = compute seconds / seconds of audio sent (the piece, with its 0.25 s lead and tail). 'other' is"
        " decode, duration fit and encode. 'first piece' is the first piece after warm-up. chrF (cascade) scores the"
        " translation of the ASR transcript; ASR-BLEU is BLEU of a fixed listener (Whisper base, beam 5) over the"
        " dub; both against the target-language transcripts of the same prompts.\n"
    )


def compare_table(before: list[dict[str, object]], after: list[dict[str, object]]) -> str:
    """Before → after for the rows both runs share (same combination and piece kind)."""
    old = {(r["name"], r["kind"]): r for r in before}
    table = []
    for r in after:
        b = old.get((r["name"], r["kind"]))
        if b is None:
            continue
        bs: dict[str, list[float]] = b["stats"]  # type: ignore[assignment]
        rs: dict[str, list[float]] = r["stats"]  # type: ignore[assignment]
        cells = [f"{bs[s][0]:.2f} → {rs[s][0]:.2f}" for s in (*STAGES, "total")]
        table.append(
            [
                r["name"],
                r["kind"],
                *cells,
                f"{bs['total'][1]:.2f} → {rs['total'][1]:.2f}",
                f"{bs['total'][2]:.2f} → {rs['total'][2]:.2f}",
                f"{bs['total'][3]:.2f} → {rs['total'][3]:.2f}",
                f"{b['chrf']:.1f} → {r['chrf']:.1f}",
                f"{b['asr_bleu']:.1f} → {r['asr_bleu']:.1f}",
            ]
        )
    return (
        "### Before → after (p50 seconds per stage)\n\n"
        + markdown_table(
            [
                "combination",
                "pieces",
                "ASR",
                "translation",
                "TTS",
                "other",
                "total p50",
                "total p95",
                "RTF",
                "first piece s",
                "chrF (cascade)",
                "ASR-BLEU",
            ],
            table,
        )
        + "\n"
    )


# ---------------------------------------------------------------- ASR WER


# A WER is over the references' words: the English and French corpora start with one-word prompts ("Activated.",
# "Added."), so the first prompts gave 100 % from one misheard isolated word ("added" → "I did").
ASR_MIN_WORDS = 3
# Whisper decodes 30 s windows; the few longer prompts (menus) are left out, as fragments never are that long.
ASR_MAX_S = 28.0


def asr_prompt_names(prompts_by_language: Mapping[str, Mapping[str, corpus.Prompt]], n: int) -> list[str]:
    """The first `n` names (sorted) that every language has as a sentence of ASR_MIN_WORDS words or more and at
    most ASR_MAX_S seconds, so that each language's WER is over the same prompts and enough words."""

    def usable(prompt: corpus.Prompt) -> bool:
        return len(normalise(prompt.text).split()) >= ASR_MIN_WORDS and prompt.duration_s <= ASR_MAX_S

    shared = set.intersection(*(set(prompts) for prompts in prompts_by_language.values()))
    names = (name for name in sorted(shared) if all(usable(p[name]) for p in prompts_by_language.values()))
    return list(islice(names, n))


def run_asr(models: Models, n: int) -> str:
    import jiwer

    asr = models.asr()
    prompts_by_language = {language: corpus.load_prompts(language) for language in corpus.LANGUAGES}
    names = asr_prompt_names(prompts_by_language, n)
    rows = []
    for language, by_name in prompts_by_language.items():
        prompts = [by_name[name] for name in names]
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


def run_mt(models: Models, n: int, combos: tuple[tuple[str, str, str, str], ...] = COMBINATIONS) -> str:
    """The translators of `combos`, each direction on its first `n` shared prompts."""
    import sacrebleu

    rows = []
    for source, target in dict.fromkeys((s, t) for s, t, _, _ in combos):
        pairs = corpus.shared_prompts(source, target)[:n]
        references = [normalise(tgt.text) for _, tgt in pairs]
        for kind in dict.fromkeys(k for s, t, k, _ in combos if (s, t) == (source, target)):
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


# ---------------------------------------------------------------- MT with context and glossary (LLM)


def run_context(models: Models, n: int, directions: list[tuple[str, str]], glossary_file: Path) -> str:
    """The LLM on the first `n` shared prompts (of at most 25 words) of each direction, in corpus order, four
    ways: no context, the two previous prompts as context, the glossary, both."""
    import sacrebleu

    from livedub.dubbing import glossary as glossaries
    from livedub.dubbing.interfaces import TranslationContext
    from livedub.dubbing.translate.llm import leaked_example

    translator = models.translator("llm")
    raw: list[tuple[str, str, str, str]] = []  # (sentence, answer, source, target) of every completion
    complete = translator._complete  # type: ignore[attr-defined]

    def recording(messages: list[dict[str, str]], sentence: str, source: str, target: str) -> str:
        answer = complete(messages, sentence, source, target)
        raw.append((sentence, answer, source, target))
        return answer

    translator._complete = recording  # type: ignore[attr-defined]
    terms = glossaries.load_glossary_file(glossary_file)
    rows = []
    for source, target in directions:
        # Phrase-sized prompts (the media side cuts at pauses): the few long menus are left out.
        pairs = [(s, t) for s, t in corpus.shared_prompts(source, target) if len(s.text.split()) <= 25][:n]
        references = [normalise(tgt.text) for _, tgt in pairs]
        entries = terms.get((source, target), ())
        for name, use_previous, use_glossary in (
            ("none", False, False),
            ("previous 2", True, False),
            ("glossary", False, True),
            ("previous 2 + glossary", True, True),
        ):
            print(f"context: {source}→{target} {name} ({len(pairs)} prompts)", file=sys.stderr)
            outputs, times, history, required, honoured = [], [], [], 0, 0
            raw.clear()
            for src, _ in pairs:
                context = TranslationContext(
                    previous=tuple(history[-2:]) if use_previous else (), glossary=entries if use_glossary else ()
                )
                started = time.perf_counter()
                out = translator.translate(src.text, source, target, context)
                times.append(time.perf_counter() - started)
                history.append((src.text, out))
                outputs.append(out)
                needed = glossaries.present(src.text, entries)
                required += len(needed)
                honoured += len(needed) - len(glossaries.missing(out, needed))
            leaks_raw = sum(leaked_example(a, s, src_l, tgt_l) for s, a, src_l, tgt_l in raw)
            leaks_out = sum(
                leaked_example(o, src.text, source, target) for o, (src, _) in zip(outputs, pairs, strict=True)
            )
            plain = [normalise(o) for o in outputs]
            rows.append(
                [
                    f"{source}→{target}",
                    name,
                    len(pairs),
                    sacrebleu.corpus_chrf(plain, [references]).score,
                    sacrebleu.corpus_bleu(plain, [references]).score,
                    f"{leaks_raw} / {len(raw)}",
                    leaks_out,
                    f"{honoured} / {required}",
                    f"{statistics.mean(times):.2f} / {pct(times, 50):.2f}",
                ]
            )
    translator._complete = complete  # type: ignore[attr-defined]
    return (
        f"### LLM translation with context and glossary ({glossary_file.name}; gold input, corpus order)\n\n"
        + markdown_table(
            [
                "direction",
                "context",
                "prompts",
                "chrF",
                "BLEU",
                "example leaks in raw answers",
                "leaks in output",
                "glossary terms honoured",
                "s per prompt mean / p50",
            ],
            rows,
        )
        + "\n\nThe glossary terms honoured are counted in every row (terms of the glossary in the prompt whose"
        " required translation is in the output), also where the glossary was not given. Raw answers: every"
        " completion, retries included.\n"
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

    from livedub.dubbing.model_files import resolve_model_dir
    from livedub.dubbing.tts import KokoroTTS

    asr = models.asr()
    # Sentences (3+ words) short enough that even a slow synthesiser stays inside one 30 s Whisper window.
    prompts = [p for p in corpus.load_prompts(language).values() if len(p.text.split()) >= 3 and p.duration_s <= 12.0][
        :n
    ]
    references = [normalise(p.text) for p in prompts]
    rows = []
    human = [dnsmos_scores(p.audio(16000)) for p in prompts]
    rows.append(["human prompts (8 kHz recordings)", len(prompts), "-", *_mos_cells(human), "-"])
    synthesisers: list[tuple[str, TTSBackend]] = [(kind, models.tts(kind, language)) for kind in kinds]
    if all_voices:
        kokoro_dir = resolve_model_dir(models.settings.kokoro_model)
        default_voice = getattr(models.tts("kokoro", language), "voice", "")
        device = models.settings.device
        for voice in KokoroTTS(kokoro_dir, device=device).voices:
            if voice != default_voice:
                synthesisers.append(("kokoro", KokoroTTS(kokoro_dir, voice, device=device)))
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
    settings = StsSettings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10, help="pieces per combination and kind (latency)")
    parser.add_argument("--n-prompts", type=int, default=None, help="prompts per language for asr/mt/tts (4x --n)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--combos", default="all", help="'all', 'main' (the four required) or indices like 0,4")
    parser.add_argument("--kinds", default="phrase,6s", help="latency pieces: phrase (1.5-4 s prompts), 6s (clips)")
    parser.add_argument("--music-db", default="10", help="music bed this many dB under the speech; 'none': no music")
    parser.add_argument("--save", type=Path, help="latency: write the rows (JSON) here, e.g. for a later --before")
    parser.add_argument("--before", type=Path, help="latency: a --save file of an earlier run: print before → after")
    parser.add_argument("--directions", default="en-es", help="context: language pairs, e.g. en-es,es-en")
    parser.add_argument("--glossary", type=Path, default=GLOSSARY, help="context: glossary file (TSV or JSON)")
    parser.add_argument("--all-voices", action="store_true", help="tts: score every Kokoro voice style")
    parser.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    add_device_option(parser, settings)
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
    snr_db = None if args.music_db == "none" else float(args.music_db)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]

    models = Models(with_device(settings, args.device))
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    parts = []
    for section in sections:
        if section == "latency":
            rows = run_latency(models, args.n, combos, kinds, snr_db)
            parts.append(latency_table(rows, snr_db))
            if args.save:
                args.save.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
            if args.before:
                parts.append(compare_table(json.loads(args.before.read_text(encoding="utf-8")), rows))
        elif section == "asr":
            parts.append(run_asr(models, n_prompts))
        elif section == "mt":
            parts.append(run_mt(models, n_prompts, combos))
        elif section == "context":
            directions = [tuple(d.strip().split("-", 1)) for d in args.directions.split(",") if d.strip()]
            parts.append(run_context(models, n_prompts, directions, args.glossary))  # type: ignore[arg-type]
        elif section == "tts":
            parts.append(run_tts(models, n_prompts, all_voices=args.all_voices))
        print(parts[-1], flush=True)
    command = "python bench/sts_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} with {os.cpu_count()} CPU cores"
        f" (models: {placed_models()}), `{command.strip()}`, {time.perf_counter() - started:.0f} s; 1-min load average"
        f" {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (the cores are shared).\n"
    )
    print(header)
    if args.out:
        args.out.write_text(header + "\n" + "\n".join(parts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
