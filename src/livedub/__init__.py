"""livedub: live dubbing pipeline (RTMP in, dubbed RTMP out)."""

__version__ = "0.1.0"
