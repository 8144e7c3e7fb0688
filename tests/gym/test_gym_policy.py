"""The actor-critic's log-probabilities and entropies against torch.distributions, and its initialisation."""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Normal, kl_divergence

from rlhfkit.gym.policy import ActorCritic, PolicySnapshot


def test_gaussian_logprob_and_entropy_match_torch_normal():
    torch.manual_seed(0)
    policy = ActorCritic(obs_dim=3, action_dim=2, discrete=False, hidden_sizes=[8], log_std_init=-0.5)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 0.3]))
    observations = torch.randn(5, 3)
    actions, logprobs, values = PolicySnapshot(policy).act(observations)
    means = policy.actor(observations)
    reference = torch.distributions.Normal(means, policy.log_std.exp())
    torch.testing.assert_close(logprobs, reference.log_prob(actions).sum(-1))
    new_logprobs, entropy, new_values = policy.evaluate(observations, actions)
    torch.testing.assert_close(new_logprobs, logprobs)
    torch.testing.assert_close(entropy, reference.entropy().sum(-1))
    torch.testing.assert_close(new_values, values)
    assert actions.shape == (5, 2) and values.shape == (5,)
    torch.testing.assert_close(PolicySnapshot(policy).act(observations, deterministic=True)[0], means.detach())


def test_categorical_logprob_and_entropy_match_torch_categorical():
    torch.manual_seed(0)
    policy = ActorCritic(obs_dim=4, action_dim=3, discrete=True, hidden_sizes=[8, 8], orthogonal_init=False)
    observations = torch.randn(6, 4)
    actions, logprobs, _ = PolicySnapshot(policy).act(observations)
    reference = torch.distributions.Categorical(logits=policy.actor(observations))
    torch.testing.assert_close(logprobs, reference.log_prob(actions))
    _, entropy, _ = policy.evaluate(observations, actions)
    torch.testing.assert_close(entropy, reference.entropy())
    assert torch.equal(PolicySnapshot(policy).act(observations, deterministic=True)[0], reference.probs.argmax(-1))


def test_sampled_actions_follow_the_policy_probabilities():
    torch.manual_seed(0)
    policy = ActorCritic(obs_dim=1, action_dim=2, discrete=True, hidden_sizes=[4])
    with torch.no_grad():
        policy.actor[-1].bias.copy_(torch.tensor([0.0, math.log(3.0)]))  # p = (1/4, 3/4) up to the 0.01-gain weights
    actions, _, _ = PolicySnapshot(policy).act(torch.zeros(20_000, 1))
    assert abs(actions.float().mean().item() - 0.75) < 0.015


def test_orthogonal_initialisation_gains_and_zero_biases():
    torch.manual_seed(0)
    policy = ActorCritic(obs_dim=4, action_dim=2, discrete=True, hidden_sizes=[64, 64])
    hidden, output = policy.actor[0], policy.actor[-1]
    # Rows of an orthogonal (out x in) matrix with out <= in are orthonormal, scaled by the gain.
    torch.testing.assert_close(output.weight @ output.weight.T, 0.01**2 * torch.eye(2), atol=1e-7, rtol=0)
    torch.testing.assert_close(hidden.weight.T @ hidden.weight, 2.0 * torch.eye(4), atol=1e-5, rtol=0)
    value_out = policy.critic[-1]
    torch.testing.assert_close(value_out.weight @ value_out.weight.T, torch.eye(1))
    assert all(
        torch.count_nonzero(m.bias) == 0 for m in [*policy.actor, *policy.critic] if isinstance(m, torch.nn.Linear)
    )


def test_kl_from_an_old_policy_matches_torch_distributions():
    torch.manual_seed(0)
    observations = torch.randn(5, 3)
    for policy in (
        ActorCritic(obs_dim=3, action_dim=4, discrete=True, hidden_sizes=[8], orthogonal_init=False),
        ActorCritic(obs_dim=3, action_dim=2, discrete=False, hidden_sizes=[8], orthogonal_init=False),
    ):
        with torch.no_grad():
            old = policy.distribution(observations).frozen()
            for param in policy.actor_parameters():
                param.add_(0.3 * torch.randn_like(param))  # in place: `frozen` must not follow
            new_out = policy.actor(observations)
        if policy.discrete:
            reference = kl_divergence(Categorical(logits=old.out), Categorical(logits=new_out))
        else:
            old_normal = Normal(old.out, old.log_std.exp().expand_as(old.out))
            reference = kl_divergence(old_normal, Normal(new_out, policy.log_std.exp().expand_as(new_out))).sum(-1)
        assert reference.min() > 0.01
        torch.testing.assert_close(policy.kl_from(old, observations), reference)
        assert torch.allclose(policy.kl_from(policy.distribution(observations), observations), torch.zeros(5))


def test_the_snapshot_acts_as_the_policy_did_when_it_was_taken():
    torch.manual_seed(0)
    for discrete, action_dim in ((True, 3), (False, 2)):
        policy = ActorCritic(obs_dim=4, action_dim=action_dim, discrete=discrete, hidden_sizes=[8, 5])
        observations = torch.randn(7, 4)
        snapshot = PolicySnapshot(policy)
        actions, logprobs, values = snapshot.act(observations)
        new_logprobs, _, new_values = policy.evaluate(observations, actions)
        torch.testing.assert_close(logprobs, new_logprobs, rtol=0, atol=1e-6)
        torch.testing.assert_close(values, new_values, rtol=0, atol=1e-6)
        torch.testing.assert_close(snapshot.value(observations), new_values, rtol=0, atol=1e-6)
        with torch.no_grad():  # a later update does not reach the snapshot: it stays the rollout's pi_old
            for parameter in policy.parameters():
                parameter.add_(1.0)
        torch.testing.assert_close(snapshot.value(observations), values, rtol=0, atol=0)
        assert not torch.allclose(policy.value(observations), values)
