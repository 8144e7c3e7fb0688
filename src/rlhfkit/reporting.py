"""The demo's last two stages: the before/after evaluation on held-out prompts, and the report.

    5 evaluate   the reference and the tuned policy answer the same held-out prompts with the same
                 random numbers; the gold judge and the learned reward score both, and the KL of
                 each answer to the reference is measured: gold score, learned reward, KL, win rate
    6 report     report.md with the figures and side-by-side samples, summary.json, and three plots:
                 proxy and gold reward against PPO step, KL against step, gold against KL (where
                 over-optimisation of the proxy would show); the reward-hacking monitor's verdict on the
                 PPO stage (a stop or rollback, with its reason) and its over_optimisation.png

`rlhfkit demo` (recipes/demo.py) runs them after its training stages; they take plain values, not the
demo's config, so this module does not import the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import GenerationConfig
from rlhfkit.data import format_prompt, load_records, prompt_text
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.actor_critic import response_logprobs
from rlhfkit.rewards import RewardFn, checked_scores
from rlhfkit.rollout.engines import build_engine
from rlhfkit.rollout.experience import sequence_kl
from rlhfkit.rollout.generation import HF_ENGINE, GenerationEngine, decode_responses
from rlhfkit.runtime.precision import resolve_precision
from rlhfkit.tracking import new_figure, read_jsonl, write_json_atomic

# ---------------------------------------------------------------------------
# 5 evaluate
# ---------------------------------------------------------------------------


@torch.no_grad()
def answers_and_kl(
    model: torch.nn.Module,
    reference: torch.nn.Module,
    tokenizer: Any,
    texts: list[str],
    generation: GenerationConfig,
    dtype: str,
    engine: GenerationEngine = HF_ENGINE,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The model's answers to `texts` (sampled by `engine`), each answer's KL(π ‖ π_ref) summed over its
    tokens (B,), and its length (B,).

    The log-probs of both models are taken in one precision: the sampling pass's own where it
    decoded in `dtype`, else (and always with vLLM) a forward pass like the reference's.
    """
    samples = engine.sample(model, tokenizer, texts, generation, dtype, keep_scores=True)
    batch = (samples.input_ids, samples.attention_mask, samples.response_ids, generation.temperature, dtype)
    ref_logprobs, _ = response_logprobs(reference, *batch)
    logprobs = samples.logprobs if samples.logprobs is not None else response_logprobs(model, *batch)[0]
    mask = samples.response_mask
    kl = sequence_kl(logprobs.masked_fill(~mask, 0.0), ref_logprobs.masked_fill(~mask, 0.0), mask)
    return decode_responses(tokenizer, samples), kl, mask.sum(-1).float()


def evaluate_policies(
    reference_name: str,
    tuned_name: str,
    records: list[dict[str, Any]],
    judges: dict[str, RewardFn],
    generation: GenerationConfig,
    dtype: str,
    seed: int,
) -> dict[str, Any]:
    """Stage 5: `judges` is {"gold": the judge that stands in for people, "learned": the reward model}."""
    prompts = [prompt_text(r) for r in records]
    tokenizer = load_tokenizer(reference_name)
    reference = load_causal_lm(reference_name, tokenizer).eval()
    dtype = resolve_precision(dtype, reference, next(reference.parameters()).device)
    texts = [format_prompt(tokenizer, r) for r in records]
    engine = build_engine(generation, reference_name, reference, dtype)
    results: dict[str, dict[str, Any]] = {}
    for name, model in (("before", reference), ("after", load_causal_lm(tuned_name, tokenizer).eval())):
        torch.manual_seed(seed + 1)  # both policies sample with the same random numbers
        responses, kl, length = answers_and_kl(model, reference, tokenizer, texts, generation, dtype, engine)
        scores = {judge: checked_scores(reward, prompts, responses, records) for judge, reward in judges.items()}
        results[name] = {"responses": responses, "kl": kl, "length": length, **scores}
    before, after = results["before"], results["after"]
    wins = (after["gold"] > before["gold"]).float() + 0.5 * (after["gold"] == before["gold"]).float()
    figures = {
        f"{key}_{when}": float(results[when][key].mean())
        for key in ("gold", "learned", "length")
        for when in ("before", "after")
    }
    return {
        "num_prompts": len(records),
        **figures,
        "kl_final": float(after["kl"].mean()),
        "win_rate": float(wins.mean()),
        "side_by_side": [
            {"prompt": p, "reference": a, "tuned": b, "gold_reference": float(ga), "gold_tuned": float(gb)}
            for p, a, b, ga, gb in zip(prompts, before["responses"], after["responses"], before["gold"], after["gold"])
        ],
    }


