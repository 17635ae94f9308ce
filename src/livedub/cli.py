"""`livedub` command line. Each subcommand lives in the module that owns it (``cli_main(argv) -> int``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help). Modules are imported lazily so `livedub models ...` starts fast.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("livedub.models.cli", "install / list the local model cache"),
    "sts": ("livedub.sts.server", "run the STS (speech-to-speech) Socket.IO service, port 3000"),
    "dub-file": ("livedub.sts.dub_file", "dub an audio/video file with the STS pipeline"),
    "media": ("livedub.media.service.app", "run the media-service (workers, /health, /metrics), port 8080"),
    "media-server": ("livedub.mediaserver.nginx", "run the embedded RTMP media server (nginx-rtmp), port 1935"),
    "up": ("livedub.stack", "run the whole stack and wait for your own stream"),
    "demo": ("livedub.demo", "run the whole stack on the sample fixture and write the dubbed result"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="livedub", description="Live dubbing pipeline.")
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text)
        if argv and argv[0] not in {"-h", "--help"}:
            parser.error(f"unknown command {argv[0]!r}")
        parser.print_help()
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.cli_main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
