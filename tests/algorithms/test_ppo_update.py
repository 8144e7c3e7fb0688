"""The PPO update driver: minibatch order, per-minibatch early stopping, mean statistics."""

import pytest
import torch

from rlhfkit.algorithms import ppo_epochs


def recording_step(seen: list[list[int]], kls: list[float] | None = None):
    """A minibatch step that records its indices and reports the next approx-KL from `kls` (0 if none)."""

    def step(indices: torch.Tensor) -> dict[str, float]:
        seen.append(indices.tolist())
        kl = kls[len(seen) - 1] if kls else 0.0
        return {"policy/approx_kl": kl, "policy/loss": float(len(seen))}

    return step


def test_each_epoch_is_a_fresh_seeded_permutation_in_minibatch_chunks():
    seen: list[list[int]] = []
    ppo_epochs(6, 4, 2, recording_step(seen), generator=torch.Generator().manual_seed(0))
    reference = torch.Generator().manual_seed(0)
    first, second = torch.randperm(6, generator=reference).tolist(), torch.randperm(6, generator=reference).tolist()
    assert seen == [first[:4], first[4:], second[:4], second[4:]]
    assert sorted(first) == sorted(second) == list(range(6))
    assert first != second  # a new shuffle each epoch


def test_without_generator_the_global_rng_decides_the_order():
    seen: list[list[int]] = []
    torch.manual_seed(3)
    ppo_epochs(5, 5, 1, recording_step(seen))
    torch.manual_seed(3)
    assert seen == [torch.randperm(5).tolist()]


def test_means_over_minibatches_and_counters():
    seen: list[list[int]] = []
    stats = ppo_epochs(8, 2, 3, recording_step(seen, kls=[0.1] * 12), target_kl=0.0)
    assert len(seen) == 12  # 3 epochs x 4 minibatches, no early stop with target_kl 0 even at KL 0.1
    assert stats["policy/loss"] == pytest.approx(6.5)  # mean of 1..12
    assert stats["policy/approx_kl"] == pytest.approx(0.1)
    assert stats["policy/early_stop"] == 0.0
    assert stats["ppo/epochs"] == 3.0


def test_stops_right_after_the_first_minibatch_over_target_kl():
    seen: list[list[int]] = []
    # 4 minibatches per epoch; the 6th minibatch (epoch 2, second) is the first above 0.05
    kls = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.0, 0.0]
    stats = ppo_epochs(8, 2, 4, recording_step(seen, kls), target_kl=0.05)
    assert len(seen) == 6  # the offending step ran (its optimiser step is kept), nothing after it
    assert stats["policy/early_stop"] == 1.0
    assert stats["ppo/epochs"] == 2.0
    assert stats["policy/approx_kl"] == pytest.approx(sum(kls[:6]) / 6)  # 0.035
    assert stats["policy/loss"] == pytest.approx(3.5)  # mean of 1..6


def test_kl_equal_to_the_target_does_not_stop():
    seen: list[list[int]] = []
    stats = ppo_epochs(4, 2, 2, recording_step(seen, [0.05] * 4), target_kl=0.05)
    assert len(seen) == 4 and stats["policy/early_stop"] == 0.0


def test_rejects_sizes_below_one():
    with pytest.raises(ValueError, match="mini_batch_size"):
        ppo_epochs(4, 0, 1, recording_step([]))
