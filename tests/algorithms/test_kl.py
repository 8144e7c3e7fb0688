import math

import pytest
import torch

from rlhfkit.algorithms import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_shaped_rewards,
)


def test_estimators_by_hand():
    # pi(x) = 0.5, ref(x) = 0.25: log(pi/ref) = ln 2 = 0.6931472
    # k1 = ln 2 ; k2 = (ln 2)^2 / 2 = 0.2402265 ; k3 = ref/pi - 1 - ln(ref/pi) = 0.5 - 1 + ln 2 = 0.1931472
    logprobs = torch.tensor([math.log(0.5)])
    ref_logprobs = torch.tensor([math.log(0.25)])
    assert kl_k1(logprobs, ref_logprobs).item() == pytest.approx(0.6931472, abs=1e-6)
    assert kl_k2(logprobs, ref_logprobs).item() == pytest.approx(0.2402265, abs=1e-6)
    assert kl_k3(logprobs, ref_logprobs).item() == pytest.approx(0.1931472, abs=1e-6)
    # swapped: log(pi/ref) = -ln 2 ; k3 = 2 - 1 - ln 2 = 0.3068528
    assert kl_k1(ref_logprobs, logprobs).item() == pytest.approx(-0.6931472, abs=1e-6)
    assert kl_k3(ref_logprobs, logprobs).item() == pytest.approx(0.3068528, abs=1e-6)
    assert KL_ESTIMATORS == {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def test_k3_is_never_negative():
    g = torch.Generator().manual_seed(7)
    logprobs = torch.randn(1000, generator=g) * 3.0
    ref_logprobs = torch.randn(1000, generator=g) * 3.0
    assert (kl_k3(logprobs, ref_logprobs) >= 0).all()
    assert (kl_k1(logprobs, ref_logprobs) < 0).any()  # unlike k1


def test_k1_and_k3_sample_means_approach_true_kl():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.3, 0.5])
    # KL(p || q) = 0.5 ln 2.5 + 0.3 ln 1 + 0.2 ln 0.4 = 0.3 ln 2.5 = 0.2748872
    true_kl = 0.3 * math.log(2.5)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(8))
    logprobs, ref_logprobs = p.log()[samples], q.log()[samples]
    assert kl_k1(logprobs, ref_logprobs).mean().item() == pytest.approx(true_kl, abs=0.01)
    assert kl_k3(logprobs, ref_logprobs).mean().item() == pytest.approx(true_kl, abs=0.01)


def test_kl_shaped_rewards_by_hand():
    scores = torch.tensor([2.0, -1.0, 3.0])
    ref_logprobs = torch.full((3, 4), -2.0)
    logprobs = ref_logprobs + torch.tensor([[0.5, -0.2, 0.1, 0.3], [1.0, 0.4, 9.0, 9.0], [7.0, 7.0, 7.0, 7.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [False, False, False, False]])
    # beta = 0.1, k1:
    #   row 0: -0.1 * [0.5, -0.2, 0.1, 0.3] + score 2 on t=3 -> [-0.05, 0.02, -0.01, 1.97]
    #   row 1: -0.1 * [1.0, 0.4] then padding; score -1 on t=1 -> [-0.1, -1.04, 0, 0]
    #   row 2: empty response -> nothing
    rewards, kl = kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.05, 0.02, -0.01, 1.97], [-0.1, -1.04, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        kl, torch.tensor([[0.5, -0.2, 0.1, 0.3], [1.0, 0.4, 0.0, 0.0], [0.0] * 4]), rtol=0, atol=1e-6
    )


def test_kl_shaped_rewards_with_k3():
    # one token, pi = 0.5, ref = 0.25: k3 = 0.1931472 ; reward = -0.5 * k3 + 1
    rewards, kl = kl_shaped_rewards(
        torch.tensor([1.0]),
        torch.tensor([[math.log(0.5)]]),
        torch.tensor([[math.log(0.25)]]),
        torch.tensor([[True]]),
        0.5,
        kl_k3,
    )
    assert kl.item() == pytest.approx(0.1931472, abs=1e-6)
    assert rewards.item() == pytest.approx(1.0 - 0.5 * 0.1931472, abs=1e-6)


def test_adaptive_controller_two_updates_by_hand():
    controller = AdaptiveKLController(init_value=0.1, target=6.0, horizon=10_000)
    # 1) KL 8: 8/6 - 1 = 0.333 clipped to 0.2 ; value = 0.1 * (1 + 0.2 * 256/10000) = 0.1 * 1.00512 = 0.100512
    controller.update(current_kl=8.0, n_steps=256)
    assert controller.value == pytest.approx(0.100512, rel=1e-12)
    # 2) KL 5.4: 5.4/6 - 1 = -0.1 ; value = 0.100512 * (1 - 0.1 * 512/10000) = 0.100512 * 0.99488 = 0.09999737856
    controller.update(current_kl=torch.tensor(5.4), n_steps=512)
    assert controller.value == pytest.approx(0.09999737856, rel=1e-6)
    # a huge undershoot is clipped at -0.2: value * (1 - 0.2 * 10000/10000) = 0.8 * value
    before = controller.value
    controller.update(current_kl=0.0, n_steps=10_000)
    assert controller.value == pytest.approx(0.8 * before, rel=1e-12)
    restored = AdaptiveKLController(init_value=1.0, target=6.0, horizon=10_000)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == controller.value


def test_fixed_controller_does_not_move():
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=1000)
    assert controller.value == 0.05
    restored = FixedKLController(1.0)
    restored.load_state_dict(controller.state_dict())
    assert restored.value == 0.05
