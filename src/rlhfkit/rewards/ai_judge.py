"""Feedback from AI: a constitution of principles, and a judge model that compares two responses.

Constitutional AI (Bai et al. 2022) uses a list of principles twice:

- SL stage (`rlhfkit constitution`): the model critiques its own response
  under a sampled principle's critique request and revises it under the
  revision request; the revisions become SFT demonstrations.
- RL stage (`rlhfkit label --judge ai`, "RLAIF"): a judge model is shown a
  prompt and two responses as a multiple-choice question,

      ... (A) <first> (B) <second> Which response is more <preference>?
      Answer: (

  and its next-token probabilities of the option labels "A" and "B" are read
  directly (the paper's method, never parsing generated text). Small models
  prefer whichever option comes first (or second); asking in both orders and
  averaging the probability that the same response wins cancels that
  position bias. The averaged probability is a soft label for `rlhfkit rm`.

Departures from the paper: one principle per comparison (the paper also
ensembles over several), and no few-shot examples in the judge prompt.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhfkit.assets import CONSTITUTION
from rlhfkit.config import field, load_yaml_mapping
from rlhfkit.data.records import Record, format_prompt, prompt_text
from rlhfkit.errors import UserError
from rlhfkit.models.heads import position_ids_from_mask
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.runtime.precision import autocast

PRINCIPLE_FIELDS = ("name", "critique", "revision", "preference")
ANSWER_PREFIX = "Answer: ("


@dataclasses.dataclass(frozen=True)
class Principle:
    """One principle of a constitution."""

    name: str  # short identifier, e.g. "harmless"
    critique: str  # the critique request, asked after the response
    revision: str  # the revision request, asked after the critique
    preference: str  # the judge's question: "Which response is more <preference>?"


def load_constitution(path: str | Path) -> list[Principle]:
    """Read a constitution YAML: `principles: [{name, critique, revision, preference}, ...]`.

    A UserError names the file and the principle's index.
    """
    path = Path(path)
    loaded = load_yaml_mapping(path)
    items = loaded.get("principles") if isinstance(loaded, dict) else None
    if not isinstance(items, list) or not items:
        raise UserError(
            f"constitution file {path}: expected a mapping with a non-empty list 'principles', "
            f"got {type(loaded).__name__}"
        )
    principles = []
    for index, item in enumerate(items):
        where = f"constitution file {path}: principle {index}"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping of {', '.join(PRINCIPLE_FIELDS)}, got {type(item).__name__}")
        unknown = sorted(set(item) - set(PRINCIPLE_FIELDS))
        if unknown:
            raise UserError(f"{where}: unknown field {unknown[0]!r}; expected {', '.join(PRINCIPLE_FIELDS)}")
        for key in PRINCIPLE_FIELDS:
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                found = "nothing" if key not in item else repr(value)
                raise UserError(f"{where}: field {key!r} must be a non-empty string, got {found}")
        principles.append(Principle(**{key: item[key].strip() for key in PRINCIPLE_FIELDS}))
    return principles


@dataclasses.dataclass
class JudgeConfig:
    """The AI judge of `rlhfkit label --judge ai`."""

    model: str = field("", "judge model name or directory (empty: the policy, model.name)")
    constitution: str = field(
        "", "constitution YAML whose `preference` questions the judge answers (empty: the shipped one)"
    )
    labels: list[str] = field(
        factory=lambda: ["A", "B"], doc="the two option labels; each must be one token of the judge's vocabulary"
    )
    batch_size: int = field(8, "judge prompts per forward pass")

    def __post_init__(self) -> None:
        if len(self.labels) != 2 or self.labels[0] == self.labels[1]:
            raise UserError(f"judge.labels must be two different labels, got {self.labels}")
        if self.batch_size <= 0:
            raise UserError(f"judge.batch_size must be positive, got {self.batch_size}")


def constitution_path(configured: str) -> Path:
    """The configured constitution, or the shipped default for ''."""

    return Path(configured) if configured else CONSTITUTION


# ---------------------------------------------------------------------------
# The multiple-choice prompt and the option probabilities
# ---------------------------------------------------------------------------


def choice_prompt(
    tokenizer: Any, record: Record, first: str, second: str, preference: str, labels: Sequence[str]
) -> str:
    """The judge's input: the question as a user turn, then the start of its answer, ending in '('.

    The next token after the returned text is the judge's choice of label.
    """
    question = (
        "Consider the following request and two possible responses.\n\n"
        f"Request: {prompt_text(record)}\n\n"
        f"({labels[0]}) {first}\n\n"
        f"({labels[1]}) {second}\n\n"
        f"Which response is more {preference}?"
    )
    text = format_prompt(tokenizer, {"prompt": question})
    return text + ANSWER_PREFIX if getattr(tokenizer, "chat_template", None) else text + "\n" + ANSWER_PREFIX


def option_token_ids(tokenizer: Any, labels: Sequence[str]) -> tuple[int, int]:
    """The token id of each label as it follows '(' in the judge prompt.

    A UserError unless each label is one known token, distinct from the other.
    """
    prefix = tokenizer(ANSWER_PREFIX, add_special_tokens=False).input_ids
    ids = []
    for label in labels:
        extended = tokenizer(ANSWER_PREFIX + label, add_special_tokens=False).input_ids
        if extended[: len(prefix)] != prefix or len(extended) != len(prefix) + 1:
            raise UserError(
                f"judge.labels: {label!r} is not a single token after {ANSWER_PREFIX!r} for this judge's tokenizer; "
                "choose labels that are"
            )
        ids.append(extended[-1])
    if ids[0] == ids[1] or tokenizer.unk_token_id in ids:
        raise UserError(
            f"judge.labels {list(labels)}: the judge's tokenizer maps them to tokens {ids} (unknown or identical); "
            "choose labels in its vocabulary"
        )
    return ids[0], ids[1]


def load_judge(name: str, labels: Sequence[str]) -> tuple[Any, Any]:
    """(model, tokenizer) of the judge, in eval mode; unusable labels fail before the model loads."""
    tokenizer = load_tokenizer(name)
    option_token_ids(tokenizer, labels)
    return load_causal_lm(name, tokenizer).eval(), tokenizer


@torch.no_grad()
def first_option_probabilities(
    model: Any, tokenizer: Any, texts: list[str], token_ids: tuple[int, int], dtype: str, batch_size: int
) -> torch.Tensor:
    """(N,) float32: P(first label) / (P(first label) + P(second label)) as the token after each text.

    Texts are left-padded in batches of `batch_size`, so the last column is
    every row's last real token.
    """
    option_ids = torch.tensor(token_ids)
    device = next(model.parameters()).device
    probabilities = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
            padding_side="left",
        )
        input_ids, attention_mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        with autocast(dtype):
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
            ).logits
        option_logits = logits[:, -1, :].float()[:, option_ids.to(device)]  # (b, 2)
        probabilities.append(torch.softmax(option_logits, dim=-1)[:, 0].cpu())
    return torch.cat(probabilities) if probabilities else torch.zeros(0)


@dataclasses.dataclass
class PairJudgement:
    """The judge's verdicts on N pairs (x, y); each tensor is (N,) float32."""

    shown_first: torch.Tensor  # P(x preferred) when x is option (A)
    shown_second: torch.Tensor  # P(x preferred) when x is option (B)

    @property
    def prob_first(self) -> torch.Tensor:
        """P(x preferred) averaged over both presentation orders (position bias cancelled)."""
        return (self.shown_first + self.shown_second) / 2


def judge_pairs(
    model: Any,
    tokenizer: Any,
    records: list[Record],
    firsts: list[str],
    seconds: list[str],
    preferences: list[str],
    labels: Sequence[str],
    dtype: str,
    batch_size: int,
) -> PairJudgement:
    """Ask the judge about each pair (firsts[i], seconds[i]) under preferences[i], in both orders."""
    token_ids = option_token_ids(tokenizer, labels)
    forward = [
        choice_prompt(tokenizer, r, x, y, p, labels) for r, x, y, p in zip(records, firsts, seconds, preferences)
    ]
    swapped = [
        choice_prompt(tokenizer, r, y, x, p, labels) for r, x, y, p in zip(records, firsts, seconds, preferences)
    ]
    probabilities = first_option_probabilities(model, tokenizer, forward + swapped, token_ids, dtype, batch_size)
    n = len(records)
    return PairJudgement(shown_first=probabilities[:n], shown_second=1.0 - probabilities[n:])


def ai_comparisons(
    model: Any,
    tokenizer: Any,
    records: list[Record],
    firsts: list[str],
    seconds: list[str],
    principles: list[Principle],
    config: JudgeConfig,
    dtype: str,
    rng: random.Random,
) -> list[Record]:
    """Comparison records with soft labels: chosen is the response with P >= 0.5, `label` = P(chosen preferred).

    One principle is sampled per pair. Each record keeps the prompt fields of
    its source record and a `meta` with the principle and both orders' probabilities.
    """
    sampled = [rng.choice(principles) for _ in records]
    verdict = judge_pairs(
        model,
        tokenizer,
        records,
        firsts,
        seconds,
        [p.preference for p in sampled],
        config.labels,
        dtype,
        config.batch_size,
    )
    comparisons = []
    for i, record in enumerate(records):
        p_first = float(verdict.prob_first[i])
        first_wins = p_first >= 0.5
        prompt_fields: Record = {k: record[k] for k in ("prompt", "messages") if k in record}
        comparisons.append(
            {
                **prompt_fields,
                "chosen": firsts[i] if first_wins else seconds[i],
                "rejected": seconds[i] if first_wins else firsts[i],
                "label": p_first if first_wins else 1.0 - p_first,
                "meta": {
                    "judge": "ai",
                    "principle": sampled[i].name,
                    "p_first_shown_first": float(verdict.shown_first[i]),
                    "p_first_shown_second": float(verdict.shown_second[i]),
                },
            }
        )
    return comparisons


def position_bias(comparisons: list[Record]) -> dict[str, float]:
    """How much the judge's verdicts depend on the order the responses are shown in.

    `first_shown_wins`: how often the option shown first wins (0.5 for an unbiased judge);
    `orders_agree`: how often both orders pick the same response (1 for an order-blind judge).
    """
    shown_first = [c["meta"]["p_first_shown_first"] for c in comparisons]
    shown_second = [c["meta"]["p_first_shown_second"] for c in comparisons]
    first_wins = sum(p >= 0.5 for p in shown_first) + sum(p < 0.5 for p in shown_second)
    agree = sum((a >= 0.5) == (b >= 0.5) for a, b in zip(shown_first, shown_second))
    return {"first_shown_wins": first_wins / (2 * len(comparisons)), "orders_agree": agree / len(comparisons)}
