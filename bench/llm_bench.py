"""LLM translator speed variants on the asterisk prompts: threads, speculative decoding, concurrency.

Every variant runs the project's own ``LlmTranslator`` (its prompt, stop and max_tokens), with extra ``Llama``
arguments (threads, a draft model) put in by wrapping ``llama_cpp.Llama`` while the translator is built. Each call
of the model (one sentence) is timed; its completion tokens come from the reply's usage.

    flock /tmp/livedub-cpu.lock .venv/bin/python bench/llm_bench.py --n 16
    .venv/bin/python bench/llm_bench.py --variants plain-t2,draft-k4 --directions en-es

Columns: tok/s p50 = completion tokens / wall of the call (sentence prompt suffix + generation); s/sentence p50,
p95; sent/s = sentences / total wall of the variant (throughput; for the concurrent variants both workers
together); chrF over the prompts against the other language's transcript (normalised like bench/sts_bench.py);
identical = share of prompts whose output equals the first variant's. Greedy speculative decoding keeps the text up
to llama.cpp's batch-size dependent rounding (a near-tie can flip); so does the same model fed its prompts in other
chunks (the 2x variants: each worker's KV-cache prefix reuse differs).

The draft variants need the 0.5B draft GGUF (not in the model cache: see bench/llm_draft.py), by
--draft-model or installed under the cache name DRAFT_MODEL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # llm_draft: the bench's own draft model

from livedub.dubbing.translate.llm import LlmTranslator
from livedub.models.cache import is_installed, model_dir, model_path
from livedub.testing import corpus

MAIN_MODEL = "qwen2.5-coder-1.5b-instruct-gguf"
DRAFT_MODEL = "qwen2.5-coder-0.5b-instruct-gguf"


def normalise(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    return " ".join("".join(c if c.isalnum() else " " for c in plain).split())


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Variant:
    name: str
    llama_kwargs: Callable[[], dict[str, Any]]  # built lazily (a draft model loads a second GGUF)
    workers: int = 1  # translators running at once (each its own Llama), sentences split between them


@dataclass
class Result:
    variant: str
    outputs: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (src, tgt, prompt) -> translation
    calls: list[tuple[float, int]] = field(default_factory=list)  # (seconds, completion tokens) per sentence
    wall: float = 0.0
    sentences: int = 0
    drafted: int = 0


def build(model: Path, n_ctx: int, llama_kwargs: dict[str, Any]) -> tuple[LlmTranslator, Any]:
    """The project's translator with `llama_kwargs` added to its Llama, and that Llama (timing each call)."""
    import llama_cpp

    original = llama_cpp.Llama
    made: list[Any] = []

    class Timed(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(llama_kwargs)
            super().__init__(*args, **kwargs)
            self.calls: list[tuple[float, int]] = []
            made.append(self)

        def create_chat_completion(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            reply = super().create_chat_completion(*args, **kwargs)
            self.calls.append((time.perf_counter() - started, int(reply["usage"]["completion_tokens"])))
            return reply

    llama_cpp.Llama = Timed
    try:
        translator = LlmTranslator(model, n_ctx)
    finally:
        llama_cpp.Llama = original
    return translator, made[0]


def variants(draft_file: Path | None, n_ctx: int) -> dict[str, Variant]:
    def plain(threads: int, batch: int) -> Callable[[], dict[str, Any]]:
        return lambda: {"n_threads": threads, "n_threads_batch": batch}

    def lookup(k: int) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            return {
                "n_threads": 2,
                "n_threads_batch": 2,
                "logits_all": True,
                "draft_model": LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=k),
            }

        return make

    def draft(k: int, min_prob: float = 0.0, threads: int = 2) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            from llm_draft import LlamaDraft

            if draft_file is None:
                raise SystemExit(f"no draft model: install {DRAFT_MODEL} or pass --draft-model")
            drafter = LlamaDraft(
                draft_file,
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                num_pred_tokens=k,
                min_prob=min_prob,
            )
            return {"n_threads": threads, "n_threads_batch": threads, "logits_all": True, "draft_model": drafter}

        return make

    table = [
        Variant("plain-t2", plain(2, 2)),
        Variant("plain-t1", plain(1, 1)),
        Variant("plain-t1-b2", plain(1, 2)),
        Variant("lookup-k4", lookup(4)),
        Variant("draft-k3", draft(3)),
        Variant("draft-k5", draft(5)),
        Variant("draft-k8-p0.5", draft(8, 0.5)),
        Variant("draft-k5-p0.3", draft(5, 0.3)),
        Variant("2x-plain-t1", plain(1, 1), workers=2),
        Variant("2x-draft-k5-p0.3-t1", draft(5, 0.3, threads=1), workers=2),
    ]
    return {v.name: v for v in table}


def run_variant(
    variant: Variant,
    model: Path,
    n_ctx: int,
    work: list[tuple[str, str, str, str]],
    warmup: dict[str, str],
    context: int = 0,
) -> Result:
    result = Result(variant.name)
    built = [build(model, n_ctx, variant.llama_kwargs()) for _ in range(variant.workers)]
    # Warm-up: each direction's prompt prefix once per translator (not timed), in the order of the work.
    for translator, llm in built:
        for source, target in dict.fromkeys((s, t) for s, t, _, _ in work):
            translator.translate(warmup[source], source, target)
        llm.calls.clear()
    shares = [work[i :: variant.workers] for i in range(variant.workers)]
    errors: list[BaseException] = []

    def worker(translator: LlmTranslator, items: list[tuple[str, str, str, str]]) -> None:
        history: dict[tuple[str, str], list[tuple[str, str]]] = {}
        try:
            for source, target, name, text in items:
                if context:  # the stream's last phrases of this worker, as the pipeline passes them
                    from livedub.dubbing.interfaces import TranslationContext

                    previous = tuple(history.setdefault((source, target), [])[-context:])
                    out = translator.translate(text, source, target, TranslationContext(previous=previous))
                    history[(source, target)].append((text, out))
                else:
                    out = translator.translate(text, source, target)
                result.outputs[(source, target, name)] = out
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    started = time.perf_counter()
    threads = [
        threading.Thread(target=worker, args=(translator, items))
        for (translator, _), items in zip(built, shares, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    for _, llm in built:
        result.calls.extend(llm.calls)
        drafter = getattr(getattr(llm, "draft_model", None), "drafter", None)
        result.drafted += drafter.drafted if drafter is not None else 0
    result.sentences = len(result.calls)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16, help="prompts per direction")
    parser.add_argument("--directions", default="en-es,es-en")
    parser.add_argument(
        "--variants", default="", help="comma-separated names (default: all); the first is the reference of 'identical'"
    )
    parser.add_argument("--model", type=Path, default=None, help=f"main GGUF (default: cache {MAIN_MODEL})")
    parser.add_argument("--draft-model", type=Path, default=None, help=f"draft GGUF (default: cache {DRAFT_MODEL})")
    parser.add_argument("--n-ctx", type=int, default=1024)
    parser.add_argument("--context", type=int, default=0, help="pass the last N phrases as TranslationContext")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here too")
    args = parser.parse_args()

    model = args.model or model_path(MAIN_MODEL)
    draft_file = args.draft_model
    if draft_file is None and is_installed(DRAFT_MODEL):
        draft_file = model_dir(DRAFT_MODEL) / "model.gguf"
    table = variants(draft_file, args.n_ctx)
    names = [v for v in args.variants.split(",") if v] or list(table)
    unknown = [v for v in names if v not in table]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(table)}")

    work: list[tuple[str, str, str, str]] = []
    references: dict[tuple[str, str, str], str] = {}
    warmup: dict[str, str] = {}
    for direction in args.directions.split(","):
        source, target = direction.split("-")
        pairs = corpus.shared_prompts(source, target)
        warmup[source] = pairs[-1][0].text  # outside the measured prompts (the first n)
        for src, tgt in pairs[: args.n]:
            work.append((source, target, src.name, src.text))
            references[(source, target, src.name)] = normalise(tgt.text)

    import sacrebleu

    results: list[Result] = []
    for name in names:
        print(f"[llm_bench] {name} ...", file=sys.stderr, flush=True)
        results.append(run_variant(table[name], model, args.n_ctx, work, warmup, args.context))

    keys = list(references)
    reference = results[0]
    rows = []
    for r in results:
        seconds = [s for s, _ in r.calls]
        rates = [t / s for s, t in r.calls if s > 0]
        outputs = [normalise(r.outputs[k]) for k in keys]
        same = sum(r.outputs[k] == reference.outputs[k] for k in keys) / len(keys)
        rows.append(
            {
                "variant": r.variant,
                "tok_s_p50": statistics.median(rates),
                "s_p50": pct(seconds, 50),
                "s_p95": pct(seconds, 95),
                "sent_per_s": r.sentences / r.wall,
                "tokens": sum(t for _, t in r.calls),
                "chrf": sacrebleu.corpus_chrf(outputs, [[references[k] for k in keys]]).score,
                "identical": same,
            }
        )
    header = "| variant | tok/s p50 | s/sentence p50 | p95 | sent/s | tokens | chrF | identical |"
    sentences = len(reference.calls)
    print(
        f"\n{len(keys)} prompts ({args.directions}, context {args.context}), {sentences} sentences, "
        f"cores {os.cpu_count()}\n"
    )
    print(header)
    print("|" + "---|" * 8)
    for row in rows:
        print(
            f"| {row['variant']} | {row['tok_s_p50']:.1f} | {row['s_p50']:.2f} | {row['s_p95']:.2f} | "
            f"{row['sent_per_s']:.2f} | {row['tokens']} | {row['chrf']:.1f} | {row['identical']:.0%} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    diffs = [k for k in keys for r in results[1:] if r.outputs[k] != reference.outputs[k]]
    for key in dict.fromkeys(diffs):
        print(f"\ndiffers {key}: {reference.variant}: {reference.outputs[key]!r}", file=sys.stderr)
        for r in results[1:]:
            if r.outputs[key] != reference.outputs[key]:
                print(f"    {r.variant}: {r.outputs[key]!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
