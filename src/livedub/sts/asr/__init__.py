"""Speech recognition backends."""

from livedub.sts.asr.whisper import WhisperASR

__all__ = ["WhisperASR"]
