"""Model settings resolved to files: the engine's rules (livedub.dubbing.model_files), named here for the STS's
callers (benchmarks, tests) that read them beside the STS settings."""

from livedub.dubbing.model_files import cpu_threads, resolve_model, resolve_model_dir

__all__ = ["cpu_threads", "resolve_model", "resolve_model_dir"]
