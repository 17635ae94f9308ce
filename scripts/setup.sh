#!/usr/bin/env bash
# Idempotent set-up: Debian packages, the .venv, Python packages and the model cache.
# Quiet when everything is already there; long steps say so.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every system file the code reads comes from one of these or their Depends (tests/unit/test_system_files.py).
# --no-install-recommends below: list what is only recommended. asterisk-core-sounds-{en,es} (recommended by the
# -wav packages) carry the prompts' transcripts and the sounds/{en,es} links; asterisk-moh-opsound-wav is the music
# bed of the speech-over-music fixture; stress-ng keeps a core busy for the busy-machine tests; the fr/it sounds are
# the other languages' human test speech; chromium drives the operator page's browser tests; redis-server backs the
# STS fan-out tests.
APT_PACKAGES=(nginx libnginx-mod-rtmp ffmpeg libsrt1.5-gnutls espeak-ng apertium-eng-spa apertium-fr-es
              asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
              asterisk-core-sounds-it-wav
              asterisk-core-sounds-en asterisk-core-sounds-es asterisk-core-sounds-fr asterisk-core-sounds-it
              asterisk-moh-opsound-wav stress-ng chromium chromium-driver redis-server)
# npm fetches hls.js (below); a machine without node gets Debian's.
command -v npm >/dev/null || APT_PACKAGES+=(npm)
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system nginx on port 80 on install; livedub runs its own.
  $SUDO service nginx stop >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.livedub-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    echo "[setup] building llama-cpp-python from source (about 4-6 minutes on 2 cores)..."
  fi
  echo "[setup] installing Python packages into .venv"
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON}" \
    .venv/bin/pip install -q --progress-bar off -e '.[dev,llm]'
  echo "$want" > "$stamp"
fi

.venv/bin/livedub models install --quiet

# Each voice's reference embedding (the dub's voice follows the speaker): synthesised once, then read from the cache.
if [ ! -d "${LIVEDUB_HOME:-$HOME/.cache/livedub}/models/speaker-references" ]; then
  echo "[setup] measuring the voices for speaker matching (once, 20-40 s)"
  .venv/bin/python -m livedub.sts.backends >/dev/null
fi

# hls.js for the operator page (/ui/vendor/hls.min.js), from the npm registry into .cache/npm (git-ignored).
if [ ! -f .cache/npm/node_modules/hls.js/dist/hls.min.js ]; then
  echo "[setup] installing hls.js from the npm registry"
  npm install --prefix .cache/npm --no-audit --no-fund --silent hls.js@1 >/dev/null
fi
