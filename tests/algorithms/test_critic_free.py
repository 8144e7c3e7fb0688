import functools
import math

import pytest
import torch

from rlhfkit.algorithms import (
    LOSS_AGGREGATIONS,
    PolicySample,
    broadcast_over_tokens,
    clipped_policy_loss,
    constant_normalizer,
    grpo_advantages,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_loss,
    policy_gradient_loss,
    reinforce_plus_plus_advantages,
    reinforce_plus_plus_baseline_advantages,
    reward_to_go,
    rloo_advantages,
    sequence_mean_token_mean,
    share_weight,
    token_mean,
)

SCORES = torch.tensor([1.0, 2.0, 3.0, 6.0])  # one group of K = 4


def test_grpo_group_of_four_by_hand():
    # mean 3, deviations [-2, -1, 0, 3], Bessel variance (4 + 1 + 0 + 9) / 3 = 4.6666667, std 2.1602469
    # A = deviations / std = [-0.9258201, -0.4629100, 0, 1.3887301]
    expected = torch.tensor([-0.9258201, -0.4629100, 0.0, 1.3887301])
    torch.testing.assert_close(grpo_advantages(SCORES, 4, eps=0.0), expected, rtol=0, atol=1e-6)
    # the default eps = 1e-6 moves them by under 1e-6
    torch.testing.assert_close(grpo_advantages(SCORES, 4), expected, rtol=0, atol=1e-6)
    # Dr. GRPO: no division by the std
    torch.testing.assert_close(grpo_advantages(SCORES, 4, scale_by_std=False), torch.tensor([-2.0, -1.0, 0.0, 3.0]))


def test_rloo_group_of_four_by_hand():
    # r_1 = 1 against the others' mean (2 + 3 + 6) / 3 = 11/3 -> -8/3 ; r_2: 2 - 10/3 = -4/3
    # r_3: 3 - 3 = 0 ; r_4: 6 - 2 = 4
    # (equivalently 4/3 * [-2, -1, 0, 3])
    torch.testing.assert_close(rloo_advantages(SCORES, 4), torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0]), rtol=0, atol=1e-6)


def test_groups_are_consecutive_rows():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0, 4.0])
    # group 3: mean 1, deviations [-1, -1, -1, 3], std sqrt(12 / 3) = 2 -> [-0.5, -0.5, -0.5, 1.5]
    expected = torch.tensor([-0.9258201, -0.4629100, 0.0, 1.3887301, 0, 0, 0, 0, -0.5, -0.5, -0.5, 1.5])
    torch.testing.assert_close(grpo_advantages(scores, 4, eps=0.0), expected, rtol=0, atol=1e-6)
    # group 3 under RLOO: 0 - 4/3 three times, 4 - 0 = 4
    torch.testing.assert_close(
        rloo_advantages(scores, 4)[8:], torch.tensor([-4 / 3, -4 / 3, -4 / 3, 4.0]), rtol=0, atol=1e-6
    )


# Four responses of lengths [2, 1, 2, 1], T = 2; d = logprobs - ref_logprobs (k1 = d), padding holds garbage.
MASK = torch.tensor([[True, True], [True, False], [True, True], [True, False]])
REF_LOGPROBS = torch.full((4, 2), -1.0)
LOGPROBS = REF_LOGPROBS + torch.tensor([[0.5, 1.0], [2.0, 9.0], [0.0, -1.0], [1.0, 9.0]])


def test_reinforce_plus_plus_by_hand():
    # beta = 0.1: r_t = -0.1 d_t + score on the last real token
    #   row 0: [-0.05, -0.1 + 1] -> reward-to-go [0.85, 0.9]
    #   row 1: [-0.2 + 2]        -> [1.8]
    #   row 2: [0, 0.1 + 3]      -> [3.1, 3.1]
    #   row 3: [-0.1 + 6]        -> [5.9]
    # six returns: mean 15.65 / 6 = 2.6083333, squared deviations sum 17.9820833, Bessel var 3.5964167, std 1.8964221
    # A = (G - mean) / std = [-0.9271846, -0.9008192 | -0.4262413 | 0.2592601, 0.2592601 | 1.7357247]
    expected = torch.tensor([[-0.9271846, -0.9008192], [-0.4262413, 0.0], [0.2592601, 0.2592601], [1.7357247, 0.0]])
    advantages = reinforce_plus_plus_advantages(SCORES, LOGPROBS, REF_LOGPROBS, MASK, kl_coef=0.1)
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-6)
    # One group of four: subtracting its mean shifts every return by the same constant, which whitening removes.
    baseline = reinforce_plus_plus_baseline_advantages(SCORES, LOGPROBS, REF_LOGPROBS, MASK, group_size=4, kl_coef=0.1)
    torch.testing.assert_close(baseline, expected, rtol=0, atol=1e-6)


