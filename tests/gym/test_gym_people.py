"""People as the Gym preference labeller: segments replayed and rendered, the round's records, choices -> labels."""

from __future__ import annotations

import numpy as np
import torch

from rlhfkit.gym.envs import inspect_env
from rlhfkit.gym.people import preferences_from, render_segments, replay, round_records
from rlhfkit.gym.preferences import SegmentPairs
from rlhfkit.gym.rollout import EnvRunner

LENGTH = 4


class CoinPolicy:
    """Uniformly random CartPole actions from the torch generator (the value is not needed here)."""

    def act(self, observations, deterministic=False):
        n = len(observations)
        return torch.randint(2, (n,)), torch.zeros(n), torch.zeros(n)

    def value(self, observations):
        return torch.zeros(len(observations))


def cartpole_rollout(steps=40):
    """(the vector env pickled before the rollout, the rollout, the action space) of 2 CartPoles, seed 3."""
    torch.manual_seed(0)
    spec = inspect_env("CartPole-v1")
    runner = EnvRunner(spec, 2, 3, False, False, 0.99)
    start = runner.state_dict()["envs"]
    rollout, _ = runner.collect(CoinPolicy(), steps)
    runner.close()
    return start, rollout, spec.action_space


def test_the_replay_passes_through_the_rollouts_own_states_across_episode_ends():
    start, rollout, space = cartpole_rollout()
    assert rollout.episode_end.any()  # random CartPole episodes end within 40 steps: the replay crosses resets
    for t, envs in enumerate(replay(start, rollout.actions, space, 40)):
        states = np.stack([env.unwrapped.state for env in envs.envs]).astype(np.float32)
        assert np.array_equal(states, rollout.observations[:, t].numpy()), t  # CartPole observes its state


def test_each_segment_renders_as_its_frames_of_the_screen_size_and_shared_steps_share_frames():
    start, rollout, space = cartpole_rollout()
    starts = torch.tensor([[0, 3], [1, 0], [0, 5]])
    segments = dict(render_segments(start, rollout.actions, space, starts, LENGTH))
    assert sorted(segments) == [0, 1, 2]
    for frames in segments.values():
        assert len(frames) == LENGTH
        assert all(frame.shape == (400, 600, 3) and frame.dtype == np.uint8 for frame in frames)
        assert not np.array_equal(frames[0], frames[-1])  # the cart and pole move between steps
    # segment 0 shows steps 3-6 of environment 0, segment 2 steps 5-8: steps 5 and 6 are the same frames
    assert np.array_equal(segments[0][2], segments[2][0]) and np.array_equal(segments[0][3], segments[2][1])


def pairs_of(first, second):
    k = len(first)
    return SegmentPairs(torch.tensor(first), torch.tensor(second), torch.zeros(k, 2, LENGTH, 6), torch.zeros(k, 2))


def test_a_round_is_one_task_per_pair_with_two_captions_and_their_animations():
    pairs = pairs_of([[0, 3], [1, 10]], [[1, 0], [0, 12]])
    digests = [f"{i:064x}" for i in range(4)]
    records = round_records("Which clip balances the pole?", pairs, digests, LENGTH)
    assert records == [
        {
            "prompt": "Which clip balances the pole?",
            "responses": ["environment 0, steps 3-6", "environment 1, steps 0-3"],
            "media": digests[:2],
            "pair": 0,
        },
        {
            "prompt": "Which clip balances the pole?",
            "responses": ["environment 1, steps 10-13", "environment 0, steps 12-15"],
            "media": digests[2:],
            "pair": 1,
        },
    ]


def test_choices_become_the_synthetic_labellers_format_and_other_rounds_records_are_left_out():
    records = round_records("Q?", pairs_of([[0, 0], [0, 5], [1, 0]], [[1, 2], [1, 7], [0, 9]]), ["0" * 64] * 6, LENGTH)
    texts = [record["responses"] for record in records]

    def judged(pair, chosen, rejected, **extra):
        return {"prompt": "Q?", "chosen": chosen, "rejected": rejected, "meta": {"extra": {"pair": pair}}, **extra}

    comparisons = [
        judged(1, texts[1][1], texts[1][0]),  # B: the second segment of pair 1
        judged(0, texts[0][0], texts[0][1]),  # A
        judged(2, texts[2][0], texts[2][1], label=0.5),  # a tie
        judged(2, "environment 5, steps 0-3", texts[2][1]),  # not this round's pair 2
        judged(7, texts[0][0], texts[0][1]),  # no pair 7 in this round
        {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "Go.", "meta": {}},  # a text task
    ]
    picked, prob_first = preferences_from(comparisons, records)
    assert picked.tolist() == [1, 0, 2]
    assert prob_first.tolist() == [0.0, 1.0, 0.5]
