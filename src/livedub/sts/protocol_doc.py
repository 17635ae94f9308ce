"""Keeps docs/protocol.md true to the code: its tables are generated from `livedub.protocol` and the server's limits.

    python -m livedub.sts.protocol_doc          # rewrite the generated blocks of docs/protocol.md
    python -m livedub.sts.protocol_doc --check  # exit 1 if they are stale (the unit tests do this)

Only the blocks between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->` are rewritten; the prose
around them is written by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Le, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from livedub.protocol import (
    CLIENT_EVENTS,
    SERVER_EVENTS,
    AudioPayload,
    Capability,
    ErrorCode,
    ErrorSimulationRule,
    FragmentError,
    FragmentMetadata,
    GlossaryEntry,
    StageTimings,
    StreamConfig,
)
from livedub.sts.session import (
    HIGH_MAX_INFLIGHT,
    LOW_MAX_INFLIGHT,
    MEDIUM_MAX_INFLIGHT,
    backpressure_level,
)

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

# What each event means on this server, beyond its fields (`(direction, event)` for an event sent both ways).
EVENT_NOTES: dict[str | tuple[str, str], str] = {
    "stream:init": "Opens a session for `stream_id` on this connection. `max_inflight` / `timeout_ms` may be given "
    "at the top level (spec 016) or in `config` (top level wins); `stream:ready.max_inflight` echoes the granted "
    "value. The stream then belongs to this connection: another connection's init of the same id is refused "
    "(`error` UNAUTHORIZED) unless it has the same non-empty `worker_id` (the worker reconnecting: it takes the "
    "session over, same `session_id`). A second init on the same connection restarts the session. Answered by "
    "`stream:ready`, or `error` INVALID_CONFIG / UNSUPPORTED_LANGUAGE / UNAUTHORIZED.",
    "fragment:data": "One audio fragment. Answered by `fragment:ack` and later exactly one `fragment:processed`, "
    "or by an `error` (with `fragment_id`) if refused before acceptance. Served by deadline (arrival + "
    "`deadline_ms`, else + `timeout_ms`), fairly across streams.",
    ("client", "fragment:ack"): "Spec 016's worker acknowledgement of a `fragment:processed` (status `received`): "
    "accepted silently.",
    "stream:pause": "While paused, new fragments are refused (`error` STREAM_PAUSED, retryable); in-flight ones "
    "finish.",
    "stream:resume": "Accept fragments again.",
    "stream:end": "Waits for every in-flight fragment, then answers `stream:complete` and closes the session.",
    "monitor:subscribe": "livedub extension. Joins the read-only room of `stream_id` (all streams when omitted); "
    "needs the monitor key or the API key (see Monitor room). The Socket.IO acknowledgement is `{subscribed: true, "
    "stream_id}`, or `{subscribed: false, ..., error: UNAUTHORIZED}` with an `error` event.",
    "config:error_simulation": "The seed echo service's test hook; **echo pipeline only** (the dubbing pipeline "
    "refuses it: `error` INVALID_CONFIG and a `rejected` ack). Replaces the stream's rules (see Error simulation). "
    "Answered by `config:error_simulation:ack` (also the Socket.IO acknowledgement).",
    "stream:ready": "`capabilities`: "
    + ", ".join(c.value for c in Capability)
    + " (`deadline`, `dub_overrun` and `target_languages`: livedub extensions, `true`).",
    "fragment:ack": "Sent on acceptance, always `queued` first, with `queue_position` = fragments that start before "
    "it (0 = next; as queued now: a more urgent fragment, or another stream's turn, may go ahead of it). A second "
    "ack, `processing`, follows when an inference thread starts it (not when it was answered first).",
    "fragment:processed": "Strictly in `sequence_number` order per stream and target language. With "
    "`config.target_languages` (livedub), one per fragment and target, `target_language` saying which; each target's "
    "answers keep their own order (a slow target never holds another back); the fragment is transcribed once. "
    "`failed` carries `error`; the dub has the fragment's duration (plus at most `dub_overrun_ms`).",
    "fragment:chunk": "livedub extension, only to a client that sent `config.dub_chunks` (capability `dub_chunks`): "
    "each piece of a dub as soon as it is spoken (a clause), in `index` order per fragment and target, before that "
    "target's `fragment:processed`. The first chunk is due by the fragment's deadline, each later one by the time the "
    "chunks before it have played; the answer may then come after the deadline (at most the dub's length later).",
    "backpressure": "Sent when the stream's level changes (both ways) and on each accepted fragment while it is "
    "medium or high.",
    "stream:complete": "`total_duration_ms` is the audio duration of the answered fragments. `statistics`: counts by "
    "status, timeouts, rejections, avg/p95 processing time, session_id, wall_time_ms.",
    "error": "Also copied to the stream's monitors when `stream_id` is set.",
    "config:error_simulation:ack": "`accepted` with the number of rules, or `rejected` with a `message`.",
}

ERROR_NOTES: dict[ErrorCode, str] = {
    ErrorCode.STREAM_NOT_FOUND: "Fragment or control event for a stream not initialised on this connection, or ended.",
    ErrorCode.INVALID_CONFIG: "`stream:init` payload is not an object or does not validate.",
    ErrorCode.UNSUPPORTED_LANGUAGE: "`stream:init` language pair has no configured backends.",
    ErrorCode.INVALID_AUDIO_FORMAT: "Unknown audio format/rate/channels, bad base64, empty or misaligned PCM, or "
    "audio that does not decode (then sent right after that fragment's `failed` fragment:processed).",
    ErrorCode.TIMEOUT: "A fragment not processed by its deadline (`deadline_ms` after its arrival, else the stream's "
    "`timeout_ms`), or whose deadline passed before it started (then answered at once, without processing); in "
    "`fragment:processed.error`, stage `timeout`, retryable.",
    ErrorCode.BACKPRESSURE_EXCEEDED: f"More than {HIGH_MAX_INFLIGHT} fragments in flight; the fragment is refused "
    "(retryable: send it again after a pause).",
    ErrorCode.ASR_FAILED: "Speech recognition failed (in `fragment:processed.error`).",
    ErrorCode.TRANSLATION_FAILED: "Translation failed (in `fragment:processed.error`).",
    ErrorCode.TTS_SYNTHESIS_FAILED: "Speech synthesis failed (in `fragment:processed.error`).",
    ErrorCode.PAYLOAD_TOO_LARGE: "Decoded audio larger than `STS_MAX_FRAGMENT_BYTES`.",
    ErrorCode.UNAUTHORIZED: "`STS_API_KEY` is set and the client did not present it (the connection is refused); "
    "`stream:init` of a stream another connection owns (different `worker_id`); `monitor:subscribe` without the "
    "monitor key.",
    ErrorCode.STREAM_PAUSED: "The seed's: a fragment sent while its stream is paused; severity `warning`, retryable "
    "(send it again after `stream:resume`).",
    ErrorCode.MODEL_ERROR: "The seed's model failure; livedub sends it only when `config:error_simulation` asks for "
    "it (echo pipeline).",
    ErrorCode.GPU_OOM: "The seed's out-of-GPU-memory failure; as MODEL_ERROR, only from error simulation.",
    ErrorCode.INVALID_EVENT: "livedub: any other event that does not validate, unknown event names, duplicate or "
    "already-passed sequence numbers.",
    ErrorCode.INTERNAL_ERROR: "livedub: a bug in the server or the processor; the session keeps working.",
}

NESTED_MODELS: list[type[BaseModel]] = [
    StreamConfig,
    GlossaryEntry,
    AudioPayload,
    StageTimings,
    FragmentError,
    FragmentMetadata,
    ErrorSimulationRule,
]


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(tp))
    if origin is dict:
        return "object"
    if origin is list:
        return "array"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _field_details(name: str, field: FieldInfo) -> list[str]:
    """Constraints and requiredness/default of one field."""
    details = []
    for meta in field.metadata:
        if isinstance(meta, Ge):
            details.append(f"≥ {meta.ge}")
        elif isinstance(meta, Le):
            details.append(f"≤ {meta.le}")
        elif isinstance(meta, MinLen):
            details.append(f"length ≥ {meta.min_length}")
        elif isinstance(meta, MaxLen):
            details.append(f"length ≤ {meta.max_length}")
    if field.is_required():
        details.append("**required**")
    elif field.default_factory is not None:
        details.append("default: now" if name == "timestamp" else "optional")
    elif field.default is not PydanticUndefined and field.default is not None:
        default = field.default.value if isinstance(field.default, Enum) else field.default
        details.append(f"default `{json.dumps(default)}`")
    else:
        details.append("optional")
    if field.description:
        details.append(field.description)
    return details


def _fields_cell(model: type[BaseModel]) -> str:
    return "<br>".join(
        " — ".join([f"`{name}`: {_type_name(field.annotation)}", *_field_details(name, field)])
        for name, field in model.model_fields.items()
    )


def events_table() -> str:
    rows = ["| Event | Direction | Payload | Fields | Notes |", "|---|---|---|---|---|"]
    for side, direction, events in (
        ("client", "client → STS", CLIENT_EVENTS),
        ("server", "STS → client", SERVER_EVENTS),
    ):
        for event, model in events.items():
            note = EVENT_NOTES.get((side, event)) or EVENT_NOTES[event]
            rows.append(f"| `{event}` | {direction} | `{model.__name__}` | {_fields_cell(model)} | {note} |")
    return "\n".join(rows)


def nested_tables() -> str:
    sections = []
    for model in NESTED_MODELS:
        rows = [f"#### {model.__name__}", "", "| Field | Type | Constraints / default |", "|---|---|---|"]
        rows += [
            f"| `{name}` | {_type_name(field.annotation)} | {' — '.join(_field_details(name, field))} |"
            for name, field in model.model_fields.items()
        ]
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


def errors_table() -> str:
    rows = ["| Code | When |", "|---|---|"]
    rows += [f"| `{code.value}` | {ERROR_NOTES[code]} |" for code in ErrorCode]
    return "\n".join(rows)


def backpressure_table() -> str:
    rows = ["| Fragments in flight | Severity | Action | recommended_delay_ms |", "|---|---|---|---|"]
    for low, high in (
        (1, LOW_MAX_INFLIGHT),
        (LOW_MAX_INFLIGHT + 1, MEDIUM_MAX_INFLIGHT),
        (MEDIUM_MAX_INFLIGHT + 1, HIGH_MAX_INFLIGHT),
    ):
        level = backpressure_level(high)
        assert level is not None
        delay = "—" if level.recommended_delay_ms is None else str(level.recommended_delay_ms)
        rows.append(f"| {low}–{high} | `{level.severity.value}` | `{level.action.value}` | {delay} |")
    rows.append(f"| more than {HIGH_MAX_INFLIGHT} | — | fragment refused: `error` BACKPRESSURE_EXCEEDED | — |")
    return "\n".join(rows)


BLOCKS = {"events": events_table, "types": nested_tables, "errors": errors_table, "backpressure": backpressure_table}


def render(text: str) -> str:
    for name, build in BLOCKS.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n)(?:.*?\n)?(<!-- END GENERATED: {name} -->)", flags=re.DOTALL
        )
        if not pattern.search(text):
            raise ValueError(f"docs/protocol.md lacks the generated block {name!r}")
        text = pattern.sub(lambda m, b=build: m.group(1) + b() + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/protocol.md is stale")
    parser.add_argument("--path", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    current = args.path.read_text(encoding="utf-8")
    updated = render(current)
    if args.check:
        if updated != current:
            print(f"{args.path} is stale: run python -m livedub.sts.protocol_doc", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
