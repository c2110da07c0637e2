"""Token masks for constrained decoding: llguidance matchers over a model's vocabulary.

llguidance walks the whole vocabulary as a byte trie against an Earley parser state, in
Rust and off the GIL, so one mask costs well under a millisecond even for 150k-token BPE
vocabularies. It reads byte-level BPE and SentencePiece (byte-fallback) tokenizers
directly; any other tokenizer (the project's character-level micro-SLM tokenizers) is
described to it as a table of each token's decoded text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import cast

import llguidance
import numpy as np
from transformers import PreTrainedTokenizerBase

from mesh.slm.errors import GenerationFailedError, SchemaError

logger = logging.getLogger(__name__)


class TokenVocabulary:
    """A model's vocabulary as llguidance sees it (built once per model: ~1 s for 150k)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.llg = _llg_tokenizer(tokenizer, vocab_size)
        self._executor = llguidance.LLExecutor(num_threads=1)
        self.representable = lru_cache(maxsize=4096)(self._representable)

    def _representable(self, ch: str) -> bool:
        """True when the tokenizer round-trips ``ch`` (it does not become <unk> or vanish).

        Probed between two letters, so tokenizers that drop a leading space when decoding
        (SentencePiece) do not make spaces look unrepresentable.
        """
        probe = f"a{ch}a"
        ids = self.tokenizer.encode(probe, add_special_tokens=False)
        return self.tokenizer.unk_token_id not in ids and self.tokenizer.decode(ids) == probe

    def guide(self, grammar: str) -> Guide:
        return Guide(self, grammar)

    def allowed(self, guides: Sequence[Guide]) -> np.ndarray:
        """Boolean ``[len(guides), vocab_size]``: the tokens each guide allows next."""
        words = (self.vocab_size + 31) // 32
        bitmask = np.zeros((len(guides), words), dtype=np.int32)
        self._executor.unsafe_compute_mask_ptr(
            [(g.matcher, i) for i, g in enumerate(guides)],
            bitmask.ctypes.data,
            words * 4,
            len(guides),
        )
        bits = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")
        return bits[:, : self.vocab_size].astype(bool)


_LIMITS = llguidance.LLParserLimits(step_lexer_fuel=1_000_000)
"""llguidance's limits, with five times its default lexer fuel per token (200k, ~14 ms).

Why: a grounded span with a minimum length and a pattern is an intersection of regexes
that llguidance expands lazily; on a long input (the tool-caller's JSON with a message, an
email and an address) the default fuel ran out in the middle of the span ("too many
expressions constructed") and decoding stopped: 5 of 40 random walks. At 1M, none, and the
walks took no longer: the fuel is a ceiling, spent only where the expansion needs it."""


class Guide:
    """One request's parser state: which tokens may come next, and whether it may stop."""

    def __init__(self, vocabulary: TokenVocabulary, grammar: str) -> None:
        self.vocabulary = vocabulary
        self.matcher = llguidance.LLMatcher(vocabulary.llg, grammar, log_level=0, limits=_LIMITS)
        if self.matcher.is_error():
            raise SchemaError(f"the output grammar was refused: {self.matcher.get_error()}")

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise GenerationFailedError(f"constrained decoding broke: {self.matcher.get_error()}")

    @property
    def finished(self) -> bool:
        """Nothing but end-of-sequence can follow."""
        return self.matcher.is_stopped()

    @property
    def accepting(self) -> bool:
        return self.matcher.is_accepting()


def validate_grammar(vocabulary: TokenVocabulary, grammar: str) -> None:
    """Raises :class:`SchemaError` if llguidance refuses ``grammar`` (checked at start-up)."""
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, vocabulary.llg
    )
    if is_error:
        raise SchemaError(f"the output grammar was refused: {'; '.join(messages)}")


def _llg_tokenizer(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> llguidance.LLTokenizer:
    eos = tokenizer.eos_token_id
    try:
        import llguidance.hf

        # Typed for a fast tokenizer; any other raises ValueError, handled below.
        return llguidance.hf.from_tokenizer(
            tokenizer,  # type: ignore[arg-type]  # see above
            n_vocab=vocab_size,
            eos_token=eos,
        )
    except ValueError as exc:
        logger.debug("llguidance cannot read the tokenizer directly (%s); using a text table", exc)
    return llguidance.LLTokenizer(
        llguidance.TokenizerWrapper(_TextTable(tokenizer, vocab_size)),
        n_vocab=vocab_size,
        eos_token=eos,
    )


class _TextTable:
    """The duck-typed tokenizer llguidance's ``TokenizerWrapper`` reads: each token's bytes."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        special = set(tokenizer.all_special_ids)
        known = len(tokenizer)
        self.eos_token_id = tokenizer.eos_token_id
        self.bos_token_id = tokenizer.bos_token_id
        self.special_token_ids = sorted(special | set(range(known, vocab_size)))
        self.tokens = [
            b"" if i in special or i >= known else cast(str, tokenizer.decode([i])).encode("utf-8")
            for i in range(vocab_size)
        ]

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._tokenizer.encode(text, add_special_tokens=False))
