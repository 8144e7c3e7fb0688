import math

import pytest
import torch

from rlhfkit.algorithms import explained_variance, masked_mean, masked_var, whiten


def test_masked_mean_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 6.0, float("nan"), float("inf")]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    # all: (1 + 2 + 3 + 4 + 6) / 5 = 3.2 ; per row: 6/3 = 2, 10/2 = 5
    assert masked_mean(x, mask).item() == pytest.approx(3.2)
    assert masked_mean(x, mask, dim=1).tolist() == pytest.approx([2.0, 5.0])
    assert masked_mean(x[0], None).item() == pytest.approx(26.5)


def test_masked_mean_float_mask_and_zero_gradient_on_padding():
    x = torch.tensor([1.0, 2.0, float("inf")], requires_grad=True)
    masked_mean(x, torch.tensor([1.0, 1.0, 0.0])).backward()
    assert x.grad.tolist() == [0.5, 0.5, 0.0]


def test_masked_var_matches_torch_var_on_the_selection():
    x = torch.tensor([1.0, 2.0, 4.0, 7.0, -50.0])
    mask = torch.tensor([True, True, True, True, False])
    # mean 3.5; squared deviations 6.25 + 2.25 + 0.25 + 12.25 = 21 ; unbiased 21/3 = 7, biased 21/4 = 5.25
    assert masked_var(x, mask).item() == pytest.approx(7.0)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(5.25)
    assert masked_var(x[:4], None).item() == pytest.approx(torch.var(x[:4]).item())


def test_whiten_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    # mean 2, unbiased var (1 + 0 + 1) / 2 = 1 -> (x - 2) / 1 ; the padded slot is 0
    assert whiten(x, mask).tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    assert whiten(x, mask, keep_mean=True).tolist()[0] == pytest.approx([1.0, 2.0, 3.0, 0.0], abs=1e-6)


def test_whiten_random_has_mean_zero_std_one_over_the_mask():
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 5.0 * torch.randn(3, 7, generator=g)
    mask = torch.rand(3, 7, generator=g) > 0.3
    out = whiten(x, mask)
    real = out[mask]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.std().item() == pytest.approx(1.0, abs=1e-5)
    assert (out[~mask] == 0).all()
    kept = whiten(x, mask, keep_mean=True)[mask]
    assert kept.mean().item() == pytest.approx(x[mask].mean().item(), abs=1e-5)
    assert kept.std().item() == pytest.approx(1.0, abs=1e-5)
    # bfloat16 input is whitened in float32, not in bfloat16
    torch.testing.assert_close(whiten(x.bfloat16(), mask), whiten(x.bfloat16().float(), mask))
    unmasked = whiten(x)
    assert unmasked.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert unmasked.std().item() == pytest.approx(1.0, abs=1e-5)


def test_whiten_single_element_is_zero_not_nan():
    assert whiten(torch.tensor([5.0, 9.0]), torch.tensor([True, False])).tolist() == [0.0, 0.0]


def test_explained_variance_by_hand():
    values = torch.tensor([1.0, 2.0, 3.0, 42.0])
    returns = torch.tensor([1.0, 3.0, 5.0, -7.0])
    mask = torch.tensor([True, True, True, False])
    # residual [0, 1, 2]: var 1 ; returns [1, 3, 5]: var 4 -> 1 - 1/4
    assert explained_variance(values, returns, mask).item() == pytest.approx(0.75)
    assert explained_variance(returns, returns).item() == pytest.approx(1.0)
    assert math.isnan(explained_variance(values, torch.full((4,), 2.0)).item())
