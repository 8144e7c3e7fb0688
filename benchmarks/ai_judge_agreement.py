"""How often does the AI judge (the embedded model) agree with the sentiment judge on held-out pairs?

    1 pairs      two answers of the embedded model per held-out prompt (or --candidates FILE, e.g.
                 OUT/heldout_candidates.jsonl of benchmarks/dpo_vs_ppo.py); pairs VADER scores equal are dropped
    2 gold       the sentiment judge prefers the answer with the higher VADER compound score
    3 AI judge   "(A) ... (B) ... Which response is more <preference>? Answer: (" read as P(A) vs P(B),
                 asked in both orders; the principle is --principle (default: positive, the one the
                 sentiment judge measures) or "sampled" (one principle of the constitution per pair)
    4 report     agreement with the gold label of: order 1 alone (x shown as A), order 2 alone
                 (x shown as B), and the average of both; how often the option shown first wins
                 (position bias, 0.5 = none); how often the two orders agree

Usage:
    python benchmarks/ai_judge_agreement.py --out runs/bench-ai-judge [--candidates FILE] \
        [--principle positive|sampled|NAME]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from rlhfkit.assets import CONSTITUTION, EVAL_PROMPTS
from rlhfkit.config import EMBEDDED_MODEL, GenerationConfig
from rlhfkit.data import format_prompt, load_records
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.rewards import sentiment_reward
from rlhfkit.rewards.ai_judge import judge_pairs, load_constitution
from rlhfkit.rollout.generation import decode_responses, sample

DTYPE = "float32"


def heldout_candidates(model, tokenizer, prompts: int, max_new_tokens: int) -> list[dict]:
    records = load_records(EVAL_PROMPTS, "prompts", limit=prompts)
    texts = [format_prompt(tokenizer, r) for r in records for _ in range(2)]
    responses: list[str] = []
    for start in range(0, len(texts), 32):
        responses += decode_responses(
            tokenizer,
            sample(model, tokenizer, texts[start : start + 32], GenerationConfig(max_new_tokens=max_new_tokens), DTYPE),
        )
    return [{"prompt": r["prompt"], "responses": responses[2 * i : 2 * i + 2]} for i, r in enumerate(records)]


def binomial_stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-ai-judge")
    parser.add_argument("--judge", default=EMBEDDED_MODEL, help="the judge model")
    parser.add_argument(
        "--candidates", default="", help="candidates (prompt + two responses); empty: sample them from the judge model"
    )
    parser.add_argument(
        "--prompts", type=int, default=64, help="held-out prompts to sample pairs for (without --candidates)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument(
        "--principle", default="positive", help="a principle name of the shipped constitution, or 'sampled'"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.judge)
    model = load_causal_lm(args.judge, tokenizer).eval()

    # 1-2. pairs and the sentiment judge's verdicts
    candidates = (
        load_records(args.candidates, "candidates")
        if args.candidates
        else heldout_candidates(model, tokenizer, args.prompts, args.max_new_tokens)
    )
    gold = sentiment_reward()
    pairs = []
    for record in candidates:
        x, y = record["responses"][:2]
        sx, sy = gold([], [x, y], [record, record])
        if sx != sy and x != y:
            pairs.append((record, x, y, sx > sy))

    # 3. the AI judge, both orders
    principles = {p.name: p for p in load_constitution(CONSTITUTION)}
    rng = random.Random(args.seed)
    if args.principle == "sampled":
        preferences = [rng.choice(list(principles.values())).preference for _ in pairs]
    else:
        preferences = [principles[args.principle].preference] * len(pairs)
    started = time.time()
    with torch.no_grad():
        verdict = judge_pairs(
            model,
            tokenizer,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            [p[2] for p in pairs],
            preferences,
            ["A", "B"],
            DTYPE,
            8,
        )
    judge_s = time.time() - started

    # 4. agreement
    x_better = torch.tensor([p[3] for p in pairs])
    n = len(pairs)

    def agreement(prob_x: torch.Tensor) -> float:
        return ((prob_x >= 0.5) == x_better).float().mean().item()

    first_shown_wins = (
        ((verdict.shown_first >= 0.5).float().sum() + (verdict.shown_second < 0.5).float().sum()) / (2 * n)
    ).item()
    results = {
        "judge": args.judge,
        "principle": args.principle,
        "pairs": n,
        "gold_prefers_first_listed": x_better.float().mean().item(),  # the base rate that a one-sided judge scores
        "agreement_both_orders": agreement(verdict.prob_first),
        "agreement_order_x_first": agreement(verdict.shown_first),
        "agreement_order_x_second": agreement(verdict.shown_second),
        "stderr_both_orders": binomial_stderr(agreement(verdict.prob_first), n),
        "first_shown_wins": first_shown_wins,
        "orders_agree": ((verdict.shown_first >= 0.5) == (verdict.shown_second >= 0.5)).float().mean().item(),
        "mean_confidence": (verdict.prob_first - 0.5).abs().mean().item() + 0.5,
        "judge_s": judge_s,
    }
    rows = [
        {
            "prompt": r["prompt"],
            "x": x,
            "y": y,
            "vader_prefers_x": bool(b),
            "p_x_shown_first": float(a1),
            "p_x_shown_second": float(a2),
        }
        for (r, x, y, b), a1, a2 in zip(pairs, verdict.shown_first, verdict.shown_second)
    ]
    (out / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
