"""Whisper's encoder sees only the audio's frames (not the zero-padded 30 s window) when a short window is set."""

from __future__ import annotations

import numpy as np
import pytest

from livedub.dubbing.asr.whisper import FULL_WINDOW_FRAMES, TRAILING_PAD_FRAMES, _short_window_model

pytestmark = pytest.mark.unit


class EncoderStandIn:
    def encode(self, features: np.ndarray) -> int:
        return features.shape[-1]  # how many frames the encoder was given


def padded(content_frames: int, batch: bool = False) -> np.ndarray:
    features = np.zeros((80, FULL_WINDOW_FRAMES), np.float32)
    features[:, :content_frames] = -0.5  # log-mel of quiet audio is not zero; faster-whisper pads with exact zeros
    return features[np.newaxis] if batch else features


def test_the_encoder_gets_the_audio_frames_and_padding_but_at_least_the_minimum() -> None:
    model = _short_window_model(EncoderStandIn)()
    model.min_frames = 1000
    assert model.encode(padded(1200)) == 1200 + TRAILING_PAD_FRAMES
    assert model.encode(padded(1200, batch=True)) == 1200 + TRAILING_PAD_FRAMES
    assert model.encode(padded(100)) == 1000
    assert model.encode(padded(2900)) == FULL_WINDOW_FRAMES


def test_the_full_window_is_the_default() -> None:
    model = _short_window_model(EncoderStandIn)()
    assert model.encode(padded(300)) == FULL_WINDOW_FRAMES
