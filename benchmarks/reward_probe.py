"""Linear probes on the frozen embedded model: where do its features hold the sentiment judge's preference?

A Bradley-Terry linear model r(x) = w·f(x) is fitted (L-BFGS, L2 penalty) on the training rankings'
pairs, with f(x) the hidden state of layer 10, 20 or 30 either at the last token (EOS) or averaged
over the response tokens, and its accuracy is measured on the held-out comparisons. No weight of the
backbone moves: this shows which reading of the hidden states a reward head can use at once.

    .venv/bin/python benchmarks/reward_probe.py --data runs/bench-rm2
        # --data: the output of benchmarks/reward_model.py
        # (label-train/rankings.jsonl, label-eval/comparisons.jsonl)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rlhfkit.algorithms import bradley_terry_loss, preference_accuracy
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.data.preferences import preference_pairs, responses_best_first
from rlhfkit.models import last_token_index, load_backbone, load_tokenizer, position_ids_from_mask
from rlhfkit.tracking import read_jsonl

LAYERS = (10, 20, 30)
PENALTIES = (1e-3, 1e-2, 1e-1)


@torch.no_grad()
def features(model, tokenizer, sequences: list[tuple[str, str]], batch_size: int = 16) -> dict[str, torch.Tensor]:
    """{"last10": (N, H), "mean10": (N, H), ...} for every (prompt, response)."""
    found: dict[str, list[torch.Tensor]] = {f"{reading}{layer}": [] for reading in ("last", "mean") for layer in LAYERS}
    for start in range(0, len(sequences), batch_size):
        items = [
            tokenize_prompt_response(tokenizer, {"prompt": p}, r, 256) for p, r in sequences[start : start + batch_size]
        ]
        ids, mask, response = pad_batch(items, tokenizer.pad_token_id)
        hidden = model(
            input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), output_hidden_states=True
        ).hidden_states
        last, weights = last_token_index(mask), response.float().unsqueeze(-1)
        for layer in LAYERS:
            found[f"last{layer}"].append(hidden[layer][torch.arange(len(items)), last])
            found[f"mean{layer}"].append((hidden[layer] * weights).sum(1) / weights.sum(1))
    return {name: torch.cat(chunks) for name, chunks in found.items()}


def fit_probe(x: torch.Tensor, pairs: torch.Tensor, penalty: float) -> torch.Tensor:
    """w minimising the Bradley-Terry loss -log σ(w·x_win − w·x_lose) + penalty·|w|²."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        scores = x @ w
        loss = bradley_terry_loss(scores[pairs[:, 0]], scores[pairs[:, 1]]).mean() + penalty * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def accuracy(scores: torch.Tensor, pairs: torch.Tensor) -> float:
    return preference_accuracy(scores[pairs[:, 0]], scores[pairs[:, 1]]).item()


def sequence_pairs(records: list[dict], kind: str, index: dict[tuple[str, str], int]) -> torch.Tensor:
    """(N, 2) (winner, loser) sequence indices of every pair the records assert."""
    pairs = []
    for record in records:
        responses = responses_best_first(record, kind)
        pairs += [
            (index[(record["prompt"], responses[winner])], index[(record["prompt"], responses[loser])])
            for winner, loser in preference_pairs(record, kind)
        ]
    return torch.tensor(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/bench-rm2")
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    args = parser.parse_args()
    data = Path(args.data)
    rankings = read_jsonl(data / "label-train" / "rankings.jsonl")
    comparisons = read_jsonl(data / "label-eval" / "comparisons.jsonl")

    labelled = [(rankings, "rankings"), (comparisons, "comparisons")]
    sequences = list(
        dict.fromkeys(
            (r["prompt"], x) for records, kind in labelled for r in records for x in responses_best_first(r, kind)
        )
    )
    index = {sequence: i for i, sequence in enumerate(sequences)}
    train_pairs, eval_pairs = (sequence_pairs(records, kind, index) for records, kind in labelled)

    tokenizer = load_tokenizer(args.model)
    model = load_backbone(args.model, tokenizer).eval()
    started = time.time()
    found = features(model, tokenizer, sequences)
    print(
        f"{len(sequences)} sequences, features in {time.time() - started:.0f} s; "
        f"{len(train_pairs)} training pairs (noisy ranking order), {len(eval_pairs)} held-out pairs"
    )
    print("| features | " + " | ".join(f"held-out acc (train acc), L2 {p:g}" for p in PENALTIES) + " |")
    print("| --- | " + " | ".join("---" for _ in PENALTIES) + " |")
    for name, x in found.items():
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
        cells = []
        for penalty in PENALTIES:
            scores = x @ fit_probe(x, train_pairs, penalty)
            cells.append(f"{accuracy(scores, eval_pairs):.3f} ({accuracy(scores, train_pairs):.3f})")
        print(f"| {name[:4]} of layer {name[4:]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
