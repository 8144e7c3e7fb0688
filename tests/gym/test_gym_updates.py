"""The updates of REINFORCE and TRPO against hand-worked figures and torch.distributions, on fixed batches."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Normal, kl_divergence

from rlhfkit.algorithms import whiten
from rlhfkit.config import load_config
from rlhfkit.gym.config import ALGORITHMS, GymConfig, TRPOConfig
from rlhfkit.gym.envs import inspect_env
from rlhfkit.gym.policy import ActorCritic, PolicySnapshot
from rlhfkit.gym.rollout import EnvRunner
from rlhfkit.gym.updates import UPDATES, advantages_and_returns, complete_returns, reinforce_update, trust_region_step

F, T = False, True


def _rollout(env_id: str, num_envs: int, steps: int, hidden: list[int], value_bias: float = 0.0):
    spec = inspect_env(env_id)
    torch.manual_seed(0)
    policy = ActorCritic(spec.obs_dim, spec.action_dim, spec.discrete, hidden)
    with torch.no_grad():
        policy.critic[-1].bias.fill_(value_bias)
    runner = EnvRunner(spec, num_envs, seed=0, normalize_observation=False, normalize_reward=False, gamma=0.99)
    rollout, _ = runner.collect(PolicySnapshot(policy), steps)
    return policy, rollout


def test_every_algorithm_of_the_config_has_an_update():
    assert list(UPDATES) == list(ALGORITHMS)


def test_complete_returns_marks_the_steps_whose_episode_ends_within_the_rollout():
    episode_end = torch.tensor([[F, T, F, F, T, F, F], [F, F, F, F, F, F, T], [F] * 7])
    assert complete_returns(episode_end).tolist() == [[T, T, T, T, T, F, F], [T] * 7, [F] * 7]


@pytest.mark.parametrize("baseline, value_bias", [(False, 0.0), (True, 0.5)])
def test_reinforce_step_is_the_score_function_gradient_on_a_two_armed_bandit(baseline, value_bias):
    policy, rollout = _rollout("RlhfkitTest/Bandit-v0", num_envs=4, steps=8, hidden=[8], value_bias=value_bias)
    config = load_config(
        GymConfig,
        overrides=[
            "algorithm=reinforce",
            f"reinforce.baseline={str(baseline).lower()}",
            "ppo.normalize_advantages=false",
            "ppo.entropy_coef=0",
            "optim.max_grad_norm=0",
        ],
    )
    output_bias = policy.actor[-1].bias
    before = output_bias.detach().clone()
    stats = reinforce_update(policy, torch.optim.SGD(policy.parameters(), lr=1.0), config, rollout)
    # At observation [0] every hidden unit is tanh(0) = 0, so the logits are the output bias b = 0:
    # pi = (1/2, 1/2) and d log pi(a) / d b = onehot(a) - pi. A one-step episode's return is its reward
    # a_t, so one SGD step of lr 1 on -mean_t A_t log pi(a_t) moves b by mean_t A_t (onehot(a_t) - pi):
    #   no baseline, A_t = a_t:           each pull of arm 1 adds (-1/2, 1/2), arm 0 adds 0;
    #   baseline V = 1/2, A_t = a_t - 1/2: arm 1 adds 1/2 (-1/2, 1/2), arm 0 adds -1/2 (1/2, -1/2): (-1/4, 1/4).
    arm_1_share = rollout.actions.float().mean()
    expected = torch.tensor([-0.25, 0.25]) if baseline else arm_1_share * torch.tensor([-0.5, 0.5])
    assert 0 < arm_1_share < 1
    torch.testing.assert_close(output_bias.detach() - before, expected, rtol=0, atol=1e-6)
    assert stats["reinforce/complete_fraction"] == 1.0


def test_reinforce_leaves_out_the_steps_whose_episode_has_not_ended():
    # The hand-worked rollout of test_gym_rollout.py: sub-env 0 ends episodes at t2 and t4 (t5, t6
    # have no return yet), sub-env 1 at t1, t4 and t6: 12 of 14 steps are used.
    policy, rollout = _rollout("RlhfkitTest/Scripted-v0", num_envs=2, steps=7, hidden=[4])
    config = load_config(GymConfig, overrides=["algorithm=reinforce"])
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    assert reinforce_update(policy, optimizer, config, rollout)["reinforce/complete_fraction"] == pytest.approx(12 / 14)

    # Two steps of sub-env 0: its first episode is cut at 3, so nothing is known and nothing moves.
    policy, rollout = _rollout("RlhfkitTest/Scripted-v0", num_envs=1, steps=2, hidden=[4])
    before = [p.detach().clone() for p in policy.parameters()]
    stats = reinforce_update(policy, torch.optim.SGD(policy.parameters(), lr=0.1), config, rollout)
    assert stats == {"reinforce/complete_fraction": 0.0}
    assert all(torch.equal(p, q) for p, q in zip(policy.parameters(), before))

    # The next two steps: the episode ends at its third step, the one step of the batch (nothing to whiten).
    runner = EnvRunner(inspect_env("RlhfkitTest/Scripted-v0"), 1, 0, False, False, 0.99)
    runner.collect(PolicySnapshot(policy), 2)
    rollout, _ = runner.collect(PolicySnapshot(policy), 2)
    stats = reinforce_update(policy, torch.optim.SGD(policy.parameters(), lr=0.1), config, rollout)
    assert stats["reinforce/complete_fraction"] == 0.5 and stats["policy/loss"] != 0.0
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def _distribution(policy: ActorCritic, observations: torch.Tensor):
    """pi(.|s) as torch.distributions, independent of ActorCritic's own log-prob and KL code."""
    with torch.no_grad():
        out = policy.actor(observations)
        if policy.discrete:
            return Categorical(logits=out)
        return Normal(out, policy.log_std.exp().expand_as(out))


