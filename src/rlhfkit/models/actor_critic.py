"""The language model as an actor-critic: the action is the next token, the episode one response.

`ActorCritic` holds the policy (a causal LM, maybe with LoRA) and its critic:
either a `ValueHead` on the policy's last hidden states (shared trunk) or a
separate `ScalarHeadModel`. One forward pass over prompt + response gives,
for every response position t, log π(a_t | s_t) under the sampling
temperature, the entropy of π(· | s_t), and V(s_t), where s_t is the prompt
plus the first t response tokens.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from rlhfkit.algorithms import entropy_from_logits, logprobs_from_logits
from rlhfkit.models.heads import ScalarHeadModel, ValueHead, position_ids_from_mask
from rlhfkit.models.loading import autocast


def response_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int, output_hidden_states: bool = False):
    """Forward over (B, P + R); keep only the logits that predict the R response tokens.

    Returns (logits (B, R, V), last hidden states (B, R, H) or None). Computing the
    LM head only on the last R + 1 columns (`logits_to_keep`) skips the vocabulary
    projection of the prompt, which is most of a chat prompt's columns.
    """
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask.long(),
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=response_length + 1,
        output_hidden_states=output_hidden_states,
        use_cache=False,
    )
    logits = out.logits[:, :-1]  # column P-1+t predicts response token t
    hidden = out.hidden_states[-1][:, -response_length - 1 : -1] if output_hidden_states else None
    return logits, hidden


class ActorCritic(nn.Module):
    def __init__(self, policy: nn.Module, critic: ValueHead | ScalarHeadModel):
        super().__init__()
        self.policy = policy
        self.critic = critic

    @property
    def shares_trunk(self) -> bool:
        return isinstance(self.critic, ValueHead)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_ids: torch.Tensor, temperature: float, dtype: str, entropy_grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, P + R) ids and mask, (B, R) response ids -> logprobs, entropy, values, each (B, R) fp32.

        entropy_grad=False (an entropy bonus of 0) computes the entropy as a statistic only: its
        backward over the whole vocabulary at every response token is then skipped.
        """
        response_length = response_ids.shape[1]
        with autocast(dtype):
            logits, hidden = response_logits(self.policy, input_ids, attention_mask, response_length, output_hidden_states=self.shares_trunk)
            if self.shares_trunk:
                values = self.critic(hidden)
            else:
                values = self.critic.token_values(input_ids, attention_mask)[:, -response_length - 1 : -1]
        logprobs = logprobs_from_logits(logits, response_ids, temperature)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_logits(logits if temperature == 1.0 else logits / temperature)
        return logprobs, entropy, values.float()

    def reference_context(self):
        """With LoRA, the reference policy is this policy with its adapter disabled."""
        disable = getattr(self.policy, "disable_adapter", None)
        return disable() if disable is not None else contextlib.nullcontext()


@torch.no_grad()
def reference_logprobs(
    reference: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_ids: torch.Tensor, temperature: float, dtype: str
) -> torch.Tensor:
    """(B, R) log π_ref(a_t | s_t) under the same temperature as the policy."""
    with autocast(dtype):
        logits, _ = response_logits(reference, input_ids, attention_mask, response_ids.shape[1])
    return logprobs_from_logits(logits, response_ids, temperature)
