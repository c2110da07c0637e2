"""Tokenizers for the micro-SLMs: char-level, or BPE whose merges stay inside words.

Why not plain BPE: a vocabulary learnt from synthetic text turns each known name or city
into one token, so a name it never saw cannot be copied. Two safe choices:

- :func:`build_tokenizer`: one token per character, a fixed vocabulary independent of any
  data; any span of the input can be reproduced.
- :func:`build_word_tokenizer`: BPE learnt from the train split with merges that never
  cross a word boundary. In its ``copy_safe`` form spaces, digits and punctuation stay
  single tokens and a word is the same tokens wherever it stands, so values copy token by
  token while sequences get about 2x shorter; otherwise words keep their leading space
  (about 3.5x shorter), for agents that copy nothing.

Both share the alphabet: printable ASCII, newline and tab, Latin-1, Latin Extended-A and
a few more letters and symbols customers type (Vietnamese vowels, curly quotes, €);
anything else becomes ``<unk>``. Text is NFC-normalised first so a decomposed "é" is one
character. The post-processor prepends ``<s>``: call the tokenizer with its default
``add_special_tokens=True`` on prompts, as training does.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

_EXTRA = "€–—‘’“”…•™←→ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ"  # noqa: RUF001 - these characters on purpose


def alphabet() -> list[str]:
    """Every character with its own token, in id order (after the special tokens)."""
    chars = ["\n", "\t"]
    chars += [chr(code) for code in range(0x20, 0x7F)]
    chars += [chr(code) for code in range(0xA0, 0x180)]
    chars += [ch for ch in _EXTRA if ch not in chars]
    return chars


def build_tokenizer(max_length: int = 1024) -> PreTrainedTokenizerFast:
    """The char-level tokenizer wrapped for transformers (``save_pretrained`` works)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet():
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    return _wrap(core, max_length)


def build_word_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 2048,
    max_length: int = 1024,
    copy_safe: bool = False,
) -> PreTrainedTokenizerFast:
    """A BPE tokenizer whose merges never cross a word boundary, learnt from ``texts``.

    Whole words become single tokens, so a message gets several times shorter and the
    model reads words instead of composing them from letters. Every character of
    :func:`alphabet` stays a token of its own, so unseen words still tokenize (into
    pieces); the same texts in the same order always give the same vocabulary.

    By default a word carries its leading space (`` the``), the shortest encoding, for
    agents that copy nothing. ``copy_safe`` keeps spaces, digits and punctuation as
    single tokens and merges only letters inside a word, so a word is the same tokens
    wherever it stands (after a space in the message, after a quote in the JSON output)
    and can be copied token by token.
    """
    pattern = (
        r"\p{L}+|\p{N}|\s|[^\s\p{L}\p{N}]"
        if copy_safe
        else (r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+")
    )
    core = Tokenizer(models.BPE(unk_token=UNK))
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=5,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet(),
        limit_alphabet=len(alphabet()),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return _wrap(core, max_length)


def _wrap(core: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    """Shared set-up: NFC, ``<s>`` first, tokens decoded by plain concatenation."""
    core.normalizer = normalizers.NFC()
    core.decoder = decoders.Fuse()
    bos = core.token_to_id(BOS)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos)]
    )
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
