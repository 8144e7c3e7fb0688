"""The language model as an actor-critic: the action is the next token, the episode one response.

`ActorCritic` holds the policy (a causal LM, maybe with LoRA) and its critic:
either a `ValueHead` on the policy's last hidden states (shared trunk), a
separate `ScalarHeadModel`, or none at all (GRPO, RLOO, REINFORCE++ need no
value model). One forward pass over prompt + response gives, for every
response position t, log π(a_t | s_t) under the sampling temperature, the
entropy of π(· | s_t), and V(s_t) (None without a critic), where s_t is the
prompt plus the first t response tokens.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from rlhfkit.algorithms import logprobs_and_entropy, logprobs_from_logits
from rlhfkit.config import LoRAConfig
from rlhfkit.models.heads import ScalarHeadModel, ValueHead, position_ids_from_mask
from rlhfkit.models.loading import load_backbone, load_causal_lm
from rlhfkit.models.lora import apply_lora, decoder_from_layer, frozen_layer_count
from rlhfkit.models.shared_prompts import shared_prompt_response_logits
from rlhfkit.runtime.precision import autocast


def response_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_length: int,
    output_hidden_states: bool = False,
    frozen_states: torch.Tensor | None = None,
    frozen_layers: int = 0,
    keep_frozen_states: bool = False,
):
    """Forward over (B, P + R); keep only the logits that predict the R response tokens.

    Returns (logits (B, R, V), last hidden states (B, R, H) or None, frozen_states or None).
    Computing the LM head only on the last R + 1 columns (`logits_to_keep`) skips the
    vocabulary projection of the prompt, which is most of a chat prompt's columns. The columns
    are given as indices, not as a count: indexing copies them into one contiguous (B, R + 1, H)
    block, which the projection multiplies as one matrix; a count slices a strided view, which
    torch multiplies batch by batch against the broadcast weight (1.3x slower forward here).

    `frozen_states` is the (B, P + R, H) output of the first `frozen_layers` layers. With
    keep_frozen_states it is returned; given as `frozen_states`, the forward starts from it and runs
    only the layers above, which is exact when those below are frozen.

    A prompt that repeats in the batch (group sampling) is read once: `shared_prompt_response_logits`.
    """
    kept_layer = frozen_layers if keep_frozen_states else None
    shared = shared_prompt_response_logits(
        model,
        input_ids,
        attention_mask,
        response_length,
        kept_layer,
        frozen_states,
        frozen_layers,
        output_hidden_states,
    )
    if shared is not None:
        return shared
    inputs = {"input_ids": input_ids} if frozen_states is None else {"inputs_embeds": frozen_states}
    length = attention_mask.shape[1]
    kept_columns = torch.arange(length - response_length - 1, length, device=attention_mask.device)
    with decoder_from_layer(model, frozen_layers) if frozen_states is not None else contextlib.nullcontext():
        out = model(
            **inputs,
            attention_mask=attention_mask.long(),
            position_ids=position_ids_from_mask(attention_mask),
            logits_to_keep=kept_columns,
            output_hidden_states=output_hidden_states or keep_frozen_states,
            use_cache=False,
        )
    logits = out.logits[:, :-1]  # column P-1+t predicts response token t
    hidden = out.hidden_states[-1][:, -response_length - 1 : -1] if output_hidden_states else None
    kept = out.hidden_states[frozen_layers] if keep_frozen_states else None  # hidden_states[0] is the embedding output
    return logits, hidden, kept


class ActorCritic(nn.Module):
    def __init__(self, policy: nn.Module, critic: ValueHead | ScalarHeadModel | None):
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.frozen_layers = frozen_layer_count(policy)

    @property
    def shares_trunk(self) -> bool:
        """A value head on the policy's own last hidden states."""
        return isinstance(self.critic, ValueHead)

    @property
    def scores_while_sampling(self) -> bool:
        """The sampling pass gives all that scoring needs of the policy: no separate critic must read the text."""
        return self.critic is None or self.shares_trunk

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_ids: torch.Tensor,
        temperature: float,
        dtype: str,
        entropy_grad: bool = True,
        frozen_states: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, P + R) ids and mask, (B, R) response ids -> logprobs, entropy, values, each (B, R) fp32.

        values is None without a critic. entropy_grad=False (an entropy bonus of 0) computes the entropy
        as a statistic only: its backward over the whole vocabulary at every response token is then
        skipped. `frozen_states`, the output of the frozen layers below the adapters (`frozen_layers`),
        skips recomputing them.
        """
        response_length = response_ids.shape[1]
        with autocast(dtype):
            logits, hidden, _ = response_logits(
                self.policy,
                input_ids,
                attention_mask,
                response_length,
                output_hidden_states=self.shares_trunk,
                frozen_states=frozen_states,
                frozen_layers=self.frozen_layers,
            )
            if self.critic is None:
                values = None
            elif self.shares_trunk:
                values = self.critic(hidden).float()
            else:
                values = self.critic.token_values(input_ids, attention_mask)[:, -response_length - 1 : -1].float()
        logprobs, entropy = logprobs_and_entropy(logits, response_ids, temperature, entropy_grad)
        return logprobs, entropy, values

    def reference_context(self):
        """With LoRA, the reference policy is this policy with its adapter disabled."""
        disable = getattr(self.policy, "disable_adapter", None)
        return disable() if disable is not None else contextlib.nullcontext()


@torch.no_grad()
def response_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_ids: torch.Tensor,
    temperature: float,
    dtype: str,
    frozen_layers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, R) log π(a_t | s_t) of a causal LM (the reference, mostly) under the given temperature.

    With frozen_layers > 0 (the reference is the policy with its adapter disabled, and the
    adapters start at that layer), also the (B, P + R, H) output of the layers below it,
    which the policy shares; else None.
    """
    response_length = response_ids.shape[1]
    with autocast(dtype):
        logits, _, frozen_states = response_logits(
            model, input_ids, attention_mask, response_length,
            frozen_layers=frozen_layers, keep_frozen_states=frozen_layers > 0,
        )  # fmt: skip
    return logprobs_from_logits(logits, response_ids, temperature), frozen_states


def load_actor_critic(
    model_name: str, tokenizer, lora: LoRAConfig, critic_source: str | None = None, value_model: bool = True
) -> tuple[ActorCritic, nn.Module | None]:
    """The policy with its critic, and the frozen reference (None with LoRA: the policy with its adapter off).

    value_model False: no critic at all (nothing of it is built). Else critic_source None: a value
    head on the policy's trunk; otherwise a separate critic: a reward model directory (`rlhfkit rm`
    final/) starts it as that reward model, as Ziegler et al. start the value function; any other
    model name gives its transformer with a fresh head.
    """
    policy = load_causal_lm(model_name, tokenizer)
    reference = None
    if lora.enabled:
        policy = apply_lora(policy, lora)
    else:
        reference = load_causal_lm(model_name, tokenizer).eval().requires_grad_(False)
    if not value_model:
        critic = None
    elif critic_source is None:
        critic = ValueHead(policy.config.hidden_size)
    elif Path(critic_source, "reward.json").is_file():
        critic = ScalarHeadModel.load(critic_source)
    else:
        critic = ScalarHeadModel(load_backbone(critic_source, tokenizer))
    return ActorCritic(policy, critic), reference
