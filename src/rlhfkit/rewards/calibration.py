"""How far a reward model's preference probabilities can be trusted: accuracy, margin and calibration.

Under the Bradley-Terry model a reward model predicts P(a beats b) = σ(r_a - r_b). Read as a
classifier of the held-out pairs, it is calibrated when, of the pairs it calls with confidence
0.8, it gets 80% right: the reliability diagram plots accuracy against confidence per bin, and the
expected calibration error (ECE, Guo et al. 2017) is their gap averaged over the pairs.

The scale of the rewards is calibrated too: a gain and a bias map the rewards of the reference
policy's responses to mean 0, std 1 (Ziegler et al. 2019; Stiennon et al. 2020), so that PPO's KL
coefficient means the same whatever the reward model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhfkit.algorithms import preference_accuracy
from rlhfkit.tracking import new_figure

Bins = list[dict[str, float]]


def calibration_bins(prob_winner: torch.Tensor, num_bins: int = 10) -> Bins:
    """Reliability of σ(r_a - r_b) as a classifier: confidence max(p, 1-p) in bins over [0.5, 1].

    prob_winner: (M,) predicted probability that the actual winner of each pair wins.
    Returns per non-empty bin {"confidence": mean confidence, "accuracy": share predicted right, "count"}.
    """
    confidence = torch.maximum(prob_winner, 1 - prob_winner)
    correct = (prob_winner > 0.5).float()
    index = ((confidence - 0.5) * 2 * num_bins).long().clamp(max=num_bins - 1)
    bins = []
    for b in range(num_bins):
        selected = index == b
        if selected.any():
            bins.append(
                {
                    "confidence": confidence[selected].mean().item(),
                    "accuracy": correct[selected].mean().item(),
                    "count": int(selected.sum()),
                }
            )
    return bins


def expected_calibration_error(bins: Bins) -> float:
    """ECE = Σ_b (n_b / N) |accuracy_b - confidence_b|."""
    total = sum(b["count"] for b in bins)
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins)


def pair_statistics(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[dict[str, float], Bins]:
    """Accuracy, mean margin r_w - r_l and ECE over M pairs (chosen, rejected: (M,) rewards); and the bins."""
    bins = calibration_bins(torch.sigmoid(chosen - rejected).float().cpu())
    statistics = {
        "accuracy": preference_accuracy(chosen, rejected).item(),
        "margin": (chosen - rejected).mean().item(),
        "ece": expected_calibration_error(bins),
        "pairs": len(chosen),
    }
    return statistics, bins


def plot_reliability(bins: Bins, out_png: Path) -> None:
    """The reliability diagram: held-out accuracy against confidence, beside the diagonal of perfect calibration."""
    fig, ax = new_figure(figsize=(4, 4))
    ax.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label="reward model")
    ax.set_xlabel("confidence max(σ(Δr), 1 - σ(Δr))")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("reward model reliability")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)


def reward_normalisation(raw: torch.Tensor) -> dict[str, float]:
    """Gain and bias with gain · r + bias of mean 0, std 1 over the (M,) raw reference rewards (gain 1 if std ≈ 0)."""
    mean, std = raw.mean().item(), raw.std().item()
    scale = std if std > 1e-6 else 1.0
    return {
        "gain": 1.0 / scale,
        "bias": -mean / scale,
        "reference_raw_mean": mean,
        "reference_raw_std": std,
        "reference_responses": raw.numel(),
    }
