"""SVOX Pico (the `py-nanotts` wheel, Apache-2.0): small rule-and-HMM voices for es-ES, fr-FR, it-IT, de-DE, en-US
and en-GB, one female speaker each, 16 kHz, about 0.01 CPU s per second of speech. Much better understood than
espeak-ng (round-trip WER: docs/benchmarks-languages.md): the fast voice of the languages it speaks.

Voices: the lingware name (`es-ES`), or `default` for the language's; `+low` speaks it lower (pitch 0.8), the
stand-in for a male speaker: `pico:es-ES+low`.

Pico's input is markup, not text: `<speed level="500">` changes the rate, `<genfile file="/path">` writes the audio
to any file, `<play file=...>` reads one. Translations come from a model fed the speaker's words, so every tag is
removed (and a stray `<`, `>`) before Pico sees the text: `sanitise()`. Pico itself runs in a child process
(`_Worker`): it is old C code fed hostile text, it reads memory it never wrote (a hang, seen), and it would hold the
GIL while it speaks; a call that does not answer in `timeout_s` costs that process, not the server.
"""

from __future__ import annotations

import html
import json
import os
import re
import select
import struct
import subprocess
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livedub.dubbing.interfaces import FloatAudio
from livedub.dubbing.translate.base import split_sentences
from livedub.dubbing.tts.registry import FastVoices, TTSCapabilities, VoiceBackendSpec, register
from livedub.languages import VoiceRef

# The Pico lingware of each language of livedub.languages that it speaks (de-DE and en-GB also ship).
PICO_VOICES = {"es": "es-ES", "fr": "fr-FR", "it": "it-IT", "en": "en-US", "de": "de-DE"}
OTHER_VOICES = {"en-GB": "en"}
# Pitch of each variant (`es-ES+low`): 0.8 lowers the female voice towards a male one and keeps it understood
# (docs/benchmarks-languages.md).
PITCHES = {"": 1.0, "low": 0.8}
SAMPLE_RATE = 16000
# At its own volume (1.0) Pico saturates 16-bit samples (0.7 % of a Spanish sentence's, 0.2 % of an Italian one's);
# at 0.6 none clip, and its level (RMS about 0.15) is Kokoro's and Piper's.
VOLUME = 0.6
MAX_CHARS = 300  # text per call (`chunks`)
AND = {"es": "y", "fr": "et", "it": "e", "en": "and", "de": "und"}  # `&` spoken

# An SGML/XML-ish tag or comment or processing instruction: `<speed level='5'>`, `</pitch>`, `<!-- -->`, `<?x?>`.
_TAG = re.compile(r"<(?:[/?]?[A-Za-z]|!)[^<>]*>")
_ANGLE = re.compile(r"[<>]")


class PicoMarkupOnlyError(ValueError):
    """The text was nothing but markup: no words are left to speak once the tags are removed."""


def sanitise(text: str, language: str = "") -> str:
    """`text` with no Pico markup left: tags removed, then every `<` `>` left (an unclosed tag's: its words are read,
    none can act) and control or format characters (a NUL would cut Pico's C string) turned into spaces, `&` into
    the language's "and". Entities are decoded first (Pico decodes none: it would read `&amp;` out as letters, and
    `&lt;tag&gt;` is a tag once decoded). Whitespace collapsed."""
    text = html.unescape(text)  # `&lt;speed&gt;` becomes a tag, and is removed with the others
    text = _TAG.sub(" ", text)
    text = _ANGLE.sub(" ", text)
    text = text.replace("&", f" {AND.get(language, '')} ")
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return " ".join(text.split())


def speakable(text: str, language: str = "") -> str:
    """`sanitise(text)`; PicoMarkupOnlyError when `text` had something in it but only markup."""
    clean = sanitise(text, language)
    if text.strip() and not clean:
        raise PicoMarkupOnlyError(f"nothing to speak in {text[:80]!r} once its markup is removed")
    return clean


