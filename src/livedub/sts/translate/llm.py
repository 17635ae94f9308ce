"""Translation with a local instruction-tuned LLM in GGUF format (llama-cpp-python), sentence by sentence.

Greedy decoding (temperature 0, top_k 1, fixed seed) makes it deterministic. The system prompt and the one-shot
example are the same for every call of a direction, so llama.cpp reuses their evaluated prefix and only the sentence
costs time. When the other direction is asked for, the context of the last one is saved and the other's restored,
so switching directions does not evaluate the prefix again (seconds on 2 cores).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from livedub.sts.languages import LANGUAGES
from livedub.sts.translate.base import TranslationError, split_sentences
from livedub.sts.translate.registry import TranslatorCapabilities


class LlmTranslator:
    name = "llm"
    # Any pair of the table: the prompt names the languages, and every row has the same one-shot example sentence.
    capabilities = TranslatorCapabilities(languages=frozenset(LANGUAGES))

    def __init__(self, model_file: str | Path, n_ctx: int = 1024, n_threads: int = 0) -> None:
        from llama_cpp import Llama

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FileNotFoundError(f"GGUF model {self.model_file} not found")
        self._llm = Llama(
            model_path=str(self.model_file),
            n_ctx=n_ctx,
            n_threads=n_threads or None,
            seed=0,
            verbose=False,
        )
        self.name = f"llm:{self.model_file.parent.name}"
        self._lock = threading.Lock()  # a Llama context is not thread-safe
        self._direction: tuple[str, str] | None = None  # whose prompt prefix the context holds
        self._saved: dict[tuple[str, str], Any] = {}  # LlamaState of the other directions

    def supports(self, source: str, target: str) -> bool:
        return self.capabilities.supports(source, target)

    def _messages(self, sentence: str, source: str, target: str) -> list[dict[str, str]]:
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
        messages.append({"role": "user", "content": sentence})
        return messages

    def _switch_to(self, direction: tuple[str, str]) -> None:
        """Keep the evaluated prompt prefix of each direction: save the current context, restore the other's."""
        if self._direction == direction:
            return
        if self._direction is not None:
            self._saved[self._direction] = self._llm.save_state()
        if direction in self._saved:
            self._llm.load_state(self._saved.pop(direction))
        self._direction = direction

    def _translate_sentence(self, sentence: str, source: str, target: str) -> str:
        # Bounded output: room for a translation ~2x longer in tokens than the source words, plus slack.
        max_tokens = 12 + 3 * len(sentence.split())
        with self._lock:
            self._switch_to((source, target))
            result = self._llm.create_chat_completion(
                messages=self._messages(sentence, source, target),  # type: ignore[arg-type]
                temperature=0.0,
                top_k=1,
                seed=0,
                max_tokens=max_tokens,
                stop=["\n"],
            )
        text = str(result["choices"][0]["message"]["content"] or "")  # type: ignore[index]
        return text.strip().strip('"“”«»').strip()

    def translate(self, text: str, source: str, target: str) -> str:
        if not self.supports(source, target):
            raise TranslationError(f"llm: unsupported pair {source}->{target}")
        translated = []
        for sentence in split_sentences(text):
            out = self._translate_sentence(sentence, source, target)
            if not out:
                raise TranslationError(f"llm returned an empty translation for {sentence!r}", retryable=True)
            translated.append(out)
        return " ".join(translated)
