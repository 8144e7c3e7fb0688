import math

import pytest
import torch

from rlhfkit.algorithms import (
    PolicySample,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    kl_penalty_policy_loss,
    logprobs_and_entropy,
    logprobs_from_logits,
    policy,
    update_kl_penalty_beta,
)

# Four real tokens and one padded one (garbage values that must not count).
RATIOS = [1.5, 0.5, 0.5, 1.0, 50.0]
ADVANTAGES = torch.tensor([[1.0, 1.0, -1.0, -2.0, float("nan")]])
OLD_LOGPROBS = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -3.0]])
LOGPROBS = OLD_LOGPROBS + torch.log(torch.tensor([RATIOS]))
MASK = torch.tensor([[True, True, True, True, False]])
# approx_kl per token (r - 1) - ln r:
#   1.5: 0.5 - 0.4054651 = 0.0945349 ; 0.5: -0.5 + 0.6931472 = 0.1931472 (twice) ; 1.0: 0
#   mean = 0.4808293 / 4 = 0.1202073
APPROX_KL = 0.1202073


def test_clipped_policy_loss_by_hand():
    # eps = 0.2; per token max(-A r, -A clip(r)):
    #   A=1,  r=1.5: max(-1.5, -1.2) = -1.2  clipped term larger -> clipped
    #   A=1,  r=0.5: max(-0.5, -0.8) = -0.5  unclipped
    #   A=-1, r=0.5: max( 0.5,  0.8) =  0.8  clipped
    #   A=-2, r=1.0: max( 2.0,  2.0) =  2.0  tie, not counted as clipped
    # loss = (-1.2 - 0.5 + 0.8 + 2.0) / 4 = 0.275 ; clipfrac = 2/4
    loss, stats = clipped_policy_loss(PolicySample(LOGPROBS, OLD_LOGPROBS, ADVANTAGES, MASK), 0.2)
    assert loss.item() == pytest.approx(0.275, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["approx_kl"].item() == pytest.approx(APPROX_KL, abs=1e-6)


def test_clipped_policy_loss_gradient_is_zero_on_clipped_and_padded_tokens():
    logprobs = LOGPROBS.clone().requires_grad_(True)
    loss, _ = clipped_policy_loss(PolicySample(logprobs, OLD_LOGPROBS, ADVANTAGES, MASK), 0.2)
    loss.backward()
    # d/dlogp of -A r / 4 = -A r / 4 on unclipped tokens: token 1: -0.125 ; token 3: 2*1/4 = 0.5
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, -0.125, 0.0, 0.5, 0.0], abs=1e-6)


def test_ratio_one_gives_minus_mean_advantage():
    g = torch.Generator().manual_seed(3)
    advantages = torch.randn(16, generator=g)
    old = torch.randn(16, generator=g)
    loss, stats = clipped_policy_loss(PolicySample(old, old, advantages, None), 0.2)
    assert loss.item() == pytest.approx(-advantages.mean().item(), abs=1e-6)
    assert stats["clipfrac"].item() == 0.0
    assert stats["approx_kl"].item() == 0.0


def test_kl_penalty_policy_loss_by_hand():
    # r*A = [1.5, 0.5, -0.5, -2.0] -> mean -0.125 ; loss = 0.125 + 0.5 * 0.1202073 = 0.1851037
    loss, stats = kl_penalty_policy_loss(PolicySample(LOGPROBS, OLD_LOGPROBS, ADVANTAGES, MASK), beta=0.5)
    assert loss.item() == pytest.approx(0.125 + 0.5 * APPROX_KL, abs=1e-6)
    assert stats["approx_kl"].item() == pytest.approx(APPROX_KL, abs=1e-6)
    assert stats["clipfrac"].item() == 0.0


def test_update_kl_penalty_beta_rule():
    # target 0.01: below 0.01/1.5 = 0.00667 halves, above 0.015 doubles, between keeps
    assert update_kl_penalty_beta(1.0, 0.005, 0.01) == 0.5
    assert update_kl_penalty_beta(1.0, 0.02, 0.01) == 2.0
    assert update_kl_penalty_beta(1.0, 0.01, 0.01) == 1.0
    assert update_kl_penalty_beta(1.0, 0.014, 0.01) == 1.0
    assert update_kl_penalty_beta(1.0, 0.007, 0.01) == 1.0
    # exactly on the thresholds (3 / 1.5 = 2, 3 * 1.5 = 4.5): unchanged
    assert update_kl_penalty_beta(1.0, 2.0, 3.0) == 1.0
    assert update_kl_penalty_beta(1.0, 4.5, 3.0) == 1.0


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.6, 0.0, 7.0]])
    old_values = torch.tensor([[0.5, 0.5, 0.5, -7.0]])
    returns = torch.tensor([[1.2, 0.0, 1.0, float("nan")]])
    mask = torch.tensor([[True, True, True, False]])
    # c = 0.2:
    #   v=1.0 old=0.5 R=1.2: (1.0-1.2)^2 = 0.04 ; clipped v 0.7: (0.7-1.2)^2 = 0.25 -> 0.25, clipped
    #   v=0.6 old=0.5 R=0.0: 0.36 ; clipped v = 0.6 -> 0.36, tie
    #   v=0.0 old=0.5 R=1.0: 1.0  ; clipped v 0.3: 0.49 -> 1.0, unclipped
    # loss = 0.5 * (0.25 + 0.36 + 1.0) / 3 = 0.2683333 ; clipfrac 1/3
    loss, stats = clipped_value_loss(values, old_values, returns, mask, 0.2)
    assert loss.item() == pytest.approx(0.2683333, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)
    # unclipped: 0.5 * (0.04 + 0.36 + 1.0) / 3 = 0.2333333
    for off in (None, 0.0):
        loss, stats = clipped_value_loss(values, old_values, returns, mask, off)
        assert loss.item() == pytest.approx(0.2333333, abs=1e-6)
        assert stats["clipfrac"].item() == 0.0
    # padding garbage (NaN return, wild old value) gets exactly zero gradient
    values = values.clone().requires_grad_(True)
    old_values[0, 3] = float("nan")
    clipped_value_loss(values, old_values, returns, mask, 0.2)[0].backward()
    # unclipped where the unclipped term won: d/dv 0.5*(v-R)^2/3 = (v-R)/3 ; token 2: -1/3 ; token 1 (tie) -> (0.6-0)/3
    assert values.grad[0].tolist() == pytest.approx([0.0, 0.2, -1 / 3, 0.0], abs=1e-6)


