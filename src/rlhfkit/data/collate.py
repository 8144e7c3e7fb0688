"""Tokenising prompt + response pairs and padding them into batches.

A training example is the formatted prompt (chat template or raw text)
followed by the response and an EOS token. EOS is a real, trained token: it
is what lets a fine-tuned policy stop, and what a reward model reads at the
end of a finished answer. `response_mask` is True on the response tokens and
their EOS, never on the prompt or padding.

Truncation never silently drops the response: the prompt is cut from the
left first (its end, next to the response, is what matters); only a response
that alone does not fit is cut at its end, keeps at least one token, loses its
EOS (it did not end), and is flagged so the caller can count and warn.
"""

from __future__ import annotations

from typing import Any

import torch

from rlhfkit.data.records import Record, format_prompt
from rlhfkit.errors import UserError


def tokenize_prompt_response(
    tokenizer: Any, record: Record, response: str, max_length: int, add_eos: bool = True
) -> dict[str, Any]:
    """Token ids of prompt + response (+ EOS) for one example, at most `max_length` long.

    Returns {"input_ids": list[int] (L,), "response_mask": list[bool] (L,),
    "truncated": bool (the response itself was cut), "prompt_truncated": bool}.
    At least one prompt token is kept whenever the prompt has one, so the first
    response token is predicted from something. An empty response with add_eos
    is EOS alone (a policy that stops at once); without EOS it is refused.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    prompt_ids = tokenizer(format_prompt(tokenizer, record), add_special_tokens=False).input_ids
    response_ids = tokenizer(response, add_special_tokens=False).input_ids if response else []
    ending = [tokenizer.eos_token_id] if add_eos else []
    if not response_ids + ending:
        raise UserError(f"the response {response[:60]!r} tokenises to no tokens; expected a non-empty response")
    response_budget = max_length - min(1, len(prompt_ids))
    truncated = len(response_ids) + len(ending) > response_budget
    if truncated:
        response_ids, ending = response_ids[:response_budget], []
    full_response = response_ids + ending
    prompt_budget = max_length - len(full_response)
    prompt_truncated = len(prompt_ids) > prompt_budget
    prompt_ids = prompt_ids[len(prompt_ids) - prompt_budget :] if prompt_truncated else prompt_ids
    return {
        "input_ids": prompt_ids + full_response,
        "response_mask": [False] * len(prompt_ids) + [True] * len(full_response),
        "truncated": truncated,
        "prompt_truncated": prompt_truncated,
    }


def pad_batch(
    items: list[dict[str, Any]], pad_token_id: int, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad tokenised examples to one (B, T) batch.

    items: dicts with "input_ids" (L_i,) and "response_mask" (L_i,).
    Returns input_ids (B, T) long, attention_mask (B, T) bool (True on real
    tokens), response_mask (B, T) bool (True on response tokens and EOS).
    side: "right" (training) or "left" (generation; pass position ids from the mask).
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(item["input_ids"]) for item in items)
    input_ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(items), width), dtype=torch.bool)
    response_mask = torch.zeros((len(items), width), dtype=torch.bool)
    for row, item in enumerate(items):
        length = len(item["input_ids"])
        columns = slice(0, length) if side == "right" else slice(width - length, width)
        input_ids[row, columns] = torch.tensor(item["input_ids"], dtype=torch.long)
        attention_mask[row, columns] = True
        response_mask[row, columns] = torch.tensor(item["response_mask"], dtype=torch.bool)
    return input_ids, attention_mask, response_mask


def pack_items(items: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """Concatenate examples, in order, into rows of at most `max_length` tokens (SFT packing).

    Each example keeps its own response mask, so the loss stays response-only;
    attention crosses example boundaries inside a row, as in GPT-style packing
    (every example ends with EOS, which marks the boundary). An example is
    never split across rows.
    """
    rows: list[dict[str, Any]] = []
    current: dict[str, Any] = {"input_ids": [], "response_mask": []}
    for item in items:
        if current["input_ids"] and len(current["input_ids"]) + len(item["input_ids"]) > max_length:
            rows.append(current)
            current = {"input_ids": [], "response_mask": []}
        current["input_ids"] = current["input_ids"] + list(item["input_ids"])
        current["response_mask"] = current["response_mask"] + list(item["response_mask"])
    if current["input_ids"]:
        rows.append(current)
    return rows
