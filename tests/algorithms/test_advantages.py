import random

import pytest
import torch

from rlhfkit.algorithms import generalized_advantage_estimation, masked_gae

GAMMA, LAM = 0.9, 0.8  # gamma * lam = 0.72


def test_masked_gae_by_hand():
    rewards = torch.tensor([[0.1, -0.2, 0.0, 1.0], [0.0, 0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.4, 0.6, 0.8], [0.5, 0.4, 0.6, 9.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    # row 0 (terminal at t=3):
    #   d3 = 1.0 - 0.8 = 0.2
    #   d2 = 0.0 + 0.9*0.8 - 0.6 = 0.12
    #   d1 = -0.2 + 0.9*0.6 - 0.4 = -0.06
    #   d0 = 0.1 + 0.9*0.4 - 0.5 = -0.04
    #   A3 = 0.2 ; A2 = 0.12 + 0.72*0.2 = 0.264 ; A1 = -0.06 + 0.72*0.264 = 0.13008
    #   A0 = -0.04 + 0.72*0.13008 = 0.0536576 ; R = A + V
    # row 1 (mask ends at t=2; reward 5 and value 9 at t=3 are padding and must not count):
    #   d2 = 1.0 - 0.6 = 0.4 ; d1 = 0.9*0.6 - 0.4 = 0.14 ; d0 = 0.9*0.4 - 0.5 = -0.14
    #   A2 = 0.4 ; A1 = 0.14 + 0.72*0.4 = 0.428 ; A0 = -0.14 + 0.72*0.428 = 0.16816 ; A3 = 0
    advantages, returns = masked_gae(rewards, values, mask, GAMMA, LAM)
    assert advantages[0].tolist() == pytest.approx([0.0536576, 0.13008, 0.264, 0.2], abs=1e-6)
    assert returns[0].tolist() == pytest.approx([0.5536576, 0.53008, 0.864, 1.0], abs=1e-6)
    assert advantages[1].tolist() == pytest.approx([0.16816, 0.428, 0.4, 0.0], abs=1e-6)
    assert returns[1].tolist() == pytest.approx([0.66816, 0.828, 1.0, 0.0], abs=1e-6)


def test_masked_gae_on_a_left_padded_row_equals_the_same_row_unpadded():
    rewards = torch.tensor([[0.1, -0.2, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.6, 0.8]])
    padded_rewards = torch.tensor([[7.0, 0.1, -0.2, 0.0, 1.0, 7.0]])
    padded_values = torch.tensor([[7.0, 0.5, 0.4, 0.6, 0.8, 7.0]])
    padded_mask = torch.tensor([[False, True, True, True, True, False]])
    advantages, returns = masked_gae(rewards, values, torch.ones(1, 4, dtype=torch.bool), GAMMA, LAM)
    padded_advantages, padded_returns = masked_gae(padded_rewards, padded_values, padded_mask, GAMMA, LAM)
    torch.testing.assert_close(padded_advantages[:, 1:5], advantages)
    torch.testing.assert_close(padded_returns[:, 1:5], returns)
    assert padded_advantages[0, 0] == 0 and padded_advantages[0, 5] == 0 and padded_returns[0, 0] == 0


def naive_gae_rows(rewards, values, lengths, gamma, lam):
    """Per row: a plain Python loop over the first `length` tokens, the last one terminal."""
    out_adv, out_ret = [], []
    for r, v, n in zip(rewards, values, lengths):
        adv = [0.0] * len(r)
        for t in range(n):  # forward form: A_t = sum_k (gamma*lam)^k delta_{t+k}
            total = 0.0
            for k in range(t, n):
                next_value = v[k + 1] if k + 1 < n else 0.0
                delta = r[k] + gamma * next_value - v[k]
                total += (gamma * lam) ** (k - t) * delta
            adv[t] = total
        out_adv.append(adv)
        out_ret.append([a + (v[t] if t < n else 0.0) for t, a in enumerate(adv)])
    return out_adv, out_ret


def test_masked_gae_matches_naive_loop_on_random_inputs():
    g = torch.Generator().manual_seed(1)
    rewards = torch.randn(3, 7, generator=g)
    values = torch.randn(3, 7, generator=g)
    lengths = [7, 4, 1]
    mask = torch.arange(7) < torch.tensor(lengths).unsqueeze(1)
    expected_adv, expected_ret = naive_gae_rows(rewards.tolist(), values.tolist(), lengths, 0.95, 0.9)
    advantages, returns = masked_gae(rewards, values, mask, 0.95, 0.9)
    torch.testing.assert_close(advantages, torch.tensor(expected_adv), rtol=0, atol=1e-5)
    torch.testing.assert_close(returns, torch.tensor(expected_ret), rtol=0, atol=1e-5)


def naive_gae_episodes(rewards, values, next_values, terminated, episode_end, gamma, lam):
    """Split each row into episodes at episode_end, then the forward-sum GAE inside each episode."""
    adv = [[0.0] * len(row) for row in rewards]
    for b in range(len(rewards)):
        start = 0
        T = len(rewards[b])
        for t in range(T):
            if episode_end[b][t] or t == T - 1:
                for i in range(start, t + 1):
                    total = 0.0
                    for k in range(i, t + 1):
                        bootstrap = 0.0 if terminated[b][k] else next_values[b][k]
                        delta = rewards[b][k] + gamma * bootstrap - values[b][k]
                        total += (gamma * lam) ** (k - i) * delta
                    adv[b][i] = total
                start = t + 1
    return adv


def test_general_gae_matches_naive_loop_with_random_terminations_and_truncations():
    rng = random.Random(2)
    g = torch.Generator().manual_seed(2)
    rewards = torch.randn(3, 7, generator=g)
    values = torch.randn(3, 7, generator=g)
    next_values = torch.cat([values[:, 1:], torch.randn(3, 1, generator=g)], dim=1)
    episode_end = torch.tensor([[rng.random() < 0.3 for _ in range(7)] for _ in range(3)])
    terminated = episode_end & torch.tensor([[rng.random() < 0.5 for _ in range(7)] for _ in range(3)])
    # on truncation the next value is V(final observation), not the first value of the next episode
    truncated = episode_end & ~terminated
    next_values = torch.where(truncated, torch.randn(3, 7, generator=g), next_values)
    assert terminated.any() and truncated.any()
    expected = naive_gae_episodes(
        rewards.tolist(), values.tolist(), next_values.tolist(), terminated.tolist(), episode_end.tolist(), 0.99, 0.95
    )
    advantages, returns = generalized_advantage_estimation(
        rewards, values, next_values, terminated, episode_end, 0.99, 0.95
    )
    torch.testing.assert_close(advantages, torch.tensor(expected), rtol=0, atol=1e-5)
    torch.testing.assert_close(returns, advantages + values)


def test_truncation_bootstraps_from_final_observation_value():
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    values = torch.tensor([[2.0, 3.0, 1.0, 0.5]])
    # step 1 ends the first episode; V(final obs of that episode) = 4.0 ; step 3 is terminal
    next_values = torch.tensor([[3.0, 4.0, 0.5, 123.0]])
    episode_end = torch.tensor([[False, True, False, True]])
    truncated_at_1 = torch.tensor([[False, False, False, True]])
    terminated_at_1 = torch.tensor([[False, True, False, True]])
    # d0 = 1 + 0.9*3 - 2 = 1.7 ; d2 = 1 + 0.9*0.5 - 1 = 0.45 ; d3 = 1 - 0.5 = 0.5 (terminal, 123 ignored)
    # A3 = 0.5 ; A2 = 0.45 + 0.72*0.5 = 0.81 (no carry across the end at step 1)
    # truncated:  d1 = 1 + 0.9*4 - 3 = 1.6 ; A1 = 1.6 ; A0 = 1.7 + 0.72*1.6 = 2.852
    # terminated: d1 = 1 - 3 = -2       ; A1 = -2  ; A0 = 1.7 - 0.72*2  = 0.26
    adv_truncated, _ = generalized_advantage_estimation(
        rewards, values, next_values, truncated_at_1, episode_end, GAMMA, LAM
    )
    adv_terminated, ret = generalized_advantage_estimation(
        rewards, values, next_values, terminated_at_1, episode_end, GAMMA, LAM
    )
    assert adv_truncated[0].tolist() == pytest.approx([2.852, 1.6, 0.81, 0.5], abs=1e-6)
    assert adv_terminated[0].tolist() == pytest.approx([0.26, -2.0, 0.81, 0.5], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([2.26, 1.0, 1.81, 1.0], abs=1e-6)
    # the difference is exactly the discounted bootstrap gamma * V(final obs) = 3.6, and 0.72 * 3.6 one step earlier
    assert (adv_truncated - adv_terminated)[0].tolist() == pytest.approx([2.592, 3.6, 0.0, 0.0], abs=1e-6)


def test_gym_shape_without_batch_dimension():
    # (T,) input: gamma = lam = 1, no ends except the last: A_t = sum of future rewards - V_t
    rewards = torch.tensor([1.0, 2.0, 3.0])
    values = torch.zeros(3)
    ends = torch.tensor([False, False, True])
    advantages, _ = generalized_advantage_estimation(rewards, values, torch.zeros(3), ends, ends, 1.0, 1.0)
    assert advantages.tolist() == [6.0, 5.0, 3.0]


def test_shape_mismatch_is_rejected():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="next_values"):
        generalized_advantage_estimation(x, x, torch.zeros(2, 4), x.bool(), x.bool(), 0.9, 0.9)
