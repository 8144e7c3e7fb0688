"""Repeated prompts read once: by `generate` (a shared key/value cache), by scoring, training and reward models.

GRPO, RLOO and REINFORCE++ sample K responses per prompt, so a batch holds each prompt K times; a
reward model learns from rankings of K responses to one prompt. Every forward pass over such a
batch can read each distinct prompt once and copy its key/value cache to the K rows that repeat it;
only the responses are then read row by row. The results, and the gradients, equal those of reading
every row whole (to float rounding: tested).
"""

from __future__ import annotations

import contextlib
import inspect

import torch

from rlhfkit.models.hf_reward import position_ids_from_mask
from rlhfkit.models.lora import decoder_from_layer


def distinct_prompts(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(distinct ids, their mask, copy_of) with ids[i] == distinct ids[copy_of[i]]; None when no row repeats."""
    rows = torch.cat([ids, mask.long()], dim=1)
    distinct, copy_of = torch.unique(rows, dim=0, return_inverse=True)
    if distinct.shape[0] == rows.shape[0]:
        return None
    return distinct[:, : ids.shape[1]], distinct[:, ids.shape[1] :], copy_of


def cache_keyword(model) -> str:
    """The key/value cache keyword of forward and `generate`: `cache` (transformers 5.24), else `past_key_values`."""
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward  # peft wraps
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def shared_prompt_cache(model, query_ids: torch.Tensor, query_mask: torch.Tensor):
    """The key/value cache of every prompt but its last token, each distinct prompt computed once; or None.

    `generate` then reads only the last prompt token of each row (it needs at least one new token to
    start from). None when every row is distinct: then there is nothing to share.
    """
    shared = distinct_prompts(query_ids[:, :-1], query_mask[:, :-1]) if query_ids.shape[1] >= 2 else None
    if shared is None:
        return None
    ids, mask, copy_of = shared
    # logits_to_keep: no column (a pass that only fills the cache)
    cache = model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True,
        logits_to_keep=ids.new_zeros(0),
    ).past_key_values  # fmt: skip
    cache.batch_select_indices(copy_of)
    return cache


def shared_prompt_response_logits(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_length: int,
    kept_layer: int | None = None,
    frozen_states: torch.Tensor | None = None,
    frozen_layers: int = 0,
    output_hidden_states: bool = False,
):
    """What `actor_critic.response_logits` returns of a forward over (B, P + R), each distinct prompt read once.

    Returns (logits (B, R, V) predicting the R response tokens, the (B, R, H) last hidden state before
    each response token or None, the (B, P + R, H) output of the first `kept_layer` layers or None),
    or None when no prompt repeats. Two passes: the distinct prompts but their last token, whose cache
    is then copied to their repeats, and each row's last prompt token and response on that cache, so
    that the LM head multiplies all the logits' rows in one product (the head's weight is the largest
    matrix: a second product for the prompts' last columns read it once more per distinct prompt).
    Gradients flow back through the copies to each prompt's one pass, so a training minibatch that
    holds a prompt twice reads it once too. `frozen_states`, the output of the first `frozen_layers`
    layers, starts both passes above them.
    """
    head_length = input_ids.shape[1] - response_length - 1  # the prompt but its last token
    if response_length < 1 or head_length < 1 or (frozen_states is not None and not uniform_layers(model)):
        return None
    shared = distinct_prompts(input_ids[:, :head_length], attention_mask[:, :head_length])
    if shared is None:
        return None
    ids, mask, copy_of = shared
    if frozen_states is None:
        prompt_inputs, response_inputs = {"input_ids": ids}, {"input_ids": input_ids[:, head_length:]}
    else:
        # a row holding each distinct prompt (its repeats' frozen states are the same)
        holder = copy_of.new_empty(ids.shape[0]).scatter_(0, copy_of, torch.arange(len(copy_of), device=copy_of.device))
        prompt_inputs = {"inputs_embeds": frozen_states[holder, :head_length]}
        response_inputs = {"inputs_embeds": frozen_states[:, head_length:]}
    hidden = kept_layer is not None or output_hidden_states
    with decoder_from_layer(model, frozen_layers) if frozen_states is not None else contextlib.nullcontext():
        prompts, responses = prompts_then_rest(
            model, prompt_inputs, mask, copy_of, response_inputs, attention_mask,
            prompt_options={"logits_to_keep": ids.new_zeros(0), "output_hidden_states": hidden},
            # column t (the last prompt token, then the responses) predicts response token t
            rest_options={"logits_to_keep": torch.arange(response_length, device=input_ids.device),
                          "output_hidden_states": hidden},
        )  # fmt: skip
    last = responses.hidden_states[-1][:, :-1] if output_hidden_states else None
    kept = None
    if kept_layer is not None:
        kept = torch.cat([prompts.hidden_states[kept_layer][copy_of], responses.hidden_states[kept_layer]], dim=1)
    return responses.logits, last, kept


def uniform_layers(model) -> bool:
    """Whether every layer attends alike: a cache built above the frozen layers numbers its layers from 0
    (`decoder_from_layer`), which is only right when layer 0's kind of cache is every layer's."""
    return len(set(getattr(model.config, "layer_types", None) or ["full_attention"])) == 1


def shared_prompt_response_states(
    backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
):
    """A backbone's (no LM head) last hidden states over right-padded prompt + response rows, on the responses.

    A reward model's batch: a ranking's K responses to one prompt, a comparison's two. Returns ((B, R, H)
    states of each row's response tokens, left-aligned, and their (B, R) mask), each distinct prompt read
    once; None when no prompt repeats or a row is not its prompt, its response, then padding.
    """
    prompt_lengths = (attention_mask & ~response_mask).sum(dim=1)
    response_lengths = response_mask.sum(dim=1)
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    ends = (prompt_lengths + response_lengths)[:, None]
    laid_out = torch.equal(columns < prompt_lengths[:, None], attention_mask & ~response_mask) and torch.equal(
        attention_mask, columns < ends
    )  # each row: its prompt, its response, then padding
    if not laid_out or not response_lengths.all():
        return None
    prompt_width = int(prompt_lengths.max())
    # the prompts left-padded to prompt_width columns, as the distinct-prompt pass reads them
    shift = (columns[:prompt_width] - prompt_width + prompt_lengths[:, None]).clamp(min=0)
    prompt_mask = columns[:prompt_width] >= prompt_width - prompt_lengths[:, None]
    prompt_ids = input_ids.gather(1, shift).masked_fill(~prompt_mask, 0)
    shared = distinct_prompts(prompt_ids, prompt_mask)
    if shared is None:
        return None
    ids, mask, copy_of = shared
    response_width = int(response_lengths.max())
    taken = (columns[:response_width] + prompt_lengths[:, None]).clamp(max=input_ids.shape[1] - 1)
    response_ids_mask = columns[:response_width] < response_lengths[:, None]
    response_ids = input_ids.gather(1, taken).masked_fill(~response_ids_mask, 0)
    whole_mask = torch.cat([prompt_mask, response_ids_mask], dim=1)
    _, responses = prompts_then_rest(
        backbone, {"input_ids": ids}, mask, copy_of, {"input_ids": response_ids}, whole_mask
    )
    return responses.last_hidden_state, response_ids_mask


def prompts_then_rest(
    model,
    prompt_inputs: dict[str, torch.Tensor],
    prompt_mask: torch.Tensor,
    copy_of: torch.Tensor,
    rest_inputs: dict[str, torch.Tensor],
    whole_mask: torch.Tensor,
    prompt_options: dict | None = None,
    rest_options: dict | None = None,
):
    """The two passes of a batch whose prompts repeat: (the distinct prompts' output, every row's rest's output).

    The first reads the distinct prompts (`distinct_prompts`: ids or states, and their mask); their
    key/value cache is copied to the rows `copy_of` names, and the second reads each row's rest
    (`rest_inputs`, the columns of `whole_mask` after the prompts') on it, at the positions that
    `whole_mask` gives them.
    """
    prompts = model(
        **prompt_inputs, attention_mask=prompt_mask.long(), position_ids=position_ids_from_mask(prompt_mask),
        use_cache=True, **(prompt_options or {}),
    )  # fmt: skip
    cache = prompts.past_key_values
    cache.batch_select_indices(copy_of)
    rest = model(
        **rest_inputs, attention_mask=whole_mask.long(),
        position_ids=position_ids_from_mask(whole_mask)[:, prompt_mask.shape[1]:], use_cache=True,
        **{cache_keyword(model): cache}, **(rest_options or {}),
    )  # fmt: skip
    return prompts, rest
