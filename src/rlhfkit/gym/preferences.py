"""Christiano et al. (2017) on Gymnasium: the policy learns from a reward model fitted to comparisons of its segments.

With `reward.kind=preferences`, each update runs `PreferenceReward.relabel` between the rollout and
the algorithm's update:

  1. ask for the labels that are due (`comparisons_due`): a share of the budget on the untrained
     policy's first rollout (the paper's 25 %), the rest at a rate falling as 1 / (1 + t / t_half),
     the paper's 2e6 / (T + 2e6);
  2. cut pairs of segments of `reward.segment_steps` steps, each inside one episode, from the
     rollout (`segment_starts`, `sample_pairs`), and let the synthetic labeller compare them by
     their true returns (`synthetic_preferences`: Bradley-Terry noise at `reward.temperature`;
     at 0 the higher return always wins and equal returns are labelled 0.5, as the paper's
     "equally preferable"), or, with `reward.labeller=server`, people who see each pair as two
     animations on the labelling page (`rlhfkit.gym.people`);
  3. fit the ensemble of reward models r(o, a) to all comparisons so far by the Bradley-Terry loss
     on segment returns, each member on its own minibatches drawn with replacement (the paper's
     bootstrap, `fit_reward_model`);
  4. replace the rollout's rewards by the ensemble's mean prediction, standardised by running
     statistics (the paper normalised r to zero mean and a constant scale).

The environment's rewards reach only the labeller and the logged diagnostics, never the policy.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import save_file
from torch import Tensor

from rlhfkit.algorithms import RunningMeanStd
from rlhfkit.config import field
from rlhfkit.errors import UserError
from rlhfkit.gym.envs import EnvSpec
from rlhfkit.gym.reward_model import RewardEnsemble, agreement, correlation, fit_reward_model, reward_features
from rlhfkit.gym.rollout import Rollout

REWARD_KINDS = ("environment", "preferences")
LABELLERS = ("synthetic", "server")
# The checkpoint `fit` would write before an update: people's segments are replayed from it, and kept on a timeout
ResumePoint = tuple[dict[str, dict[str, Tensor]], dict[str, Any]]
REWARD_MODEL_FILE = "reward_model.safetensors"


@dataclasses.dataclass
class RewardConfig:
    kind: str = field(
        "environment",
        "the policy's reward: environment (its own) or preferences (a reward model fitted to comparisons of segments "
        "of the policy's experience by a synthetic labeller that sees the true return, or by people: reward.labeller; "
        "Christiano et al. 2017)",
    )
    comparisons: int = field(1000, "preferences: labels asked for over the whole run (the budget)")
    initial_fraction: float = field(
        0.25, "preferences: share of the budget labelled on the untrained policy's first rollout"
    )
    rate_halved_at: float = field(
        0.25, "preferences: share of the run after which the label rate has halved (it falls as 1 / (1 + t / t_half))"
    )
    segment_steps: int = field(25, "preferences: steps per segment (Pendulum-v1 steps at 20 Hz: 25 steps = 1.25 s)")
    temperature: float = field(
        0.0, "preferences: synthetic labeller's noise, P(prefer 1) = sigmoid((R_1 - R_2) / temperature); 0: exact"
    )
    ensemble: int = field(3, "preferences: reward models, each fitted on its own bootstrap of the labels")
    hidden_sizes: list[int] = field(factory=lambda: [64, 64], doc="preferences: leaky-ReLU hidden layers of r(o, a)")
    learning_rate: float = field(1e-3, "preferences: Adam learning rate of the reward models")
    train_steps: int = field(100, "preferences: Adam steps on all labels so far after each update's new labels")
    batch_size: int = field(64, "preferences: comparisons per minibatch of each reward model")
    labeller: str = field(
        "synthetic",
        "preferences: who compares the segments: synthetic (by their true returns, at reward.temperature) or "
        "server (people on a running `rlhfkit label serve`, who see each pair as two animations; token: --token)",
    )
    server: str = field(
        "", "labeller=server: the labelling server's URL (an admin's token: --token or $RLHFKIT_LABEL_TOKEN)"
    )
    question: str = field(
        "", "labeller=server: what the page asks of each pair (empty: which clip does better at env.id)"
    )
    label_timeout: float = field(
        3600.0, "labeller=server: seconds to wait for a round's judgements before stopping (--resume waits on)"
    )
    poll_seconds: float = field(2.0, "labeller=server: seconds between two looks at the server")

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise UserError(f"reward.kind {self.kind!r} is not one of {', '.join(REWARD_KINDS)}")
        for name in ("comparisons", "segment_steps", "ensemble", "train_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"reward.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.initial_fraction <= 1.0:
            raise UserError(f"reward.initial_fraction must be in [0, 1], got {self.initial_fraction}")
        for name in ("rate_halved_at", "learning_rate"):
            if getattr(self, name) <= 0:
                raise UserError(f"reward.{name} must be > 0, got {getattr(self, name)}")
        if self.temperature < 0:
            raise UserError(f"reward.temperature must be >= 0 (0: no noise), got {self.temperature}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise UserError(f"reward.hidden_sizes must be a non-empty list of positive sizes, got {self.hidden_sizes}")
        if self.labeller not in LABELLERS:
            raise UserError(f"reward.labeller {self.labeller!r} is not one of {', '.join(LABELLERS)}")
        if self.labeller == "server" and not self.server:
            raise UserError(
                "reward.labeller=server needs the labelling server's URL: --set reward.server=http://HOST:PORT"
            )
        if self.labeller == "server" and self.temperature:
            raise UserError("reward.temperature is the synthetic labeller's noise; people's is their own: remove it")
        if self.label_timeout <= 0 or self.poll_seconds <= 0:
            raise UserError(
                "reward.label_timeout and reward.poll_seconds must be > 0, "
                f"got {self.label_timeout}, {self.poll_seconds}"
            )


def refuse_unsupported_preference_settings(reward: RewardConfig, normalized: list[str], rollout_steps: int) -> None:
    """UserError where reward.kind=preferences meets env normalisation (`normalized`: those on) or short rollouts."""
    if reward.kind != "preferences":
        return
    if normalized:
        raise UserError(
            f"env.{normalized[0]}=true does not go with reward.kind=preferences: the reward model reads the raw "
            "observations and standardises its own output; set it to false"
        )
    if reward.segment_steps > rollout_steps:
        raise UserError(
            f"reward.segment_steps {reward.segment_steps} is longer than a rollout (ppo.rollout_steps "
            f"{rollout_steps}); segments are cut from one rollout"
        )


# ---------------------------------------------------------------------------
# When labels arrive
# ---------------------------------------------------------------------------


def comparisons_due(update: int, total_updates: int, config: RewardConfig) -> int:
    """Labels asked for in all by the end of `update` (1-based) of `total_updates`.

        c(u) = c0 + (C - c0) * ln(1 + (u - 1) / h) / ln(1 + (U - 1) / h),   h = rate_halved_at * (U - 1)

    c0 = round(C * initial_fraction) labels come from the first rollout; after it the label rate,
    the derivative of c, is proportional to 1 / (h + u - 1): it halves after h updates and the
    whole budget C is spent by the last update U.
    """
    budget = config.comparisons
    initial = round(budget * config.initial_fraction)
    if update < 1:
        return 0
    if update >= total_updates:
        return budget
    halving = config.rate_halved_at * (total_updates - 1)
    share = math.log1p((update - 1) / halving) / math.log1p((total_updates - 1) / halving)
    return initial + round((budget - initial) * share)


# ---------------------------------------------------------------------------
# Segments and the synthetic labeller
# ---------------------------------------------------------------------------


def segment_starts(episode_end: Tensor, length: int) -> Tensor:
    """(K, 2) (environment, step) at which a segment of `length` steps lies inside one episode.

    episode_end: (N, T) bool, True where the episode ended at that step. A segment may end on the
    last step of an episode but not run past it: no episode ends on its first length - 1 steps.
    """
    num_envs, steps = episode_end.shape
    if length > steps:
        return torch.zeros(0, 2, dtype=torch.long)
    ends_before_last = torch.zeros(num_envs, steps, dtype=torch.long)
    ends_before_last[:, 1:] = episode_end[:, :-1].long().cumsum(1)  # [n, t]: episode ends on steps < t
    first = torch.arange(steps - length + 1)
    crossing = ends_before_last[:, first + length - 1] - ends_before_last[:, first]  # ends on steps t .. t+length-2
    return torch.nonzero(crossing == 0)


def cut_segments(values: Tensor, starts: Tensor, length: int) -> Tensor:
    """values (N, T, ...) -> (K, length, ...): the steps start .. start + length - 1 of each (environment, start)."""
    steps = starts[:, 1:2] + torch.arange(length)  # (K, length)
    return values[starts[:, :1], steps]


def sample_pairs(starts: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """`count` pairs of distinct segment starts drawn uniformly (the torch generator): two (count, 2) tensors."""
    first = torch.randint(len(starts), (count,))
    second = (first + torch.randint(1, len(starts), (count,))) % len(starts)  # any start but the first's
    return starts[first], starts[second]


def preference_probability(return_first: Tensor, return_second: Tensor, temperature: float) -> Tensor:
    """P(the first segment is preferred) by Bradley-Terry on the true returns.

    P = sigmoid((R_1 - R_2) / temperature);   temperature 0: 1, 0.5 or 0 (the higher return wins)
    """
    difference = return_first - return_second
    if temperature == 0:
        return (torch.sign(difference) + 1) / 2
    return torch.sigmoid(difference / temperature)


def synthetic_preferences(return_first: Tensor, return_second: Tensor, temperature: float) -> Tensor:
    """The labeller's answers (K,): 1 first preferred, 0 second, 0.5 equal (only at temperature 0).

    At temperature 0 the answer is `preference_probability` itself, without noise; above it each
    answer is one draw from it, as a noisy person's would be.
    """
    probability = preference_probability(return_first, return_second, temperature)
    return probability if temperature == 0 else torch.bernoulli(probability)


@dataclasses.dataclass
class Comparisons:
    """Labelled pairs of segments: everything the reward model is fitted to."""

    features: Tensor  # (K, 2, L, F): reward-model inputs of the first and the second segment
    true_returns: Tensor  # (K, 2): what the labeller compared (diagnostics only)
    prob_first: Tensor  # (K,): the label, P(first preferred)

    @classmethod
    def empty(cls, length: int, feature_dim: int) -> Comparisons:
        return cls(torch.zeros(0, 2, length, feature_dim), torch.zeros(0, 2), torch.zeros(0))

    def __len__(self) -> int:
        return len(self.prob_first)

    def extend(self, other: Comparisons) -> Comparisons:
        return Comparisons(*(torch.cat([mine, theirs]) for mine, theirs in zip(self.tensors(), other.tensors())))

    def tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.features, self.true_returns, self.prob_first

    def state_dict(self) -> dict[str, Tensor]:
        return {field.name: getattr(self, field.name).clone() for field in dataclasses.fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> Comparisons:
        return cls(**{field.name: state[field.name].clone() for field in dataclasses.fields(cls)})


@dataclasses.dataclass
class SegmentPairs:
    """Pairs of segments cut from one rollout, before anyone has compared them."""

    first: Tensor  # (K, 2): (environment, start step) of each pair's first segment
    second: Tensor  # (K, 2): the same of its second segment
    features: Tensor  # (K, 2, L, F): reward-model inputs of both segments
    true_returns: Tensor  # (K, 2): the environment's return of both (the synthetic labeller's basis; diagnostics)

    def __len__(self) -> int:
        return len(self.first)

    def labelled(self, prob_first: Tensor, picked: Tensor | None = None) -> Comparisons:
        """The pairs `picked` (all of them if None), in that order, with their labels P(first preferred)."""
        if picked is None:
            return Comparisons(self.features, self.true_returns, prob_first)
        return Comparisons(self.features[picked], self.true_returns[picked], prob_first)


def segment_pairs(features: Tensor, true_rewards: Tensor, episode_end: Tensor, count: int, length: int) -> SegmentPairs:
    """`count` pairs of segments of a rollout (features (N, T, F), rewards and ends (N, T)).

    Fewer (none) where the rollout holds fewer than two segments inside one episode.
    """
    starts = segment_starts(episode_end, length)
    if count <= 0 or len(starts) < 2:
        none = torch.zeros(0, 2, dtype=torch.long)
        return SegmentPairs(none, none, torch.zeros(0, 2, length, features.shape[-1]), torch.zeros(0, 2))
    first, second = sample_pairs(starts, count)
    pair_features = torch.stack([cut_segments(features, first, length), cut_segments(features, second, length)], 1)
    returns = torch.stack([cut_segments(true_rewards, s, length).sum(-1) for s in (first, second)], 1)
    return SegmentPairs(first, second, pair_features, returns)


def label_pairs(
    features: Tensor, true_rewards: Tensor, episode_end: Tensor, count: int, config: RewardConfig
) -> Comparisons:
    """`count` pairs of segments of a rollout (`segment_pairs`), labelled by the synthetic labeller."""
    pairs = segment_pairs(features, true_rewards, episode_end, count, config.segment_steps)
    if not len(pairs):
        return pairs.labelled(torch.zeros(0))
    returns = pairs.true_returns
    return pairs.labelled(synthetic_preferences(returns[:, 0], returns[:, 1], config.temperature))


class PeopleLabeller(Protocol):
    """People's answers (`rlhfkit.gym.people`): (indices of the pairs judged, their P(first preferred))."""

    def label(self, update: int, pairs: SegmentPairs, actions: Tensor, start: ResumePoint) -> tuple[Tensor, Tensor]: ...


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