# ---------------------------------------------------------------------------
# 6 report: plots, report.md, summary.json
# ---------------------------------------------------------------------------


def gold_by_step(ppo_dir: Path, gold: RewardFn, prompts_source: str) -> dict[int, float]:
    """The gold judge's mean score of the responses PPO sampled at each step (its samples.jsonl)."""
    samples = read_jsonl(ppo_dir / "samples.jsonl")
    by_prompt = {prompt_text(r): r for r in load_records(prompts_source, "prompts")}  # fields such as `reference`
    records = [by_prompt.get(s["prompt"], {"prompt": s["prompt"]}) for s in samples]
    scores = checked_scores(gold, [s["prompt"] for s in samples], [s["response"] for s in samples], records)
    totals: dict[int, list[float]] = {}
    for s, score in zip(samples, scores.tolist()):
        totals.setdefault(s["step"], []).append(score)
    return {step: sum(values) / len(values) for step, values in totals.items()}


def plot_demo(ppo_dir: Path, gold: RewardFn, judge_name: str, prompts_source: str, out: Path) -> list[Path]:
    """reward_vs_step.png, kl_vs_step.png and gold_vs_kl.png from the PPO stage's metrics and samples."""
    gold_scores = gold_by_step(ppo_dir, gold, prompts_source)
    metrics = [
        m for m in read_jsonl(ppo_dir / "metrics.jsonl") if "reward/score_mean" in m and m["step"] in gold_scores
    ]
    steps = [m["step"] for m in metrics]
    learned, kl = [m["reward/score_mean"] for m in metrics], [m["kl/mean"] for m in metrics]
    gold_curve = [gold_scores[step] for step in steps]

    fig, ax = new_figure()
    ax.plot(steps, learned, marker=".", label="learned reward (proxy)")
    ax.plot(steps, gold_curve, marker=".", label=f"gold judge ({judge_name})")
    ax.set(xlabel="PPO step", ylabel="mean score of the batch")
    ax.legend()
    ax.grid(alpha=0.3)
    paths = [save_figure(fig, out / "reward_vs_step.png")]
    fig, ax = new_figure()
    ax.plot(steps, kl, marker=".", color="tab:red")
    ax.set(xlabel="PPO step", ylabel="KL(π ‖ π_ref) per response")
    ax.grid(alpha=0.3)
    paths.append(save_figure(fig, out / "kl_vs_step.png"))
    fig, ax = new_figure()
    points = ax.scatter(kl, gold_curve, c=steps, cmap="viridis", marker="o", label="gold judge")
    ax.scatter(kl, learned, c=steps, cmap="viridis", marker="^", alpha=0.6, label="learned reward")
    fig.colorbar(points, ax=ax, label="PPO step")
    ax.set(xlabel="KL(π ‖ π_ref) per response", ylabel="mean score of the batch")
    ax.set_title("proxy vs gold as the policy moves away")
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(save_figure(fig, out / "gold_vs_kl.png"))
    return paths


def save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def side_by_side_rows(evaluation: dict[str, Any], count: int = 6) -> str:
    """Markdown table rows: prompt | reference (gold score) | tuned (gold score), each answer cut at 200 characters."""
    rows = []
    for s in evaluation["side_by_side"][:count]:
        reference = f"{s['reference']!s:.200} ({s['gold_reference']:+.2f})"
        tuned = f"{s['tuned']!s:.200} ({s['gold_tuned']:+.2f})"
        rows.append(f"| {s['prompt']} | {reference} | {tuned} |".replace("\n", " "))
    return "\n".join(rows)


