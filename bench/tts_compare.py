"""Spanish TTS comparison: espeak-ng vs Kokoro-82M (every voice style) by round-trip ASR WER and DNSMOS.

    .venv/bin/python bench/tts_compare.py --n 40

Same as `bench/sts_bench.py --only tts --all-voices --n-prompts N`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sts_bench import main

if __name__ == "__main__":
    args = sys.argv[1:]
    n = args[args.index("--n") + 1] if "--n" in args else "40"
    sys.exit(main(["--only", "tts", "--all-voices", "--n-prompts", n]))