def _mean_kl(old, new) -> float:
    kl = kl_divergence(old, new)
    return float((kl if kl.dim() == 1 else kl.sum(-1)).mean())


def _surrogate(distribution, rows, advantages) -> float:
    logprobs = distribution.log_prob(rows["actions"])
    logprobs = logprobs if logprobs.dim() == 1 else logprobs.sum(-1)
    return float((torch.exp(logprobs - rows["logprobs"]) * advantages).mean())


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("max_kl", [0.01, 1e-4])
def test_trust_region_step_stays_within_max_kl_and_improves_the_surrogate(env_id, max_kl):
    policy, rollout = _rollout(env_id, num_envs=2, steps=128, hidden=[16, 16])
    advantages, returns = advantages_and_returns(rollout, gamma=0.99, lam=0.95)
    rows = rollout.rows(advantages, returns)
    whitened = whiten(rows["advantages"])
    old = _distribution(policy, rows["observations"])
    critic = [p.detach().clone() for p in policy.critic.parameters()]

    stats = trust_region_step(policy, rows, TRPOConfig(max_kl=max_kl), normalize=True)

    new = _distribution(policy, rows["observations"])
    kl = _mean_kl(old, new)
    assert 0.1 * max_kl < kl <= max_kl  # it moved, within the trust region
    assert stats["policy/kl"] == pytest.approx(kl, rel=1e-3)  # float32: two formulas of a KL near 1e-4
    gain = _surrogate(new, rows, whitened) - _surrogate(old, rows, whitened)  # the old policy's is mean(A) = 0
    assert gain > 0 and stats["policy/surrogate_gain"] == pytest.approx(gain, rel=1e-3)
    assert 0 < stats["trpo/step_fraction"] <= 1
    assert all(torch.equal(p, q) for p, q in zip(policy.critic.parameters(), critic))  # V is fitted apart


def test_trust_region_step_keeps_the_policy_when_no_step_improves_the_surrogate():
    policy, rollout = _rollout("CartPole-v1", num_envs=2, steps=32, hidden=[8])
    rows = rollout.rows(torch.zeros(2, 32), torch.zeros(2, 32))  # A = 0: no step can improve the surrogate
    before = [p.detach().clone() for p in policy.actor_parameters()]
    stats = trust_region_step(policy, rows, TRPOConfig(), normalize=False)
    assert stats["trpo/step_fraction"] == 0.0 and stats["policy/kl"] == 0.0
    assert all(torch.equal(p, q) for p, q in zip(policy.actor_parameters(), before))
