"""RunningMeanStd: Chan et al.'s merge against hand-worked moments of the concatenated samples."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.algorithms import RunningMeanStd
from rlhfkit.algorithms.running import merge_moments


def test_merging_two_batches_gives_the_moments_of_their_concatenation():
    # a = [1, 3]: mean 2, var 1.  b = [5, 7, 9]: mean 7, var 8/3.
    # a + b = [1, 3, 5, 7, 9]: mean 5, var (16 + 4 + 0 + 4 + 16) / 5 = 8.
    mean, var, count = merge_moments(torch.tensor(2.0), torch.tensor(1.0), 2, torch.tensor(7.0), torch.tensor(8 / 3), 3)
    assert count == 5
    assert mean.item() == pytest.approx(5.0, abs=1e-12)
    assert var.item() == pytest.approx(8.0, abs=1e-12)


def test_batches_fed_one_by_one_equal_the_moments_of_everything():
    stats = RunningMeanStd((2,))
    stats.update(torch.tensor([[1.0, 10.0], [3.0, 10.0]]))
    stats.update(torch.tensor([[5.0, 0.0], [7.0, 0.0], [9.0, 0.0]]))
    # Column 0 is [1, 3, 5, 7, 9] (mean 5, var 8); column 1 is [10, 10, 0, 0, 0] (mean 4, var 24).
    assert stats.mean.tolist() == pytest.approx([5.0, 4.0], abs=1e-12)
    assert stats.var.tolist() == pytest.approx([8.0, 24.0], abs=1e-12)
    assert stats.count == 5
    assert stats.mean.dtype == torch.float64


def test_scalar_statistics_take_every_element_as_a_sample_and_the_first_batch_replaces_the_prior():
    stats = RunningMeanStd()
    stats.update(torch.tensor([[1.0, 3.0], [5.0, 7.0]], dtype=torch.float32))  # 4 samples: mean 4, var 5
    assert stats.mean.item() == pytest.approx(4.0, abs=1e-12) and stats.var.item() == pytest.approx(5.0, abs=1e-12)
    assert stats.std.item() == pytest.approx(math.sqrt(5.0 + 1e-8), abs=1e-12)


def test_a_prior_count_weighs_the_prior_of_mean_0_and_variance_1():
    stats = RunningMeanStd((), prior_count=1e-4)
    stats.update(torch.tensor([2.0]))
    # n' = 1 + 1e-4; mean = 2 / n'; var = (1 * 1e-4 + 0 * 1 + 2^2 * 1e-4 * 1 / n') / n'.
    n = 1 + 1e-4
    assert stats.mean.item() == pytest.approx(2 / n, rel=1e-12)
    assert stats.var.item() == pytest.approx((1e-4 + 4 * 1e-4 / n) / n, rel=1e-12)


def test_restored_statistics_continue_exactly():
    stats = RunningMeanStd((3,))
    stats.update(torch.randn(5, 3))
    copy = RunningMeanStd((3,))
    copy.load_state_dict(stats.state_dict())
    batch = torch.randn(4, 3)
    stats.update(batch)
    copy.update(batch)
    assert torch.equal(copy.mean, stats.mean) and torch.equal(copy.var, stats.var) and copy.count == stats.count