def chunks(text: str, max_chars: int = MAX_CHARS) -> list[str]:
    """Whole sentences, packed into pieces of at most `max_chars` (a longer sentence alone): Pico holds the GIL while
    it speaks (about 8 ms per second of speech), so a long text is spoken a few sentences per call. A call ends in
    about 1 s of silence, so a usual phrase is one call."""
    pieces: list[str] = []
    for sentence in split_sentences(text):
        if pieces and len(pieces[-1]) + 1 + len(sentence) <= max_chars:
            pieces[-1] += " " + sentence
        else:
            pieces.append(sentence)
    return pieces


def voice_of(voice: str, language: str) -> tuple[str, float]:
    """(Pico lingware, pitch) of a voice name for `language`; ValueError when Pico does not speak the language or
    the voice is another language's."""
    expected = PICO_VOICES.get(language)
    if expected is None:
        raise ValueError(f"SVOX Pico does not speak {language!r} (it speaks {', '.join(sorted(PICO_VOICES))})")
    name, _, variant = ("" if voice in {"default", ""} else voice).partition("+")
    if variant not in PITCHES:
        raise ValueError(
            f"unknown Pico voice variant {variant!r} in {voice!r} (have +{', +'.join(filter(None, PITCHES))})"
        )
    name = name or expected
    if name != expected and OTHER_VOICES.get(name) != language:
        raise ValueError(f"Pico voice {name!r} does not speak {language!r} (its voice: {expected})")
    return name, PITCHES[variant]


# The child process that runs Pico: a JSON request a line in, `<status u8><length u32><PCM or error>` out.
# M_MMAP_THRESHOLD (-3) fixed at 1 MiB: each call's 2.5 MB Pico arena is then always fresh mmap'd (zeroed) pages.
# glibc otherwise raises the threshold after the first free and hands back a used heap block, and Pico, which reads
# memory it never wrote, can then loop forever (seen: `x` * 1000 after a long text). A parent that dies takes it along
# (end of stdin; PR_SET_PDEATHSIG for a hang).
_WORKER = r"""
import ctypes, json, struct, sys
try:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 20)
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: never outlive the STS, even in a hang
except (OSError, AttributeError):
    pass
from py_nanotts import NanoTTS
engine, out = NanoTTS(), sys.stdout.buffer
for line in sys.stdin.buffer:
    try:
        payload, status = engine.speak(**json.loads(line)), 0
    except Exception as exc:
        payload, status = f"{type(exc).__name__}: {exc}".encode(), 1
    out.write(struct.pack("<BI", status, len(payload)) + payload)
    out.flush()
"""


class PicoTimeoutError(RuntimeError):
    """Pico did not answer in time: its process was killed (the next call starts another)."""


