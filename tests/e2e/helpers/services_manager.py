"""Session-wide services for the E2E suite: two livedub stacks as real processes on free ports.

* `main`: media server + STS with the real models (`STS_PIPELINE=dub`) + media-service, en -> es, the defaults
  (phrase streaming, the default delay line): what `livedub up` runs.
* `echo`: media server + STS in echo mode (returns the original audio) + media-service, the seed's fixed 6 s
  fragments, for the content-based flash/beep A/V check, which needs the original audio to come back.

Both reuse `livedub.stack.Stack`, the same orchestration `livedub up` and `livedub demo` run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from e2e import config
from livedub.stack import ServiceError, Stack, StackConfig, free_ports


class ServicesManager:
    def __init__(self, log_root: Path, with_echo: bool = True) -> None:
        self.log_root = log_root
        ports = free_ports(8)
        common = {
            "source_language": config.SOURCE_LANGUAGE,
            "target_language": config.TARGET_LANGUAGE,
            "health_timeout_s": config.SERVICE_HEALTH_TIMEOUT_S,
        }

        def stack(name: str, ports: list[int], pipeline: str, sts_health_timeout_s: float, **extra: object) -> Stack:
            rtmp, stat, sts, media = ports
            cfg = StackConfig(
                rtmp_port=rtmp,
                rtmp_http_port=stat,
                sts_port=sts,
                media_port=media,
                sts_pipeline=pipeline,
                sts_health_timeout_s=sts_health_timeout_s,
                log_dir=log_root / name,
                **common,  # type: ignore[arg-type]
                **extra,  # type: ignore[arg-type]
            )
            return Stack(cfg, progress=lambda msg: self.note(f"{name}: {msg}"))

        # The main STS also serves the other-language scenarios (test_many_outputs.py): their pairs warm up first.
        self.main = stack(
            "main", ports[:4], "dub", config.STS_WARMUP_TIMEOUT_S, sts_env={"STS_WARMUP_PAIRS": config.STS_WARMUP_PAIRS}
        )
        self.echo: Stack | None = None
        if with_echo:
            self.echo = stack(
                "echo", ports[4:], "echo", config.SERVICE_HEALTH_TIMEOUT_S,
                segment_policy=config.ECHO_SEGMENT_POLICY,
                segment_duration_ms=config.ECHO_SEGMENT_DURATION_MS,
                output_delay_ms=config.ECHO_OUTPUT_DELAY_MS,
            )  # fmt: skip
        self.notes: list[str] = []
        self.started_at = time.monotonic()
        self.startup_s: float | None = None

    @property
    def stacks(self) -> list[Stack]:
        return [s for s in (self.main, self.echo) if s is not None]

    def note(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.started_at:6.1f}s] {msg}"
        self.notes.append(line)
        print(line, flush=True)

    def start(self) -> ServicesManager:
        """Start both stacks at once (the real STS takes longest: its models warm up) and wait for health."""
        errors: list[BaseException] = []

        def run(stack: Stack) -> None:
            try:
                stack.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in self.stacks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise ServiceError("; ".join(str(e) for e in errors))
        self.startup_s = time.monotonic() - self.started_at
        return self

    def stop(self) -> None:
        for stack in self.stacks:
            stack.stop()

    def orphans(self) -> list[str]:
        return [o for stack in self.stacks for o in stack.orphans()]

    def logs(self, lines: int = 80) -> dict[str, str]:
        result: dict[str, str] = {}
        for label, stack in (("main", self.main), ("echo", self.echo)):
            if stack is None:
                continue
            for name, text in stack.logs(lines).items():
                result[f"{label}/{name}"] = text
        return result
