"""Masked statistics: means, variances and whitening over the real positions of a batch.

A `mask` is True (or 1) on real positions and False (or 0) on padding; `None`
means every position is real. Masked-out values never reach a result, not even
as NaN or inf, and their gradient is exactly zero. Everything is computed in
float32.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _zero_outside(x: Tensor, mask: Tensor | None) -> Tensor:
    """`x` as float32 with masked-out positions set to 0 (so padding garbage cannot leak through a gradient)."""
    x = x.float()
    return x if mask is None else torch.where(mask.bool(), x, 0.0)


def masked_mean(x: Tensor, mask: Tensor | None, dim: int | None = None) -> Tensor:
    """Mean of `x` over the positions where `mask` is True.

        mean = sum_i m_i x_i / sum_i m_i

    x: (...), mask: same shape as x (or broadcastable to it), or None for a plain mean.
    dim None: a 0-dim tensor over all elements; an int: that dimension is reduced.
    An empty selection gives NaN, as `torch.mean` of an empty tensor does.
    """
    if mask is None:
        return x.float().mean() if dim is None else x.float().mean(dim)
    selected = mask.bool().expand_as(x)
    total = torch.where(selected, x.float(), 0.0)
    if dim is None:
        return total.sum() / selected.sum()
    return total.sum(dim) / selected.sum(dim)


def masked_var(x: Tensor, mask: Tensor | None, unbiased: bool = True) -> Tensor:
    """Variance of `x` over all positions where `mask` is True, as a 0-dim tensor.

        var = sum_i m_i (x_i - mean)^2 / (n - 1)   (unbiased; n instead of n - 1 otherwise)

    x: (...), mask: same shape or None. A single selected element has variance 0
    either way (the Bessel factor n / (n - 1) is taken as 1 when n = 1); an empty
    selection gives NaN.
    """
    x = _zero_outside(x, mask)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if not unbiased:
        return var
    count = x.numel() if mask is None else mask.bool().expand_as(x).sum()
    count = torch.as_tensor(count, dtype=torch.float32, device=x.device)
    return var * count / (count - 1).clamp(min=1.0)


def whiten(x: Tensor, mask: Tensor | None = None, keep_mean: bool = False, eps: float = 1e-8) -> Tensor:
    """Normalise `x` to mean 0 and (unbiased) standard deviation 1 over the masked positions.

        x' = (x - mean) / sqrt(var + eps)      (+ mean when keep_mean)

    x: (...), mask: same shape or None (every position counts). Masked-out
    positions are returned as 0. PPO whitens advantages over the whole batch
    (keep_mean=False); whitening rewards usually keeps their mean so that the
    sign of the average reward survives (keep_mean=True).
    """
    x = x.float()
    mean = masked_mean(x, mask)
    whitened = (x - mean) * torch.rsqrt(masked_var(x, mask) + eps)
    if keep_mean:
        whitened = whitened + mean
    return _zero_outside(whitened, mask)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor | None = None) -> Tensor:
    """How much of the variance of the returns the value function explains, as a 0-dim tensor.

        ev = 1 - Var[returns - values] / Var[returns]

    values, returns: (...) of one shape; mask: same shape or None. 1 is a perfect
    critic, 0 one no better than a constant, negative one worse than that; NaN
    when the returns do not vary.
    """
    returns = returns.float()
    var_returns = masked_var(returns, mask)
    var_residual = masked_var(returns - values.float(), mask)
    return torch.where(var_returns == 0, torch.nan, 1.0 - var_residual / var_returns)