def test_entropy_matches_torch_categorical():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 11, generator=g) * 4.0
    logits[0, 0] *= 300.0  # large logits: a naive exp would overflow
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected, rtol=1e-5, atol=1e-5)
    # uniform over 11: log 11
    assert entropy_from_logits(torch.zeros(11)).item() == pytest.approx(math.log(11))
    bf16 = logits.bfloat16()
    out = entropy_from_logits(bf16)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out, torch.distributions.Categorical(logits=bf16.float()).entropy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_from_logits_matches_log_softmax_gather(temperature, monkeypatch):
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(3, 5, 17, generator=g) * 3.0).requires_grad_(True)
    tokens = torch.randint(0, 17, (3, 5), generator=g)
    expected = torch.log_softmax(logits / temperature, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    for chunk_elements in (policy._CHUNK_ELEMENTS, 20):  # one slice, and one batch row per slice
        monkeypatch.setattr(policy, "_CHUNK_ELEMENTS", chunk_elements)
        out = logprobs_from_logits(logits, tokens, temperature)
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(out.sum(), logits)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-6)


def test_logprobs_and_entropy_by_hand():
    # logits (0, ln 3) over two tokens: p = (1/4, 3/4); token 1 drawn
    #   log p(1) = ln 3/4 = -0.2876821 ; H = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.5623351
    #   d log p(1)/dl = onehot - p = (-1/4, 1/4) ; dH/dl = -p (log p + H):
    #   -1/4 (-1.3862944 + 0.5623351) = 0.2059898 ; -3/4 (-0.2876821 + 0.5623351) = -0.2059898
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    logprobs, entropy = logprobs_and_entropy(logits, torch.tensor([1]))
    assert logprobs.item() == pytest.approx(-0.2876821, abs=1e-6)
    assert entropy.item() == pytest.approx(0.5623351, abs=1e-6)
    (grad,) = torch.autograd.grad(logprobs.sum(), logits, retain_graph=True)
    torch.testing.assert_close(grad, torch.tensor([[-0.25, 0.25]]))
    (grad,) = torch.autograd.grad(entropy.sum(), logits)
    torch.testing.assert_close(grad, torch.tensor([[0.2059898, -0.2059898]]))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("entropy_grad", [False, True])
def test_logprobs_and_entropy_equal_the_separate_functions_values_and_gradients(temperature, entropy_grad, monkeypatch):
    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(3, 5, 17, generator=g) * 3.0).requires_grad_(True)
    tokens = torch.randint(0, 17, (3, 5), generator=g)
    weights = torch.randn(2, 3, 5, generator=g)
    expected = logprobs_from_logits(logits, tokens, temperature), entropy_from_logits(logits / temperature)
    expected_loss = (weights[0] * expected[0]).sum() + (weights[1] * expected[1]).sum() * entropy_grad
    (expected_grad,) = torch.autograd.grad(expected_loss, logits)
    for chunk_elements in (policy._CHUNK_ELEMENTS, 20):  # one slice, and one batch row per slice
        monkeypatch.setattr(policy, "_CHUNK_ELEMENTS", chunk_elements)
        logprobs, entropy = logprobs_and_entropy(logits, tokens, temperature, entropy_grad)
        torch.testing.assert_close(logprobs, expected[0], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(entropy, expected[1], rtol=1e-5, atol=1e-5)
        assert entropy.requires_grad is entropy_grad  # a statistic only: no graph through the vocabulary
        loss = (weights[0] * logprobs).sum() + ((weights[1] * entropy).sum() if entropy_grad else 0.0)
        (grad,) = torch.autograd.grad(loss, logits)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_logprobs_from_bf16_logits_are_float32_of_the_same_values():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 4, 9, generator=g).bfloat16()
    tokens = torch.randint(0, 9, (2, 4), generator=g)
    out = logprobs_from_logits(logits, tokens, temperature=0.5)
    expected = torch.log_softmax(logits.float() / 0.5, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
