import math

import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from rlhfkit.algorithms import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_operator,
    fisher_vector_product,
    flat_grad,
    natural_gradient_step,
)

F64 = torch.float64


def test_conjugate_gradient_solves_a_3x3_spd_system():
    A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=F64)
    b = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    x = conjugate_gradient(lambda v: A @ v, b, iterations=3, residual_tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=0, atol=1e-12)
    # one iteration is only the first Krylov step: Ab = [6, 10, 8], b.b = 14, b.Ab = 6 + 20 + 24 = 50,
    # x_1 = (b.b / b.Ab) b = 0.28 b
    x1 = conjugate_gradient(lambda v: A @ v, b, iterations=1)
    torch.testing.assert_close(x1, b * 0.28)


def test_conjugate_gradient_stops_at_the_residual_tolerance():
    calls = []

    def identity(v):
        calls.append(1)
        return v

    b = torch.tensor([3.0, -1.0], dtype=F64)
    torch.testing.assert_close(conjugate_gradient(identity, b, iterations=10), b)
    assert len(calls) == 1  # solved exactly after one product; the residual is then 0


class TinyPolicy(torch.nn.Module):
    """A categorical policy over 3 actions, logits = W s + c, on 2-dimensional states."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(3, 2, generator=g, dtype=F64))
        self.bias = torch.nn.Parameter(torch.randn(3, generator=g, dtype=F64))

    def log_probs(self, states):
        return torch.log_softmax(states @ self.weight.T + self.bias, -1)  # (N, 3)


STATES = torch.tensor([[1.0, 0.0], [0.5, -1.0], [-2.0, 0.3], [0.0, 0.0]], dtype=F64)


def mean_kl(old_log_probs, log_probs):
    """Mean over states of KL(pi_old || pi) = sum_a pi_old (log pi_old - log pi)."""
    return (old_log_probs.exp() * (old_log_probs - log_probs)).sum(-1).mean()


def test_fisher_vector_product_equals_the_kl_hessian_times_v():
    policy = TinyPolicy()
    params = list(policy.parameters())
    theta_old = parameters_to_vector(params).detach()
    with torch.no_grad():
        old_log_probs = policy.log_probs(STATES)
    v = torch.linspace(-1.0, 1.0, theta_old.numel(), dtype=F64)

    def kl_of_flat(theta):
        weight, bias = theta[:6].view(3, 2), theta[6:]
        return mean_kl(old_log_probs, torch.log_softmax(STATES @ weight.T + bias, -1))

    for theta in (theta_old, theta_old + 0.3 * torch.cos(torch.arange(theta_old.numel(), dtype=F64))):
        vector_to_parameters(theta, params)
        hessian = torch.autograd.functional.hessian(kl_of_flat, theta)
        product = fisher_vector_product(lambda: mean_kl(old_log_probs, policy.log_probs(STATES)), params, v, 0.1)
        torch.testing.assert_close(product, hessian @ v + 0.1 * v, rtol=0, atol=1e-10)


def test_natural_gradient_step_by_hand():
    # F = diag(2, 8), g = [1, 1]: s = F^-1 g = [0.5, 0.125], s.Fs = 0.5 + 0.125 = 0.625
    # max_kl 0.01: scale sqrt(0.02 / 0.625) = sqrt(0.032) = 0.1788854
    # step = [0.0894427, 0.0223607], expected improvement g.step = 0.1118034
    F = torch.diag(torch.tensor([2.0, 8.0], dtype=F64))
    step, expected = natural_gradient_step(torch.tensor([1.0, 1.0], dtype=F64), lambda v: F @ v, max_kl=0.01)
    torch.testing.assert_close(step, torch.tensor([0.0894427, 0.0223607], dtype=F64), rtol=0, atol=1e-7)
    assert math.isclose(expected.item(), 0.1118034, abs_tol=1e-7)
    assert math.isclose(0.5 * (step @ F @ step).item(), 0.01, rel_tol=1e-12)


def quadratic_problem(surrogate_slope):
    """Surrogate slope * theta_0 (to maximise) and KL 10 ||theta||^2, from theta = 0 along full_step [1, 0]."""

    def f(theta):
        return surrogate_slope * theta[0], 10.0 * (theta @ theta)

    return f, torch.zeros(2, dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)


def test_line_search_rejects_steps_that_break_the_kl_bound():
    f, theta, full_step = quadratic_problem(surrogate_slope=1.0)
    # fractions 1, 0.5, 0.25 have KL 10, 2.5, 0.625: all above 0.5, though each improves the surrogate
    assert backtracking_line_search(f, theta, full_step, 1.0, max_kl=0.5, steps=3) is None
    # a fourth try, 0.125, has KL 0.15625 and is accepted
    step = backtracking_line_search(f, theta, full_step, 1.0, max_kl=0.5, steps=4)
    torch.testing.assert_close(step, torch.tensor([0.125, 0.0], dtype=F64))


def test_line_search_accepts_the_full_step_when_it_is_good():
    f, theta, full_step = quadratic_problem(surrogate_slope=1.0)
    small = 0.1 * full_step  # KL 0.1 <= 0.5, improvement 0.1 = the expected 0.1
    torch.testing.assert_close(backtracking_line_search(f, theta, small, 0.1, max_kl=0.5), small)


def test_line_search_rejects_steps_that_do_not_improve_enough():
    f, theta, full_step = quadratic_problem(surrogate_slope=-1.0)  # every step makes the surrogate worse
    assert backtracking_line_search(f, theta, 0.1 * full_step, 0.1, max_kl=0.5) is None
    # improving by 0.01 per unit where the linear model promised 1: ratio 0.01 < accept_ratio 0.1 at every fraction
    f, theta, full_step = quadratic_problem(surrogate_slope=0.01)
    assert backtracking_line_search(f, theta, 0.1 * full_step, 0.1, max_kl=0.5) is None
    assert backtracking_line_search(f, theta, 0.1 * full_step, 0.1, max_kl=0.5, accept_ratio=0.005) is not None


def test_one_trpo_update_on_a_tiny_policy_improves_within_the_trust_region():
    policy = TinyPolicy()
    params = list(policy.parameters())
    actions = torch.tensor([0, 2, 1, 2])
    advantages = torch.tensor([1.0, -0.5, 2.0, -1.0], dtype=F64)
    with torch.no_grad():
        old_log_probs = policy.log_probs(STATES)
    old_action_log_probs = old_log_probs[torch.arange(4), actions]

    def surrogate():
        ratio = torch.exp(policy.log_probs(STATES)[torch.arange(4), actions] - old_action_log_probs)
        return (ratio * advantages).mean()

    def surrogate_and_kl(theta):
        vector_to_parameters(theta, params)
        return surrogate(), mean_kl(old_log_probs, policy.log_probs(STATES))

    max_kl = 0.01
    gradient = flat_grad(surrogate(), params)
    Fvp = fisher_vector_operator(lambda: mean_kl(old_log_probs, policy.log_probs(STATES)), params, damping=0.0)
    full_step, expected = natural_gradient_step(gradient, Fvp, max_kl, iterations=9)
    theta_old = parameters_to_vector(params).detach()
    step = backtracking_line_search(surrogate_and_kl, theta_old, full_step, expected, max_kl)
    assert step is not None
    surrogate_new, kl_new = surrogate_and_kl(theta_old + step)
    assert surrogate_new.item() > 0.375  # at theta_old every ratio is 1: mean(1, -0.5, 2, -1) = 0.375
    assert 0 < kl_new.item() <= max_kl
    # KL grows as fraction^2: down to 1/512 it is about 0.01 / 512^2 = 3.8e-8, above a bound of 1e-8
    assert backtracking_line_search(surrogate_and_kl, theta_old, full_step, expected, max_kl / 1e6) is None
