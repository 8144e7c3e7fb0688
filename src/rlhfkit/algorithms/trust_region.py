"""Trust-region policy optimisation's step (Schulman et al. 2015, TRPO, sec. 6 and appendix C).

TRPO maximises the surrogate L(theta) = E[ratio * A] subject to mean KL(pi_old || pi_theta) <= delta.
Linearising L (gradient g) and taking the KL to second order (its Hessian is the Fisher matrix F)
gives the natural-gradient direction s = F^-1 g, found by conjugate gradient from Fisher-vector
products alone (F is never formed), scaled so that 0.5 s^T F s = delta; a backtracking line search
then keeps the largest fraction of that step that improves L and keeps the exact KL within delta.

Parameters travel as one flat vector: `torch.nn.utils.parameters_to_vector` and
`vector_to_parameters` convert, and `flat_grad` gives gradients in the same layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _flatten(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """Per-parameter gradients as one flat vector in `parameters_to_vector`'s order; None (unused) becomes 0."""
    return torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1) for g, p in zip(grads, params)])


def flat_grad(output: Tensor, params: Sequence[Tensor], create_graph: bool = False) -> Tensor:
    """d output / d params as one flat vector, in `parameters_to_vector`'s order (0 for a parameter output ignores)."""
    params = list(params)
    return _flatten(torch.autograd.grad(output, params, create_graph=create_graph, allow_unused=True), params)


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10, residual_tol: float = 1e-10
) -> Tensor:
    """Solve A x = b for symmetric positive-definite A, given only v -> A v (Hestenes and Stiefel 1952).

        r_0 = p_0 = b, x_0 = 0
        alpha_k = r_k^T r_k / p_k^T A p_k,   x_{k+1} = x_k + alpha_k p_k,   r_{k+1} = r_k - alpha_k A p_k
        p_{k+1} = r_{k+1} + (r_{k+1}^T r_{k+1} / r_k^T r_k) p_k

    b: (n,); returns x (n,). Exact after n iterations in exact arithmetic; TRPO stops after ~10,
    since a rough natural gradient is enough. Stops early once r^T r < residual_tol.
    """
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_norm = residual @ residual
    for _ in range(iterations):
        if residual_norm < residual_tol:
            break
        product = Avp(direction)
        alpha = residual_norm / (direction @ product)
        x = x + alpha * direction
        residual = residual - alpha * product
        new_residual_norm = residual @ residual
        direction = residual + (new_residual_norm / residual_norm) * direction
        residual_norm = new_residual_norm
    return x


def fisher_vector_operator(
    kl_fn: Callable[[], Tensor], params: Sequence[Tensor], damping: float
) -> Callable[[Tensor], Tensor]:
    """v -> (H + damping I) v, H the Hessian of the mean KL in the params, by double backprop (Pearlmutter 1994).

        H v = grad_theta ( grad_theta KL(theta) . v )

    kl_fn() returns the mean KL(pi_old || pi_theta) over the batch as a 0-dim tensor, pi_old
    detached; at theta = theta_old its Hessian is the Fisher information matrix. The KL's first
    gradient graph is built once and reused for every v (conjugate gradient calls it ~10 times).
    Damping keeps the system well-conditioned where the sampled Fisher is near singular.
    """
    params = list(params)
    kl_gradient = flat_grad(kl_fn(), params, create_graph=True)

    def product(v: Tensor) -> Tensor:
        hessian_v = torch.autograd.grad(kl_gradient @ v.detach(), params, retain_graph=True, allow_unused=True)
        return _flatten(hessian_v, params) + damping * v

    return product


def fisher_vector_product(kl_fn: Callable[[], Tensor], params: Sequence[Tensor], v: Tensor, damping: float) -> Tensor:
    """(H + damping I) v for one v, H the Hessian of kl_fn() in params; see `fisher_vector_operator`."""
    return fisher_vector_operator(kl_fn, params, damping)(v)


def natural_gradient_step(
    gradient: Tensor, Fvp: Callable[[Tensor], Tensor], max_kl: float, iterations: int = 10
) -> tuple[Tensor, Tensor]:
    """TRPO's full step (appendix C): the natural gradient scaled to the edge of the trust region.

        s = F^-1 g (conjugate gradient),   step = sqrt(2 delta / s^T F s) s
        expected improvement = g . step    (the linear model's gain of the surrogate)

    gradient: (n,) gradient of the surrogate to maximise; Fvp: v -> F v. Returns (step (n,),
    expected_improvement 0-dim); 0.5 step^T F step = max_kl, the quadratic KL at the boundary.
    """
    direction = conjugate_gradient(Fvp, gradient, iterations)
    curvature = direction @ Fvp(direction)
    step = torch.sqrt(2.0 * max_kl / curvature) * direction
    return step, gradient @ step


@torch.no_grad()
def backtracking_line_search(
    f_surrogate_and_kl: Callable[[Tensor], tuple[Tensor, Tensor]],
    params_flat: Tensor,
    full_step: Tensor,
    expected_improvement: float | Tensor,
    max_kl: float,
    steps: int = 10,
    accept_ratio: float = 0.1,
) -> Tensor | None:
    """The largest step 0.5^k * full_step (k = 0 .. steps-1) that TRPO accepts, or None.

    A step is accepted when, at params_flat + step, the surrogate (to maximise) improved, the
    improvement is at least accept_ratio times the linear model's (expected_improvement *
    0.5^k), and the exact mean KL is within max_kl: the quadratic model behind full_step can
    underestimate the KL, which is why it is checked here. f_surrogate_and_kl(flat params) ->
    (surrogate, kl), both 0-dim, evaluated without gradient. params_flat and full_step: (n,).
    None means no fraction passed; the caller keeps the old parameters.
    """
    surrogate_before, _ = f_surrogate_and_kl(params_flat)
    for fraction in (0.5**k for k in range(steps)):
        step = fraction * full_step
        surrogate, kl = f_surrogate_and_kl(params_flat + step)
        improvement = float(surrogate - surrogate_before)
        expected = float(expected_improvement) * fraction
        within_trust_region = math.isfinite(float(kl)) and float(kl) <= max_kl
        if within_trust_region and improvement > 0 and improvement >= accept_ratio * expected:
            return step
    return None