def refuse_another_reward_kind(kind: str, tensors: dict[str, Any]) -> None:
    """UserError where --resume would switch a run between the environment's reward and a learned one."""
    trained = "preferences" if "reward_model" in tensors else "environment"
    if trained != kind:
        raise UserError(
            f"--resume: the run was trained with reward.kind={trained}; "
            f"reward.kind={kind} needs a new run (another --out)"
        )


class PreferenceReward:
    """The comparisons, the reward ensemble, its optimiser and its output statistics: a run's preference state."""

    def __init__(self, config: RewardConfig, spec: EnvSpec, total_updates: int, people: PeopleLabeller | None = None):
        if config.labeller == "server" and people is None:
            raise UserError(
                "reward.labeller=server: pass people=connect_people(...) (rlhfkit.gym.people); the CLI connects "
                "reward.server with --token"
            )
        self.config, self.spec, self.total_updates, self.people = config, spec, total_updates, people
        feature_dim = spec.obs_dim + spec.action_dim
        self.ensemble = RewardEnsemble(feature_dim, config.hidden_sizes, config.ensemble)
        self.optimizer = torch.optim.Adam(self.ensemble.parameters(), lr=config.learning_rate)
        self.comparisons = Comparisons.empty(config.segment_steps, feature_dim)
        self.reward_stats = RunningMeanStd(())

    @torch.no_grad()
    def predict(self, features: Tensor) -> Tensor:
        """The ensemble's mean reward (...,) for features (..., F), before standardising."""
        return self.ensemble(features).mean(0)

    def labels_due(self, update: int) -> int:
        """Labels to ask for in `update` (1-based): those due by its end that have not arrived yet."""
        return max(0, comparisons_due(update, self.total_updates, self.config) - len(self.comparisons))

    def asks_people(self, update: int) -> bool:
        """Whether people label segments of `update`'s rollout (the trainer then keeps where the rollout starts)."""
        return self.people is not None and self.labels_due(update) > 0

    def relabel(self, rollout: Rollout, update: int, start: ResumePoint | None = None) -> dict[str, Any]:
        """Label what is due for `update` (1-based), refit, and put the predicted rewards into `rollout`.

        start: where the rollout began, when people label (`asks_people`): their segments are replayed from it.
        """
        features = reward_features(rollout.observations, rollout.actions, self.spec.action_space)
        true_rewards = rollout.rewards
        new = self.new_labels(rollout, features, update, start)
        metrics: dict[str, Any] = {"reward/new_comparisons": len(new), "reward/new_accuracy": None}
        if len(new):
            # how well the model fitted so far predicts labels it has not seen
            predicted_new = self.predict(new.features).sum(-1)  # (K, 2)
            metrics["reward/new_accuracy"] = agreement(predicted_new[:, 0], predicted_new[:, 1], new.prob_first)
            self.comparisons = self.comparisons.extend(new)
        metrics["reward/loss"] = None
        if len(self.comparisons):
            config = self.config
            metrics["reward/loss"] = fit_reward_model(
                self.ensemble, self.optimizer, self.comparisons, config.train_steps, config.batch_size
            )
        predicted = self.predict(features)  # (N, T)
        self.reward_stats.update(predicted)
        rollout.rewards = ((predicted - self.reward_stats.mean) / self.reward_stats.std).float()
        return {
            **metrics,
            "reward/comparisons": len(self.comparisons),
            "reward/true_correlation": correlation(predicted, true_rewards),
        }

    def new_labels(self, rollout: Rollout, features: Tensor, update: int, start: ResumePoint | None) -> Comparisons:
        """The labels due for `update` on segments of its rollout: the synthetic labeller's, or people's."""
        wanted = self.labels_due(update)
        if self.people is None:
            return label_pairs(features, rollout.rewards, rollout.episode_end, wanted, self.config)
        pairs = segment_pairs(features, rollout.rewards, rollout.episode_end, wanted, self.config.segment_steps)
        if not len(pairs):
            return pairs.labelled(torch.zeros(0))
        assert start is not None, "people see segments replayed from where the rollout started (`asks_people`)"
        picked, prob_first = self.people.label(update, pairs, rollout.actions, start)
        return pairs.labelled(prob_first, picked)

    def save(self, directory: Path) -> None:
        """reward_model.safetensors: the ensemble that the final policy was trained on (`RewardEnsemble` loads it)."""
        save_file(self.ensemble.state_dict(), str(directory / REWARD_MODEL_FILE))

    def checkpoint_state(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        """(tensors: the ensemble, the comparisons, the output statistics; state: the ensemble's optimiser)."""
        tensors = {
            "reward_model": {k: v.clone() for k, v in self.ensemble.state_dict().items()},
            "comparisons": self.comparisons.state_dict(),
            "reward_stats": self.reward_stats.state_dict(),
        }
        return tensors, {"reward_optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, tensors: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        self.ensemble.load_state_dict(tensors["reward_model"])
        self.comparisons = Comparisons.from_state_dict(tensors["comparisons"])
        self.reward_stats.load_state_dict(tensors["reward_stats"])
        self.optimizer.load_state_dict(state["reward_optimizer"])
