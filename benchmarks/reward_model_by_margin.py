"""A reward model's agreement with VADER on held-out answers, split by how far apart VADER puts the pair.

    .venv/bin/python benchmarks/reward_model_by_margin.py RM_DIR CANDIDATES.jsonl

RM_DIR is a reward model's final/; CANDIDATES.jsonl holds prompts with "responses" it never trained
on (e.g. the demo's 2-split/heldout.jsonl). Prints the Spearman correlation of the reward with
VADER's compound score over all answers, and pair accuracy (pairs of one prompt, VADER ties left
out) by VADER gap: < 0.2, 0.2-0.5, >= 0.5.
"""

import argparse

import torch

from rlhfkit.data.collate import tokenize_prompt_response
from rlhfkit.models import ScalarHeadModel, load_tokenizer
from rlhfkit.rewards import score_items, sentiment_reward
from rlhfkit.tracking import read_jsonl


def ranks(values: torch.Tensor) -> torch.Tensor:
    return values.argsort().argsort().float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reward_model")
    parser.add_argument("candidates")
    args = parser.parse_args()
    model, tokenizer = ScalarHeadModel.load(args.reward_model).eval(), load_tokenizer(args.reward_model)
    records = read_jsonl(args.candidates)
    answers = [(i, record, response) for i, record in enumerate(records) for response in record["responses"]]
    items = [tokenize_prompt_response(tokenizer, record, response, 256) for _, record, response in answers]
    with torch.no_grad():
        reward = torch.cat(
            [score_items(model, items[s : s + 16], tokenizer.pad_token_id, "float32") for s in range(0, len(items), 16)]
        )
    gold = torch.tensor(
        sentiment_reward()([], [response for _, _, response in answers], [record for _, record, _ in answers])
    )
    spearman = torch.corrcoef(torch.stack([ranks(reward), ranks(gold)]))[0, 1]
    print(f"{len(answers)} answers to {len(records)} prompts; Spearman(reward, VADER) {spearman:.3f}")
    buckets: dict[str, list[bool]] = {"< 0.2": [], "0.2-0.5": [], ">= 0.5": []}
    for a in range(len(answers)):
        for b in range(a + 1, len(answers)):
            if answers[a][0] != answers[b][0] or gold[a] == gold[b]:
                continue
            gap = abs(gold[a] - gold[b]).item()
            key = "< 0.2" if gap < 0.2 else "0.2-0.5" if gap < 0.5 else ">= 0.5"
            buckets[key].append(bool((reward[a] - reward[b]) * (gold[a] - gold[b]) > 0))
    for key, right in buckets.items():
        print(
            f"VADER gap {key:>8}: {len(right):4d} pairs, reward model agrees on {sum(right) / max(len(right), 1):.3f}"
        )


if __name__ == "__main__":
    main()
