"""E2E settings in one place: languages, segmenting, timeouts and the bounds the full-pipeline test asserts.

Ports are not fixed: the services manager picks free ones at start (see `helpers/services_manager.py`), so the
suite runs next to a `livedub up` on the default ports. `LIVEDUB_E2E_*` environment variables override the
timeouts for slower machines.
"""

from __future__ import annotations

import os
from pathlib import Path


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"

# The pipeline under test: what `livedub up` runs (phrase streaming, the default delay line), English to Spanish,
# on the speech-over-music fixture. The echo stack runs the seed's scenario, fixed 6 s fragments, for the flash/beep
# A/V check: its delay line covers a 6 s fragment and the echo round trip.
SOURCE_LANGUAGE = "en"
TARGET_LANGUAGE = "es"
ECHO_SEGMENT_POLICY = "fixed"
ECHO_SEGMENT_DURATION_MS = 6000
ECHO_OUTPUT_DELAY_MS = 8000

# Timeouts (seconds).
STS_WARMUP_PAIRS = "en-es,en-fr,es-en"  # the full pipeline's pair, then test_many_outputs.py's
STS_WARMUP_TIMEOUT_S = _env_float("LIVEDUB_E2E_STS_WARMUP_S", 240)  # models load and warm up before /health is 200
SERVICE_HEALTH_TIMEOUT_S = 30
INPUT_APPEARS_WITHIN_S = 10  # publish -> input stream listed by the media server
WORKER_METRICS_WITHIN_S = 10  # publish -> the worker's series in the media-service metrics
OUTPUT_END_TIMEOUT_S = 110  # publish -> output stream unpublished (60 s + delay line + drain)
E2E_BUDGET_S = _env_float("LIVEDUB_E2E_BUDGET_S", 300)  # the whole E2E session, services included

# Bounds.
# Share of the input's speech (seconds, VAD) that plays dubbed. Measured at the default 6 s delay line: 100 % on a
# quiet machine; 78 % and 93 % with one of the 2 cores kept busy by stress-ng (CI machines are not idle).
MIN_SPEECH_DUBBED = 0.75
MIN_FRAGMENTS = 8  # 12 prompts; a phrase may hold two prompts separated by a short pause
# All transcripts vs the fixture's text (Whisper base over a music bed); phrases dropped before ASR count as deletions.
# Measured: 0.21 with 93 % of the speech dubbed, 0.36 with 78 %.
MAX_AGGREGATE_WER = 0.40
OUTPUT_DURATION_RANGE_S = (59.0, 61.0)
MIN_VIDEO_PACKET_COVERAGE = 0.98  # share of the input's video packets found, in order, in the output
MAX_OUTPUT_GAP_S = 0.05  # between consecutive output packets' timestamps, beyond their duration: no stall
MIN_OUTPUT_ASR_RECALL = 0.35  # share of the translations' content words an ASR pass (es) finds in the output audio
MAX_OUTPUT_ENGLISH_SHARE = 0.10  # English function words heard in the output (the ducked original voice under the dub,
# phrases that kept it; 5 % measured with 93 % of the speech dubbed)
MUSIC_IN_PAUSES_DB = 1.5  # the bed in the long pauses (after a dub that ran into them): at its original level
# The bed under the prompts (pooled): ducked where dubs play (-15 dB), audible (not gone). Measured: -13.1 dB with every
# phrase dubbed on time, -5.9 dB with one core loaded (dubs start later, up to DUB_MAX_LATE_MS), -0.2 dB with none.
MUSIC_UNDER_DUB_DB = (-20.0, -4.0)
AV_SYNC_MAX_DELTA_MS = 20.0  # every phrase start
ECHO_MAX_MARKER_OFFSET_MS = 20.0  # flash-to-beep offset of every marker, STS in echo mode
ECHO_PATTERN_SECONDS = 16.0

# Words that tell Spanish from English text (short function words, accent-free forms included).
SPANISH_STOPWORDS = frozenset(
    """
    el la los las un una unos unas de del al y o que en es son por para con sin su sus se lo le les no ha han
    esta este estas estos está están ser sido fue hay muy más mas como cuando ya su tu usted ustedes favor
    su mensaje llamada número numero conferencia por favor gracias ahora nuevo nueva le ha sido
    """.split()
)
ENGLISH_STOPWORDS = frozenset(
    """
    the is are was were you your please will has have been this that with for and of to be not on it at by from
    into now there their they which who when
    """.split()
)
