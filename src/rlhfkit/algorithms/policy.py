"""PPO losses (Schulman et al. 2017) and the per-token quantities they need from logits.

The losses take (B, T) tensors with a mask (language models) or (N,) tensors
with mask=None (Gymnasium); the policy losses take them as one `PolicySample`.
The inputs that carry a gradient (the log-ratio, the values) are zeroed at
masked-out positions before any arithmetic, so padding garbage (even NaN or
inf) reaches neither a loss nor a gradient. Each loss
returns (loss, stats): stats are detached 0-dim tensors, for logging.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rlhfkit.algorithms.core import _zero_outside, masked_mean

# A reduction of per-token losses (B, T) with their mask (None for (N,) tensors) to one number;
# masked_mean by default, or one of critic_free.LOSS_AGGREGATIONS with max_new_tokens bound.
Reduce = Callable[[Tensor, Tensor | None], Tensor]

# Logits are processed in slices of at most this many elements along their first
# dimension, so that the float32 temporaries of a (B, T, V) tensor stay bounded.
_CHUNK_ELEMENTS = 1 << 24


class PolicySample(NamedTuple):
    """What a PPO policy loss compares, for each sampled token (B, T) or action (N,): its log-prob under the
    policy being updated (`logprobs`, with the gradient) and under the policy that sampled it, its
    advantage, and the mask of real positions (None for (N,) tensors)."""

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    mask: Tensor | None = None

    def log_ratio(self) -> Tensor:
        """log pi(a|s) - log pi_old(a|s) in float32, zeroed outside the mask before any arithmetic."""
        return _zero_outside(self.logprobs.float() - self.old_logprobs.float(), self.mask)


def clipped_policy_loss(
    sample: PolicySample, clip_range: float, reduce: Reduce = masked_mean
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO's clipped surrogate objective, as a loss to minimise.

        ratio_t = exp(log pi(a_t|s_t) - log pi_old(a_t|s_t))
        loss    = mean_t max(-A_t * ratio_t, -A_t * clip(ratio_t, 1 - eps, 1 + eps))

    stats: "clipfrac", the fraction of positions where the clipped term is
    strictly the larger (so it set the loss and the gradient is zero), and
    "approx_kl", mean((ratio - 1) - log ratio), the k3 estimate of
    KL(pi_old || pi) from the samples of pi_old. `reduce` turns the per-token
    losses into the loss (the mean over tokens by default); the stats are token means.
    """
    log_ratio, advantages, mask = sample.log_ratio(), sample.advantages.float(), sample.mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = reduce(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
        }
    return loss, stats


def kl_penalty_policy_loss(
    sample: PolicySample, beta: float, reduce: Reduce = masked_mean
) -> tuple[Tensor, dict[str, Tensor]]:
    """The PPO paper's adaptive-KL-penalty surrogate (sec. 4), as a loss to minimise.

        loss = -mean_t(ratio_t * A_t) + beta * mean_t((ratio_t - 1) - log ratio_t)

    the second term being the k3 estimate of KL(pi_old || pi). Adapt beta between
    updates with `update_kl_penalty_beta`. stats: "approx_kl" as above, and "clipfrac",
    always 0 since nothing is clipped, so that both surrogates log the same keys.
    `reduce` as in `clipped_policy_loss`, over both terms.
    """
    log_ratio, advantages, mask = sample.log_ratio(), sample.advantages.float(), sample.mask
    ratio = torch.exp(log_ratio)
    per_token_kl = (ratio - 1.0) - log_ratio
    kl = masked_mean(per_token_kl, mask)
    loss = reduce(-ratio * advantages, mask) + beta * reduce(per_token_kl, mask)
    stats = {"clipfrac": torch.zeros((), device=loss.device), "approx_kl": kl.detach()}
    return loss, stats


def update_kl_penalty_beta(beta: float, kl: float, target: float) -> float:
    """The PPO paper's beta rule (sec. 4), applied after each policy update.

    d < d_targ / 1.5  ->  beta / 2
    d > d_targ * 1.5  ->  beta * 2
    otherwise         ->  beta
    """
    kl = float(kl)
    if kl < target / 1.5:
        return beta / 2.0
    if kl > target * 1.5:
        return beta * 2.0
    return beta


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor | None,
    clip_range: float | None,
    reduce: Reduce = masked_mean,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The critic's loss, with the value change clipped around the rollout-time values (PPO2 baselines).

        V_clip = V_old + clip(V - V_old, -c, c)
        loss   = 0.5 * mean_t max((V_t - R_t)^2, (V_clip_t - R_t)^2)

    values, old_values, returns, mask: (B, T), or (N,) with mask None. clip_range
    None or <= 0 gives the unclipped 0.5 * MSE. IMPORTANT: c is in the units of the
    returns, so a sensible value depends on the reward scale. stats: "clipfrac",
    the fraction of positions where the clipped term is strictly the larger.
    `reduce` as in `clipped_policy_loss` (the "mean_t" above).
    """
    values = _zero_outside(values, mask)
    returns = returns.float()
    unclipped = (values - returns) ** 2
    if clip_range is None or clip_range <= 0:
        loss = 0.5 * reduce(unclipped, mask)
        return loss, {"clipfrac": torch.zeros((), device=loss.device)}
    old_values = old_values.float()
    values_clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    clipped = (values_clipped - returns) ** 2
    loss = 0.5 * reduce(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).float(), mask)}
    return loss, stats


def _map_chunks(fn: Callable[[Tensor], Tensor], logits: Tensor) -> Tensor:
    """fn applied to slices of `logits` along its first dimension, concatenated; bounds temporary memory."""
    return _joined([fn(chunk) for (chunk,) in _row_slices(logits)])


def _entropy(logits: Tensor) -> Tensor:
    logits = logits.float()
    log_normaliser = torch.logsumexp(logits, dim=-1, keepdim=True)
    probs = torch.exp(logits - log_normaliser)
    return log_normaliser.squeeze(-1) - (probs * logits).sum(-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution softmax(logits), in float32.

        H = -sum_v p_v log p_v = logsumexp(l) - sum_v p_v l_v

    logits: (..., V) finite; returns (...). The logsumexp form never exponentiates
    a large logit, so it is stable for logits of any scale.
    """
    return _map_chunks(_entropy, logits)


