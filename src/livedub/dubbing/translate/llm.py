"""Translation with a local instruction-tuned LLM in GGUF format (llama-cpp-python), sentence by sentence.

Greedy decoding (temperature 0, top_k 1, fixed seed) makes it deterministic. The system prompt and the one-shot
example are the same for every call of a direction, so llama.cpp reuses their evaluated prefix and only the sentence
costs time. When the other direction is asked for, the context of the last one is saved and the other's restored,
so switching directions does not evaluate the prefix again (seconds on 2 cores).

Context (`build_messages`): after the one-shot example, the stream's last phrases in this direction (and the
phrase's earlier sentences) come as earlier chat turns (at most MAX_PREVIOUS, MAX_PREVIOUS_CHARS characters), so
pronouns, register and terms stay consistent; the system prompt and the example stay the first messages, the prefix
llama.cpp keeps. Glossary terms found in the sentence are listed after it in the user message, each quoted; an
answer that lacks a required translation is asked again once with the term already in the target language. An
answer that repeats the one-shot example (`leaked_example`) has it taken out, or is asked again without context.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livedub.dubbing import glossary
from livedub.dubbing.device import DeviceSetting, LlamaDevice, as_device, load_placed
from livedub.dubbing.interfaces import NO_CONTEXT, TranslationContext
from livedub.dubbing.model_files import resolve_model
from livedub.dubbing.translate.base import TranslationError, complete_clauses, split_clauses, split_sentences
from livedub.dubbing.translate.registry import TranslatorCapabilities, TranslatorSpec, register
from livedub.languages import LANGUAGES

log = logging.getLogger(__name__)

MAX_PREVIOUS = 2  # earlier phrases given as chat turns
MAX_PREVIOUS_CHARS = 600  # all of them together (~150-200 tokens), so the prompt stays well inside n_ctx
MAX_GLOSSARY_TERMS = 8  # glossary lines of one sentence (those of its terms it contains)

# The words of each language's one-shot example that no sentence needs unless it speaks of trains: the example
# leaked into an answer when they appear in it and the source does not hold its own language's words.
EXAMPLE_TOPIC = {"en": ("train station",), "es": ("estación de tren",), "fr": ("gare",), "it": ("stazione",)}


def _one_line(text: str) -> str:
    """Text for a chat turn: no control characters, no newlines, single spaces."""
    return " ".join("".join(" " if unicodedata.category(c).startswith("C") else c for c in text).split())


def build_messages(
    sentence: str,
    source: str,
    target: str,
    context: TranslationContext = NO_CONTEXT,
    earlier: tuple[tuple[str, str], ...] = (),
) -> list[dict[str, str]]:
    """The chat of one sentence: the system prompt and the one-shot example (the same for every call of a
    direction: llama.cpp's cached prefix), the previous phrases (`context.previous`, then `earlier` sentences of
    the same phrase) as user/assistant turns, then the sentence with the glossary terms it contains."""
    src, tgt = LANGUAGES[source].name, LANGUAGES[target].name
    system = (
        f"You are a professional translator. Translate the {src} text the user sends into {tgt}. "
        f"Keep the meaning and the formal register. Reply with the {tgt} translation only: "
        "no explanations, no notes, no quotes."
    )
    # One neutral example (deliberately outside the telephony domain of the benchmark prompts) pins the answer
    # format (the translation only) and the formal register ("usted", "vous", "Lei").
    example = {"role": "user", "content": LANGUAGES[source].example}
    answer = {"role": "assistant", "content": LANGUAGES[target].example}
    messages = [{"role": "system", "content": system}, example, answer]
    turns = [(_one_line(s), _one_line(t)) for s, t in (*context.previous, *earlier)][-MAX_PREVIOUS:]
    while turns and sum(len(s) + len(t) for s, t in turns) > MAX_PREVIOUS_CHARS:
        turns.pop(0)  # the oldest first
    for said, translated in turns:
        if said and translated:
            messages += [{"role": "user", "content": said}, {"role": "assistant", "content": translated}]
    content = _one_line(sentence)
    terms = glossary.present(content, context.glossary)[:MAX_GLOSSARY_TERMS]
    if terms:
        # Quoted (JSON strings: a quote inside a term is escaped), one line, after the text: data, not orders.
        listed = "; ".join(
            f"{json.dumps(term, ensure_ascii=False)} -> {json.dumps(tr, ensure_ascii=False)}" for term, tr in terms
        )
        content += f"\n(Glossary, translate these terms exactly so: {listed})"
    messages.append({"role": "user", "content": content})
    return messages


def _plain(text: str) -> str:
    return " ".join(
        "".join(
            c if c.isalnum() else " "
            for c in unicodedata.normalize("NFKD", text.lower())
            if not unicodedata.combining(c)
        ).split()
    )


def leaked_example(output: str, sentence: str, source: str, target: str) -> bool:
    """The answer holds (part of) the one-shot example that the sentence does not: its topic words (a train
    station), or the whole example sentence."""
    said, answered = f" {_plain(sentence)} ", f" {_plain(output)} "
    if any(f" {_plain(t)} " in said for t in EXAMPLE_TOPIC.get(source, ())):
        return False  # the sentence speaks of trains itself
    if f" {_plain(LANGUAGES[target].example)} " in answered:
        return True
    return any(f" {_plain(t)} " in answered for t in EXAMPLE_TOPIC.get(target, ()))


def strip_example(output: str, target: str) -> str:
    """The answer without the example sentence when the model repeated it whole (before or after the
    translation); unchanged otherwise."""
    example = LANGUAGES[target].example
    pattern = r"\W*".join(re.escape(w) for w in re.findall(r"\w+", example))
    return " ".join(re.sub(rf"[¿¡]?{pattern}\W*", " ", output, flags=re.IGNORECASE).split())


class LlmTranslator:
    name = "llm"
    # Any pair of the table: the prompt names the languages, and every row has the same one-shot example sentence.
    capabilities = TranslatorCapabilities(languages=frozenset(LANGUAGES), streaming=True)

    def __init__(
        self,
        model_file: str | Path,
        n_ctx: int = 1024,
        n_threads: int = 0,
        device: DeviceSetting | LlamaDevice = "auto",
    ) -> None:
        """`device`: a setting (resolved by this machine's device plan) or a resolved device: every layer on the GPU
        when llama.cpp was built with GPU offload and a CUDA device is present, else none."""
        from llama_cpp import Llama

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FileNotFoundError(f"GGUF model {self.model_file} not found")

        def load(placed: LlamaDevice) -> Llama:
            return Llama(
                model_path=str(self.model_file),
                n_ctx=n_ctx,
                n_threads=n_threads or None,
                n_gpu_layers=placed.n_gpu_layers,
                seed=0,
                verbose=False,
            )

        wanted = as_device(device, lambda plan: plan.llm)
        self._llm, self.placement = load_placed(f"llm {self.model_file.parent.name}", wanted, load)
        self.name = f"llm:{self.model_file.parent.name}"
        self._lock = threading.Lock()  # a Llama context is not thread-safe
        self._direction: tuple[str, str] | None = None  # whose prompt prefix the context holds
        self._saved: dict[tuple[str, str], Any] = {}  # LlamaState of the other directions

    def supports(self, source: str, target: str) -> bool:
        return self.capabilities.supports(source, target)

    def _switch_to(self, direction: tuple[str, str]) -> None:
        """Keep the evaluated prompt prefix of each direction: save the current context, restore the other's."""
        if self._direction == direction:
            return
        if self._direction is not None:
            self._saved[self._direction] = self._llm.save_state()
        if direction in self._saved:
            self._llm.load_state(self._saved.pop(direction))
        self._direction = direction

    def _translate_sentence(
        self,
        sentence: str,
        source: str,
        target: str,
        context: TranslationContext = NO_CONTEXT,
        earlier: tuple[tuple[str, str], ...] = (),
    ) -> str:
        """One sentence, checked: the example must not leak in, the glossary's translations must be there."""
        out = self._complete(build_messages(sentence, source, target, context, earlier), sentence, source, target)
        if leaked_example(out, sentence, source, target):
            stripped = strip_example(out, target)
            if stripped and not leaked_example(stripped, sentence, source, target):
                out = stripped
            elif context.previous or earlier:  # once more with the prompt the example was chosen for
                log.info("llm: the one-shot example leaked into %r; asking again without context", out)
                no_context = TranslationContext(glossary=context.glossary)
                out = self._complete(build_messages(sentence, source, target, no_context), sentence, source, target)
        required = glossary.present(sentence, context.glossary)
        if out and glossary.missing(out, required):
            # Asked again with the terms already in the target language (the model keeps what it is given).
            given = glossary.substitute(sentence, required)
            again = self._complete(build_messages(given, source, target, context, earlier), given, source, target)
            if again and len(glossary.missing(again, required)) < len(glossary.missing(out, required)):
                out = again
            if glossary.missing(out, required):
                log.info("llm: %r lacks glossary translations %s", out, glossary.missing(out, required))
        return out

    def _complete(self, messages: list[dict[str, str]], sentence: str, source: str, target: str) -> str:
        """The whole answer to `messages` (one way of decoding for both: the clauses of `_stream`, joined)."""
        text = " ".join(clause for clause in self._stream(messages, sentence, source, target) if clause)
        return text.strip().strip('"“”«»').strip()

    def _stream(self, messages: list[dict[str, str]], sentence: str, source: str, target: str) -> Iterator[str]:
        """The answer to `messages` clause by clause as the model writes it (each complete clause at once, the rest
        at the end; "" for a token that completes none). The model stays locked until the answer is complete or the
        caller stops iterating: the caller speaks the clauses meanwhile."""
        # Bounded output: room for a translation ~2x longer in tokens than the source words, plus slack.
        max_tokens = 12 + 3 * len(sentence.split())
        pending = ""
        with self._lock:
            self._switch_to((source, target))
            parts = self._llm.create_chat_completion(
                messages=messages,  # type: ignore[arg-type]
                temperature=0.0,
                top_k=1,
                seed=0,
                max_tokens=max_tokens,
                stop=["\n"],
                stream=True,
            )
            for part in parts:
                pending += str(part["choices"][0]["delta"].get("content") or "")  # type: ignore[index, union-attr]
                done, pending = complete_clauses(pending.lstrip().lstrip('"“«'))
                yield from done or [""]  # "": a token, no clause yet (the caller may stop here)
        pending = pending.strip().strip('"“”«»').strip()
        if pending:
            yield pending

    def translate_clauses(
        self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT
    ) -> Iterator[str]:
        """The translation clause by clause, as the model writes it: the first clause can be spoken while the rest
        is written. A sentence with glossary terms is translated and checked whole first (a clause already spoken
        cannot be asked again); a clause that repeats the one-shot example has it taken out."""
        if not self.supports(source, target):
            raise TranslationError(f"llm: unsupported pair {source}->{target}")
        translated: list[tuple[str, str]] = []
        for sentence in split_sentences(text):
            earlier = tuple(translated) if context != NO_CONTEXT else ()
            if glossary.present(sentence, context.glossary):
                clauses = split_clauses(self._translate_sentence(sentence, source, target, context, earlier))
            else:
                messages = build_messages(sentence, source, target, context, earlier)
                clauses = (
                    self._unleaked(c, sentence, source, target)
                    for c in self._stream(messages, sentence, source, target)
                )
            said = []
            for clause in clauses:
                if clause:
                    said.append(clause)
                yield clause
            if not said:
                raise TranslationError(f"llm returned an empty translation for {sentence!r}", retryable=True)
            translated.append((sentence, " ".join(said)))

    @staticmethod
    def _unleaked(clause: str, sentence: str, source: str, target: str) -> str:
        if not leaked_example(clause, sentence, source, target):
            return clause
        log.info("llm: the one-shot example leaked into %r; taken out", clause)
        stripped = strip_example(clause, target)
        return "" if leaked_example(stripped, sentence, source, target) else stripped

    def translate(self, text: str, source: str, target: str, context: TranslationContext = NO_CONTEXT) -> str:
        if not self.supports(source, target):
            raise TranslationError(f"llm: unsupported pair {source}->{target}")
        translated: list[tuple[str, str]] = []
        for sentence in split_sentences(text):
            # With a context, the phrase's earlier sentences are context too.
            earlier = tuple(translated) if context != NO_CONTEXT else ()
            out = self._translate_sentence(sentence, source, target, context, earlier)
            if not out:
                raise TranslationError(f"llm returned an empty translation for {sentence!r}", retryable=True)
            translated.append((sentence, out))
        return " ".join(out for _, out in translated)


@dataclass(frozen=True)
class LlmSettings:
    model: str = "qwen2.5-coder-1.5b-instruct-gguf"  # a GGUF file, or the name of one in the livedub cache
    context: int = 1024  # context length
    threads: int = 0  # llama.cpp threads (0: its default)
    device: DeviceSetting | LlamaDevice = "auto"


register(
    TranslatorSpec(
        "llm",
        LlmTranslator.capabilities,
        LlmSettings,
        build=lambda settings: LlmTranslator(
            resolve_model(settings.model), settings.context, settings.threads, settings.device
        ),
    )
)