def test_reinforce_plus_plus_baseline_two_groups_by_hand():
    # groups [1, 2] and [3, 6]: means 1.5 and 4.5 -> centred scores [-0.5, 0.5, -1.5, 1.5]
    #   row 0: [-0.05, -0.1 - 0.5] -> [-0.65, -0.6] ; row 1: [-0.2 + 0.5] -> [0.3]
    #   row 2: [0, 0.1 - 1.5]      -> [-1.4, -1.4]  ; row 3: [-0.1 + 1.5] -> [1.4]
    # mean -2.35 / 6 = -0.3916667, squared deviations sum 5.8320833, Bessel var 1.1664167, std 1.0800077
    expected = torch.tensor([[-0.2391958, -0.1928999], [0.6404275, 0.0], [-0.9336353, -0.9336353], [1.6589388, 0.0]])
    advantages = reinforce_plus_plus_baseline_advantages(
        SCORES, LOGPROBS, REF_LOGPROBS, MASK, group_size=2, kl_coef=0.1
    )
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-6)


def test_reward_to_go_discounted_by_hand():
    # gamma 0.5: G_2 = 3 ; G_1 = 2 + 0.5 * 3 = 3.5 ; G_0 = 1 + 0.5 * 3.5 = 2.75 ; row 2 stops at its last real token
    rewards = torch.tensor([[1.0, 2.0, 3.0], [4.0, 8.0, 99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    expected = torch.tensor([[2.75, 3.5, 3.0], [8.0, 8.0, 0.0]])
    torch.testing.assert_close(reward_to_go(rewards, mask, gamma=0.5), expected)


def test_group_size_one_refused_with_its_name():
    for estimator in (grpo_advantages, rloo_advantages):
        with pytest.raises(ValueError, match="group_size"):
            estimator(SCORES, 1)
    with pytest.raises(ValueError, match="group_size"):
        reinforce_plus_plus_baseline_advantages(SCORES, LOGPROBS, REF_LOGPROBS, MASK, group_size=1, kl_coef=0.1)
    with pytest.raises(ValueError, match="group_size=3"):
        grpo_advantages(SCORES, 3)  # 4 rows do not split into groups of 3


def test_equal_rewards_give_zero_advantage_not_nan():
    equal = torch.full((8,), 0.7)
    for advantages in (
        grpo_advantages(equal, 4),
        grpo_advantages(equal, 4, eps=0.0),
        grpo_advantages(equal, 4, scale_by_std=False),
        rloo_advantages(equal, 4),
    ):
        assert torch.equal(advantages, torch.zeros(8))
    equal_scores = torch.full((4,), 0.7)
    no_kl = reinforce_plus_plus_advantages(equal_scores, LOGPROBS, REF_LOGPROBS, MASK, kl_coef=0.0)
    assert torch.equal(no_kl, torch.zeros(4, 2))
    centred = reinforce_plus_plus_baseline_advantages(
        equal_scores, LOGPROBS, REF_LOGPROBS, MASK, group_size=4, kl_coef=0.0
    )
    assert torch.equal(centred, torch.zeros(4, 2))


def test_broadcast_over_tokens():
    advantages = broadcast_over_tokens(torch.tensor([2.0, -1.0, 0.5, 3.0]), MASK)
    torch.testing.assert_close(advantages, torch.tensor([[2.0, 2.0], [-1.0, 0.0], [0.5, 0.5], [3.0, 0.0]]))


# A 2 x 3 batch: row 0 has three real tokens, row 1 one; padding holds NaN, which must not leak.
VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, math.nan, math.nan]])
VALUES_MASK = torch.tensor([[True, True, True], [True, False, False]])


def test_aggregations_by_hand():
    # token mean: (1 + 2 + 3 + 4) / 4 = 2.5
    assert token_mean(VALUES, VALUES_MASK, 5).item() == pytest.approx(2.5)
    # mean of per-response means: (mean(1, 2, 3) + mean(4)) / 2 = (2 + 4) / 2 = 3
    assert sequence_mean_token_mean(VALUES, VALUES_MASK, 5).item() == pytest.approx(3.0)
    # constant normaliser, max_new_tokens 5: 10 / (2 * 5) = 1
    assert constant_normalizer(VALUES, VALUES_MASK, 5).item() == pytest.approx(1.0)
    assert LOSS_AGGREGATIONS["token_mean"].count(VALUES_MASK) == 4
    assert LOSS_AGGREGATIONS["sequence_mean_token_mean"].count(VALUES_MASK) == 2
    assert LOSS_AGGREGATIONS["constant_normalizer"].count(VALUES_MASK) == 2
    with pytest.raises(ValueError, match="max_new_tokens"):
        constant_normalizer(VALUES, VALUES_MASK, 0)