def logprobs_and_entropy(
    logits: Tensor, tokens: Tensor, temperature: float = 1.0, entropy_grad: bool = True
) -> tuple[Tensor, Tensor]:
    """`logprobs_from_logits` and the entropy of softmax(logits / temperature), sharing one normaliser.

        log p(x_t) = l_t,x_t - logsumexp_v l_t,v,   H_t = logsumexp_v l_t,v - sum_v p_v l_t,v   (l = logits / temp)

    The PPO update needs both at every response token, each a pass over the whole vocabulary: here the
    normaliser is computed once, and the backward pass recomputes the softmax once from it,
        d log p(x) / dl = onehot(x) - p,   dH / dl = -p (log p + H),
    where separate logsumexps and their autograd would make several (B, T, V) passes more. The
    entropy gets no gradient with entropy_grad=False (an entropy bonus of 0: it is a statistic then).
    """
    return _LogprobsAndEntropy.apply(logits, tokens.long(), temperature, entropy_grad)


class _LogprobsAndEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float, entropy_grad: bool):
        normalisers, entropies = [], []
        for (chunk,) in _row_slices(logits):
            scaled = _scaled(chunk, temperature)
            normaliser = torch.logsumexp(scaled, dim=-1, keepdim=True)
            normalisers.append(normaliser)
            entropies.append(normaliser[..., 0] - torch.linalg.vecdot(torch.exp(scaled - normaliser), scaled))
        normaliser, entropy = _joined(normalisers), _joined(entropies)
        chosen = _scaled(logits.gather(-1, tokens[..., None]), temperature)
        ctx.save_for_backward(logits, tokens, normaliser, entropy)
        ctx.temperature = temperature
        ctx.set_materialize_grads(False)
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy)
        return (chosen - normaliser)[..., 0], entropy

    @staticmethod
    def backward(ctx, grad_logprobs: Tensor | None, grad_entropy: Tensor | None):
        logits, tokens, normaliser, entropy = ctx.saved_tensors
        if grad_logprobs is None:
            grad_logprobs = torch.zeros_like(entropy)
        per_row = (normaliser, grad_logprobs[..., None], entropy[..., None])
        if grad_entropy is not None:
            per_row += (grad_entropy[..., None],)
        grads = []
        for chunk, chunk_normaliser, g_logp, chunk_entropy, *g_entropy in _row_slices(logits, *per_row):
            log_probs = _scaled(chunk, ctx.temperature) - chunk_normaliser
            # d/dl: -p (g_logp + g_H (log p + H)), and g_logp more at the sampled token (added below)
            weight = g_logp + g_entropy[0] * (log_probs + chunk_entropy) if g_entropy else g_logp
            grads.append(log_probs.exp_().mul_(weight).neg_())
        grad = _joined(grads).scatter_add_(-1, tokens[..., None], grad_logprobs[..., None].float())
        return (grad / ctx.temperature if ctx.temperature != 1.0 else grad).to(logits.dtype), None, None, None


def _scaled(logits: Tensor, temperature: float) -> Tensor:
    return logits.float() / temperature if temperature != 1.0 else logits.float()


def _row_slices(logits: Tensor, *per_row: Tensor) -> list[tuple[Tensor, ...]]:
    """`logits` in slices of at most _CHUNK_ELEMENTS elements along its first dimension, each with the same
    rows of the `per_row` tensors; one slice, unsplit, when it is small (a Gym policy's few logits per step)."""
    if logits.dim() < 2 or logits.numel() <= _CHUNK_ELEMENTS:
        return [(logits, *per_row)]
    rows = logits.split(max(1, _CHUNK_ELEMENTS // max(1, logits[0].numel())))
    sizes = [chunk.shape[0] for chunk in rows]
    return list(zip(rows, *(tensor.split(sizes) for tensor in per_row)))


def _joined(pieces: list[Tensor]) -> Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def logprobs_from_logits(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probabilities of `tokens` under softmax(logits / temperature), in float32.

        log p(x_t) = l_{t, x_t} / temp - logsumexp_v(l_{t, v} / temp)

    logits: (B, T, V), tokens: (B, T) -> (B, T) (any (..., V) with (...) works).
    Sampling and scoring must use the same temperature, or the PPO ratio and
    the KL are measured against a different policy from the one that sampled.
    Only the gathered logit is taken before the normaliser, and the normaliser
    is computed slice by slice, so no second full-size float32 copy of the
    logits is made.
    """

    def log_normaliser(chunk: Tensor) -> Tensor:
        scaled = chunk.float()
        if temperature != 1.0:
            scaled = scaled / temperature
        return torch.logsumexp(scaled, dim=-1)

    chosen = logits.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1).float()
    if temperature != 1.0:
        chosen = chosen / temperature
    return chosen - _map_chunks(log_normaliser, logits)
