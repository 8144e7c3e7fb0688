"""A tiny randomly initialised chat model with a word-level tokenizer, built in code.

Tests and `rlhfkit demo --quick` use it: it loads in milliseconds, needs no
download, and its small vocabulary of plain English words (positive, negative
and neutral) lets a sentiment judge tell its outputs apart.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = (
    "the a an and or but so to of in on at for with is are was be it this that you i we they he she "
    "good great happy love wonderful excellent nice best joy beautiful amazing kind fun glad "
    "bad sad hate terrible awful worst ugly angry poor horrible pain boring "
    "day time cat dog food movie book weather friend house music game work life water tree city "
    "very not really quite always never today now here there what how why yes no thank please "
    "write tell say think feel make see go come like know want need give me user assistant system"
).split()
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


TINY_MODEL_LAYERS = 2


def build_tiny_model(
    directory: str | Path, hidden_size: int = 32, num_layers: int = TINY_MODEL_LAYERS, seed: int = 0
) -> Path:
    """Write a tiny Llama model and its tokenizer to `directory` (a regular HF model directory)."""

    directory = Path(directory)
    vocab = {token: i for i, token in enumerate((*SPECIALS, *WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
