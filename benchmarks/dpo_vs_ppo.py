"""DPO on sentiment-judge comparisons, on the embedded model: does it raise the gold score, at what KL?

    1 candidates   two sampled answers of the embedded model per training prompt
    2 comparisons  the sentiment judge (VADER) picks the more positive one (ties dropped)
    3 dpo          `rlhfkit dpo` on those comparisons (float32, the time of this step is reported)
    4 evaluate     the base and the DPO policy answer the held-out prompts (never trained on):
                   gold VADER score (mean ± standard error) and KL(π‖π_base) = mean over answers
                   of Σ_t log π(y_t) - log π_base(y_t)
    5 ppo          optionally, the same evaluation of a PPO policy (--ppo-final DIR, e.g. the demo's),
                   so both are measured by one yardstick

Usage:
    python benchmarks/dpo_vs_ppo.py --out runs/bench-dpo [--steps 40] [--ppo-final runs/ppo/final]

Prints one JSON line per policy and writes OUT/results.json. The base model's held-out
answers are kept in OUT/heldout_candidates.jsonl (two per prompt), which
benchmarks/ai_judge_agreement.py can reuse.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from rlhfkit.assets import EVAL_PROMPTS, PROMPTS
from rlhfkit.cli import main as rlhfkit
from rlhfkit.config import EMBEDDED_MODEL, GenerationConfig
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.rewards import sentiment_reward
from rlhfkit.rollout.generation import decode_responses, sample
from rlhfkit.training.logprobs import sequence_logprobs

DTYPE = "float32"  # bf16 autocast is slower than fp32 on CPUs without AMX


def answers(model, tokenizer, records, per_prompt: int, generation: GenerationConfig, batch_size: int):
    """[(record, samples batch)] with `per_prompt` answers per record, sampled in batches."""
    texts = [format_prompt(tokenizer, r) for r in records for _ in range(per_prompt)]
    expanded = [r for r in records for _ in range(per_prompt)]
    return [
        (expanded[s : s + batch_size], sample(model, tokenizer, texts[s : s + batch_size], generation, DTYPE))
        for s in range(0, len(texts), batch_size)
    ]


@torch.no_grad()
def evaluate(policy, base, tokenizer, records, per_prompt, generation, batch_size, gold) -> tuple[dict, list[dict]]:
    """Gold score and KL(policy‖base) of the policy's answers to `records`; also the answers."""
    scores, kls, rows = [], [], []
    for batch_records, samples in answers(policy, tokenizer, records, per_prompt, generation, batch_size):
        texts = decode_responses(tokenizer, samples)
        scores += gold([prompt_text(r) for r in batch_records], texts, batch_records)
        response_mask = torch.cat([torch.zeros_like(samples.query_mask), samples.response_mask], dim=1)
        batch = (samples.input_ids, samples.attention_mask, response_mask)
        kls += (sequence_logprobs(policy, *batch, dtype=DTYPE) - sequence_logprobs(base, *batch, dtype=DTYPE)).tolist()
        rows += [{"prompt": prompt_text(r), "response": t} for r, t in zip(batch_records, texts)]
    n = len(scores)
    mean = sum(scores) / n
    stderr = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n)
    return {"gold_mean": mean, "gold_stderr": stderr, "kl_mean": sum(kls) / n, "answers": n}, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench-dpo")
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--train-prompts", type=int, default=96, help="training prompts (two candidates each)")
    parser.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts")
    parser.add_argument("--per-prompt", type=int, default=2, help="held-out answers per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--ppo-final", default="", help="a PPO policy directory (final/) to evaluate the same way")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens)
    gold = sentiment_reward()
    tokenizer = load_tokenizer(args.model)
    base = load_causal_lm(args.model, tokenizer).eval()
    results: dict = {"settings": vars(args)}

    # 1-2. candidates and sentiment-judge comparisons
    comparisons_path = out / "comparisons.jsonl"
    started = time.time()
    if not comparisons_path.exists():
        records = load_records(PROMPTS, "prompts", limit=args.train_prompts)
        rows = []
        with torch.no_grad():
            for batch_records, samples in answers(base, tokenizer, records, 2, generation, 32):
                texts = decode_responses(tokenizer, samples)
                scores = gold([], texts, batch_records)
                for i in range(0, len(texts), 2):
                    (a, sa), (b, sb) = (texts[i], scores[i]), (texts[i + 1], scores[i + 1])
                    if sa != sb and a.strip() and b.strip() and a != b:
                        chosen, rejected = (a, b) if sa > sb else (b, a)
                        rows.append(
                            {
                                "prompt": batch_records[i]["prompt"],
                                "chosen": chosen,
                                "rejected": rejected,
                                "margin": abs(sa - sb),
                            }
                        )
        comparisons_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results["comparisons"] = sum(1 for _ in comparisons_path.open())
    results["candidates_s"] = time.time() - started

    # 3. DPO
    dpo_out = out / "dpo"
    started = time.time()
    if not (dpo_out / "final").exists():
        sets = [
            f"model.name={args.model}",
            f"model.dtype={DTYPE}",
            f"data.train={comparisons_path}",
            f"train.steps={args.steps}",
            f"train.batch_size={args.batch_size}",
            f"train.beta={args.beta}",
            f"optim.learning_rate={args.learning_rate}",
            f"train.eval_every={max(1, args.steps // 4)}",
            "train.kl_prompts=16",
            f"generation.max_new_tokens={args.max_new_tokens}",
            "train.score_answers=true",
            "reward.kind=sentiment",
            f"seed={args.seed}",
        ]
        code = rlhfkit(["dpo", "--out", str(dpo_out), *sum((["--set", s] for s in sets), [])])
        assert code == 0, f"rlhfkit dpo exited {code}"
    results["dpo_wall_s"] = json.loads((dpo_out / "summary.json").read_text())["wall_s"]
    results["dpo_command_s"] = time.time() - started

    # 4-5. held-out evaluation of each policy with one yardstick
    heldout = load_records(EVAL_PROMPTS, "prompts", limit=args.eval_prompts)
    policies = {"base": base, "dpo": load_causal_lm(str(dpo_out / "final"), tokenizer).eval()}
    if args.ppo_final:
        policies["ppo"] = load_causal_lm(args.ppo_final, tokenizer).eval()
    for name, policy in policies.items():
        torch.manual_seed(args.seed + 1)
        metrics, rows = evaluate(policy, base, tokenizer, heldout, args.per_prompt, generation, 32, gold)
        results[name] = metrics
        print(json.dumps({"policy": name, **metrics}), flush=True)
        if name == "base":
            candidates = [
                {"prompt": rows[i]["prompt"], "responses": [rows[i]["response"], rows[i + 1]["response"]]}
                for i in range(0, len(rows) - 1, args.per_prompt)
            ]
            (out / "heldout_candidates.jsonl").write_text("".join(json.dumps(c) + "\n" for c in candidates))
        (out / f"heldout_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}))


if __name__ == "__main__":
    main()