@pytest.mark.parametrize("name", sorted(LOSS_AGGREGATIONS))
def test_micro_batches_weighted_by_share_weight_add_up_to_the_batch(name):
    aggregation = LOSS_AGGREGATIONS[name]
    g = torch.Generator().manual_seed(0)
    values = torch.randn(5, 4, generator=g)
    mask = torch.arange(4) < torch.tensor([[4], [1], [3], [2], [4]])
    whole = aggregation.reduce(values, mask, 6)
    total_count = aggregation.count(mask)
    parts = [slice(0, 1), slice(1, 4), slice(4, 5)]
    added = sum(
        aggregation.reduce(values[s], mask[s], 6) * share_weight(aggregation.count(mask[s]), total_count) for s in parts
    )
    torch.testing.assert_close(added, whole)


def test_kl_loss_by_hand():
    # d = [[0.5, 1.0, 2.0], [1.0, pad, pad]] ; k1 token mean: (0.5 + 1 + 2 + 1) / 4 = 1.125
    # k2 = d^2 / 2 = [0.125, 0.5, 2.0, 0.5] ; sequence mean of token means: (2.625 / 3 + 0.5) / 2 = 0.6875
    ref = torch.zeros(2, 3)
    logprobs = torch.tensor([[0.5, 1.0, 2.0], [1.0, math.nan, math.nan]])
    assert kl_loss(logprobs, ref, VALUES_MASK, kl_k1, functools.partial(token_mean, max_new_tokens=3)).item() == (
        pytest.approx(1.125)
    )
    by_sequence = functools.partial(sequence_mean_token_mean, max_new_tokens=3)
    assert kl_loss(logprobs, ref, VALUES_MASK, kl_k2, by_sequence).item() == pytest.approx(0.6875)


def test_kl_loss_gradients_in_expectation():
    # Exact expectation over a 3-way categorical pi = softmax(theta): weight each outcome by pi (detached).
    # On pi's samples k1's expected gradient is 0, k2's is grad KL(pi || ref), k3's is grad KL(ref || pi).
    theta = torch.tensor([0.3, -0.2, 0.8], dtype=torch.float64, requires_grad=True)
    ref_logprobs = torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64))
    mask = torch.ones(3, dtype=torch.bool)

    def expected_gradient(estimator):
        logprobs = torch.log_softmax(theta, -1)
        weights = logprobs.exp().detach()
        loss = kl_loss(logprobs, ref_logprobs, mask, estimator, lambda values, m: (values * weights).sum())
        return torch.autograd.grad(loss, theta)[0]

    def exact_kl_gradient(reverse):
        logprobs = torch.log_softmax(theta, -1)
        p, q = (ref_logprobs, logprobs) if reverse else (logprobs, ref_logprobs)
        return torch.autograd.grad((p.exp() * (p - q)).sum(), theta)[0]

    torch.testing.assert_close(expected_gradient(kl_k1), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(expected_gradient(kl_k2), exact_kl_gradient(reverse=False))
    torch.testing.assert_close(expected_gradient(kl_k3), exact_kl_gradient(reverse=True))


def test_reinforce_gradient_on_a_two_action_bandit_by_hand():
    # pi = softmax([0, ln 3]) = [0.25, 0.75]; grad_theta log pi(a) = e_a - pi
    #   a = 0: [0.75, -0.75] ; a = 1: [-0.25, 0.25]
    # actions [0, 1, 1] with returns [1, 2, 0]: g = (1 * [0.75, -0.75] + 2 * [-0.25, 0.25] + 0) / 3 = [1/12, -1/12]
    # the loss is -g-hat, so its gradient is [-1/12, 1/12]
    theta = torch.tensor([0.0, math.log(3.0)], requires_grad=True)
    actions = torch.tensor([0, 1, 1])
    logprobs = torch.log_softmax(theta, -1)[actions]
    loss = policy_gradient_loss(logprobs, torch.tensor([1.0, 2.0, 0.0]), None)
    (gradient,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(gradient, torch.tensor([-1 / 12, 1 / 12]))
    # with baseline 1 the advantages are [0, 1, -1]: the two a = 1 terms cancel, the gradient is 0
    logprobs = torch.log_softmax(theta, -1)[actions]
    (gradient,) = torch.autograd.grad(policy_gradient_loss(logprobs, torch.tensor([0.0, 1.0, -1.0]), None), theta)
    torch.testing.assert_close(gradient, torch.zeros(2))


def test_policy_gradient_equals_the_clipped_surrogate_gradient_at_ratio_one():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 5, generator=g, requires_grad=True)
    tokens = torch.randint(0, 5, (3, 4), generator=g)
    advantages = torch.randn(3, 4, generator=g)
    mask = torch.arange(4) < torch.tensor([[4], [2], [3]])
    logprobs = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    (reinforce,) = torch.autograd.grad(policy_gradient_loss(logprobs, advantages, mask), logits, retain_graph=True)
    surrogate, _ = clipped_policy_loss(PolicySample(logprobs, logprobs.detach(), advantages, mask), clip_range=0.2)
    (ppo,) = torch.autograd.grad(surrogate, logits)
    torch.testing.assert_close(reinforce, ppo)
