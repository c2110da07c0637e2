"""Tiny random-weight models of real architectures, built offline for the SLM runtime tests.

Nothing is downloaded: the tokenizers are built (a character-level one) or trained on a few
sentences (a byte-level BPE one) with the ``tokenizers`` library, and the models are
Llama / Qwen2 configurations small enough to run a few tokens in milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = [chr(c) for c in range(32, 127)] + ["\n", "\t", "é", "€"]
CORPUS = [
    "Where is my order ORD-104233? I ordered it two weeks ago.",
    "Please refund 19.99 for order ORD-100001, the mug arrived broken.",
    "My email is jane.doe@example.com and I want to cancel.",
    "Classify the customer message. Intent: refund_request order_status",
    '{"name":"get_order","arguments":{"order_id":"ORD-104233"}}',
    "Hello, thanks a lot! The package never came; what happened?",
] * 4


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character (plus a few), unknown characters map to <unk>."""
    vocab = {token: i for i, token in enumerate(SPECIALS + CHARS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def bpe_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here on a few support-desk sentences."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )


def save_tiny_model(
    directory: Path,
    arch: Literal["llama", "qwen2", "mistral"] = "llama",
    tokenizer: Literal["char", "bpe"] = "char",
    seed: int = 0,
    context: int = 512,
    chat_template: str | None = None,
    hidden_size: int = 32,
    layers: int = 2,
) -> Path:
    """Saves a random-weight model and its tokenizer to ``directory`` (loadable offline)."""
    tok = char_tokenizer() if tokenizer == "char" else bpe_tokenizer()
    if chat_template:
        tok.chat_template = chat_template
    common = dict(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "mistral":  # a sliding-window cache: the engine cannot merge its rows
        model = MistralForCausalLM(MistralConfig(**common, sliding_window=16))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    model.eval()
    # Random init gives near-uniform logits; a wider spread makes greedy choices decisive.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
