"""Speech recognition backends."""

from livedub.dubbing.asr.whisper import WhisperASR

__all__ = ["WhisperASR"]
