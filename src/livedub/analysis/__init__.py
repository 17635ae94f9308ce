"""A/V sync measurement from content: a flash/beep test pattern and a detector of flash-to-beep offsets."""

from livedub.analysis.avsync import AvSyncReport, measure_av_sync
from livedub.analysis.pattern import PatternSpec, pattern_ffmpeg_args, write_pattern

__all__ = ["AvSyncReport", "PatternSpec", "measure_av_sync", "pattern_ffmpeg_args", "write_pattern"]
