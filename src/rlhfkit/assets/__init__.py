"""Data that ships with rlhfkit, so every command runs with no download."""

from pathlib import Path

ASSETS = Path(__file__).parent
PROMPTS = ASSETS / "prompts.jsonl"  # training prompts for PPO, generation and labelling
EVAL_PROMPTS = ASSETS / "eval_prompts.jsonl"  # held-out prompts, never trained on
CONSTITUTION = (
    ASSETS / "constitution.yaml"
)  # the default constitution: principles for critique, revision and the AI judge
DEMONSTRATIONS = (
    ASSETS / "demonstrations.jsonl"
)  # short, friendly prompt + response pairs: the default data.train of `rlhfkit sft`
# 200 small arithmetic and word problems, each with its answer as "reference": prompts for reward.kind=verifiable
ARITHMETIC = ASSETS / "arithmetic.jsonl"
