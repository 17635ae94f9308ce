"""Human speech with transcripts: the Asterisk core sound prompts (Debian `asterisk-core-sounds-{en,es,fr,it}[-wav]`).

The packages share prompt names, so a prompt's Spanish (French, Italian) transcript is a reference translation
of its English one (and the other way round). Tests, benchmarks and fixtures build ~6 s speech clips from them.

    prompts = load_prompts("en")                 # name -> Prompt(name, language, path, text)
    pairs = shared_prompts("en", "es")           # [(en_prompt, es_prompt), ...]
    clips = speech_clips("en", target_s=6.0)     # [SpeechClip(audio @16 kHz, text, names), ...]
    clips = speech_clips("en", reference_language="es")  # only shared names; clip.reference = Spanish text
"""

from __future__ import annotations

import gzip
import re
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

SOUNDS_DIR = Path("/usr/share/asterisk/sounds")
TRANSCRIPTS = "/usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
LANGUAGES = ("en", "es", "fr", "it")
# Sub-folders of single words (digits, letters, ...) make poor sentences; left out unless asked for.
WORD_FOLDERS = ("digits", "letters", "phonetic", "silence")

_BRACKETED = re.compile(r"\[[^\]]*\]")


class CorpusMissingError(RuntimeError):
    """The Debian sound package (or its transcript file) is not installed."""


@dataclass(frozen=True)
class Prompt:
    name: str  # e.g. "agent-pass" or "followme/call-from"
    language: str
    path: Path
    text: str

    @property
    def duration_s(self) -> float:
        with wave.open(str(self.path), "rb") as wav:
            return wav.getnframes() / wav.getframerate()

    def audio(self, sample_rate: int = 16000) -> npt.NDArray[np.float32]:
        """Mono float32 samples at `sample_rate` (the files are 8 kHz 16-bit mono)."""
        return read_wav(self.path, sample_rate)


@dataclass(frozen=True)
class SpeechClip:
    language: str
    names: tuple[str, ...]
    audio: npt.NDArray[np.float32]
    sample_rate: int
    text: str  # transcript of the clip, the prompts' texts joined
    reference: str | None = None  # the same prompts' text in `reference_language`, when asked for

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


def read_wav(path: str | Path, sample_rate: int | None = None) -> npt.NDArray[np.float32]:
    """Read a 16-bit PCM wav as mono float32, resampled to `sample_rate` when given."""
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit PCM wav is supported")
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    if sample_rate and sample_rate != rate:
        from livedub.dubbing.audio import resample  # PyAV; imported here so reading texts needs no audio stack

        audio = resample(audio, rate, sample_rate)
    return audio


def clean_text(text: str) -> str:
    """Drop bracketed descriptions ("[ascending tones]") and squeeze spaces."""
    return " ".join(_BRACKETED.sub(" ", text).split())


@cache
def load_prompts(language: str, include_word_folders: bool = False) -> dict[str, Prompt]:
    """Prompts that have both a wav file and a spoken transcript, by name."""
    if language not in LANGUAGES:
        raise ValueError(f"no asterisk prompts for language {language!r}; have {LANGUAGES}")
    transcripts = Path(TRANSCRIPTS.format(lang=language))
    sounds = SOUNDS_DIR / language
    if not transcripts.exists():  # the -wav package only recommends the one with the transcripts
        package = f"asterisk-core-sounds-{language}"
        raise CorpusMissingError(f"{transcripts} is missing: install the Debian package {package}")
    if not sounds.exists():  # a link (alternative) made by asterisk-core-sounds-{language} to the -wav files
        packages = f"asterisk-core-sounds-{language} asterisk-core-sounds-{language}-wav"
        raise CorpusMissingError(f"{sounds} is missing: install the Debian packages {packages}")
    prompts: dict[str, Prompt] = {}
    with gzip.open(transcripts, "rt", encoding="utf-8-sig") as lines:
        for line in lines:
            name, sep, raw_text = line.partition(":")
            name, text = name.strip(), clean_text(raw_text)
            if not sep or not name or name.startswith(";") or not text:
                continue
            if not include_word_folders and name.split("/")[0] in WORD_FOLDERS:
                continue
            path = sounds / f"{name}.wav"
            if path.exists():
                prompts[name] = Prompt(name=name, language=language, path=path, text=text)
    return prompts


def shared_prompts(source: str, target: str) -> list[tuple[Prompt, Prompt]]:
    """Prompts present in both languages (same name), sorted by name."""
    src, tgt = load_prompts(source), load_prompts(target)
    return [(src[name], tgt[name]) for name in sorted(src.keys() & tgt.keys())]


def _join(texts: list[str]) -> str:
    # Asterisk transcripts often lack a final full stop; add one so joined prompts stay separate sentences.
    return " ".join(t if t[-1] in ".?!…" else t + "." for t in texts)


def speech_clips(
    language: str,
    target_s: float = 6.0,
    *,
    sample_rate: int = 16000,
    gap_s: float = 0.3,
    reference_language: str | None = None,
    limit: int | None = None,
) -> list[SpeechClip]:
    """Clips of about `target_s` seconds made by concatenating consecutive prompts (sorted by name) with short gaps.

    A clip stays between 0.75× and 1.25× `target_s`; prompts longer than 1.25× are skipped. With
    `reference_language`, only prompts shared with that language are used and each clip carries their reference text.
    """
    prompts = load_prompts(language)
    references = load_prompts(reference_language) if reference_language else None
    names = sorted(prompts if references is None else prompts.keys() & references.keys())
    low, high = 0.75 * target_s, 1.25 * target_s
    clips: list[SpeechClip] = []
    group: list[Prompt] = []
    group_s = 0.0

    def emit() -> None:
        gap = np.zeros(round(gap_s * sample_rate), dtype=np.float32)
        pieces: list[npt.NDArray[np.float32]] = []
        for prompt in group:
            pieces.extend([prompt.audio(sample_rate), gap])
        reference = _join([references[p.name].text for p in group]) if references is not None else None
        clips.append(
            SpeechClip(
                language=language,
                names=tuple(p.name for p in group),
                audio=np.concatenate(pieces[:-1]),
                sample_rate=sample_rate,
                text=_join([p.text for p in group]),
                reference=reference,
            )
        )

    for name in names:
        if limit is not None and len(clips) >= limit:
            break
        prompt = prompts[name]
        duration = prompt.duration_s
        if duration > high:
            continue
        added = duration + (gap_s if group else 0.0)
        if group and group_s + added > high:
            group, group_s = [], 0.0  # would overshoot: drop the short group and start afresh
            added = duration
        group.append(prompt)
        group_s += added
        if group_s >= low:
            emit()
            group, group_s = [], 0.0
    return clips