class _Worker:
    """Pico in its own process: it runs hostile text through old C code (a crash or a hang costs that process, not
    the server), and it would hold the GIL while it speaks. One request at a time (the caller's lock)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
            )
        return self._proc

    def speak(self, request: dict[str, object], timeout_s: float) -> bytes:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            deadline = time.monotonic() + timeout_s
            status, length = struct.unpack("<BI", self._read(proc, 5, deadline))
            payload = self._read(proc, length, deadline)
        except PicoTimeoutError:
            self.close()
            raise
        except (OSError, EOFError) as exc:  # it died (a crash on some input): the next call starts another
            self.close()
            raise RuntimeError(f"SVOX Pico's process ended: {exc}") from exc
        if status:
            raise RuntimeError(f"SVOX Pico failed: {payload.decode(errors='replace')}")
        return payload

    def _read(self, proc: subprocess.Popen[bytes], n: int, deadline: float) -> bytes:
        assert proc.stdout is not None
        fd, data = proc.stdout.fileno(), bytearray()
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise PicoTimeoutError(f"SVOX Pico did not answer in time (its process {proc.pid} was stopped)")
            chunk = os.read(fd, n - len(data))
            if not chunk:
                raise EOFError(f"exit status {proc.wait()}")
            data += chunk
        return bytes(data)

    def cpu_s(self) -> float:
        """CPU seconds its process has used (Linux /proc; 0 when none runs)."""
        if self._proc is None or self._proc.poll() is not None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout) if proc is not None else ():
            if pipe is not None:
                pipe.close()


class PicoTTS:
    name = "pico"
    sample_rate = SAMPLE_RATE
    capabilities = TTSCapabilities(languages=frozenset(PICO_VOICES), speaking_rate=True)

    def __init__(self, timeout_s: float = 10.0) -> None:
        """`timeout_s`: the most one call (up to MAX_CHARS of text, about 0.2 CPU s) may take before Pico's process is
        stopped; generous for a loaded machine."""
        import py_nanotts  # noqa: F401  (installed: fail here, not in the child)

        self.timeout_s = timeout_s
        self._worker = _Worker()
        self._lock = threading.Lock()  # one request at a time on the pipe
        self.voices = [*PICO_VOICES.values(), *OTHER_VOICES]

    def close(self) -> None:
        with self._lock:
            self._worker.close()

    _worker: _Worker | None = None  # none until __init__ has started one (a failed __init__ leaves none to close)

    def __del__(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def worker_cpu_s(self) -> float:
        """CPU seconds of Pico's process so far (benchmarks: it is not a finished child of this one)."""
        return self._worker.cpu_s()

    def synthesize(self, text: str, language: str, voice: str = "default", speed: float = 1.0) -> FloatAudio:
        """`voice`: `es-ES`, `es-ES+low`, or `default` (the language's); `speed` > 1 speaks faster (Pico's rate)."""
        lingware, pitch = voice_of(voice, language)
        if not text.strip():
            return np.zeros(0, dtype=np.float32)
        clean = speakable(text, language)
        pieces = []
        for chunk in chunks(clean):
            request = {
                "text": chunk,
                "voice": lingware,
                "speed": None if speed == 1.0 else speed,
                "pitch": None if pitch == 1.0 else pitch,
                "volume": VOLUME,
            }
            with self._lock:
                pcm = self._worker.speak(request, self.timeout_s)
            pieces.append(np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0)
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class PicoSettings:
    timeout_s: float = 10.0  # the most one call may take before Pico's process is stopped


def _default_voice(language: str) -> VoiceRef:
    """Its one (female) speaker of the language."""
    return VoiceRef("pico", voice_of("default", language)[0], "female")


def _complete(ref: VoiceRef, language: str) -> VoiceRef:
    """One female speaker per language; `+low` speaks lower: the stand-in for a male speaker."""
    if ref.gender != "unknown":
        return ref
    return VoiceRef("pico", ref.voice, "male" if voice_of(ref.voice, language)[1] < 1.0 else "female")


# The fast voice of the languages it speaks well: round-trip WER (docs/benchmarks-languages.md), female then `+low`.
FAST_VOICES = (
    FastVoices(  # ~0.01 s CPU per s of speech (Kokoro: ~0.9; espeak-ng's es: 33 % WER)
        "es",
        (VoiceRef("pico", "es-ES", "female"), VoiceRef("pico", "es-ES+low", "male")),
        loss=0.047,  # low: 6.1 %
    ),
    FastVoices(  # the usual voices' own: ~0.007 s CPU per s of speech (Kokoro: ~0.8)
        "fr", (VoiceRef("pico", "fr-FR", "female"), VoiceRef("pico", "fr-FR+low", "male")), loss=0.157
    ),
    FastVoices(  # ~0.008 s CPU per s of speech (espeak-ng's it: 45.7 %)
        "it",
        (VoiceRef("pico", "it-IT", "female"), VoiceRef("pico", "it-IT+low", "male")),
        loss=0.089,  # low: 7.8 %
    ),
)


register(
    VoiceBackendSpec(
        "pico",
        PicoTTS.capabilities,
        PicoSettings,
        build=lambda settings, _voice: PicoTTS(settings.timeout_s),
        default_voice=_default_voice,
        complete=_complete,
        check=lambda ref, language: voice_of(ref.voice, language),  # one lingware per language
        fast_voices=FAST_VOICES,
    )
)


__all__ = [
    "FAST_VOICES",
    "PICO_VOICES",
    "PicoMarkupOnlyError",
    "PicoTTS",
    "PicoTimeoutError",
    "chunks",
    "sanitise",
    "speakable",
    "voice_of",
]