def monitor_section(ppo_dir: Path) -> str:
    """The reward-hacking monitor's verdict on the PPO stage and its plot (empty when the monitor was off)."""
    summary_path = ppo_dir / "summary.json"
    monitor = json.loads(summary_path.read_text()).get("monitor") if summary_path.exists() else None
    if not monitor:
        return ""
    if monitor["reason"] is None:
        verdict = f"ran to the end, {monitor['evaluations']} evaluations without a sign of reward hacking"
    else:
        verdict = f"**stopped PPO at step {monitor['stopped_at']}**: {monitor['reason']}"
        if monitor["rolled_back_to"] is not None:
            verdict += f"; the tuned policy is rolled back to step {monitor['rolled_back_to']}, its best gold score"
    plot = f"{ppo_dir.name}/over_optimisation.png"
    return f"- Reward-hacking monitor: {verdict}\n\n![proxy vs gold vs KL over the PPO stage]({plot})\n"


def write_report(
    heading: str,
    stages: dict[str, Path],
    summary: dict[str, Any],
    evaluation: dict[str, Any],
    eval_pairs: int,
    out: Path,
) -> None:
    """report.md: the figures before and after (`summary`), the plots, samples side by side, where every file is."""
    e = summary
    report = f"""# rlhfkit demo report

{heading}; {evaluation["num_prompts"]} held-out prompts.

| figure | before (reference) | after (PPO) |
| --- | --- | --- |
| gold judge score, mean | {e["gold_before"]:+.3f} | {e["gold_after"]:+.3f} |
| learned reward, mean | {e["learned_before"]:+.3f} | {e["learned_after"]:+.3f} |
| response length (tokens) | {e["length_before"]:.1f} | {e["length_after"]:.1f} |

- Win rate of the tuned policy over the reference (gold judge, ties count half): **{e["win_rate"]:.1%}**
- KL(π ‖ π_ref) per response on held-out prompts: **{e["kl_final"]:.2f}** nats
- Reward model held-out accuracy: **{e["reward_model_accuracy"]:.1%}** on {eval_pairs} pairs of prompts it never saw, \
labelled by the judge without noise
- Wall time: {e["wall_s"] / 60:.1f} min

![reward and gold score against step](reward_vs_step.png)
![KL against step](kl_vs_step.png)
![gold score against KL](gold_vs_kl.png)

{monitor_section(stages["ppo"])}
## Side by side (held-out prompts; gold score in brackets)

| prompt | reference | tuned |
| --- | --- | --- |
{side_by_side_rows(evaluation)}

## Where everything is

| what | where |
| --- | --- |
| candidates | `{stages["generate"].name}/candidates.jsonl` |
| rankings (synthetic human feedback) | `{stages["label"].name}/rankings.jsonl` |
| held-out comparisons (no noise) | `{stages["heldout"].name}/comparisons.jsonl` |
| reward model | `{stages["rm"].name}/final/` (metrics in `{stages["rm"].name}/metrics.jsonl`) |
| tuned policy | `{stages["ppo"].name}/final/` (metrics, samples, TensorBoard in `{stages["ppo"].name}/`) |
| evaluation, all side-by-side samples | `5-evaluate/evaluation.json` |
"""
    (out / "report.md").write_text(report)


def write_summary(evaluation: dict[str, Any], rm_accuracy: float, wall_s: float, out: Path) -> dict[str, Any]:
    """summary.json: the headline figures of the whole demo."""
    keys = ["gold_before", "gold_after", "kl_final", "win_rate"]
    keys += ["learned_before", "learned_after", "length_before", "length_after"]
    summary = {**{key: evaluation[key] for key in keys}, "reward_model_accuracy": rm_accuracy, "wall_s": wall_s}
    write_json_atomic(out / "summary.json", summary)
    return summary
