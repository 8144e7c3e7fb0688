"""Reward sources behind one interface: `(prompts, responses, records) -> scores`.

`prompts` are the readable prompts (last user turn), `responses` the decoded
responses, `records` the prompt records as loaded (for fields such as
`reference`). Every source returns one float per response; `checked_scores`
turns a NaN, an infinity, a wrong count or an exception into one clear
UserError instead of a silently poisoned update.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rlhfkit.config import RewardConfig
from rlhfkit.data import read_rows
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.errors import UserError
from rlhfkit.models import ScalarHeadModel, load_tokenizer
from rlhfkit.rewards.verifiable import reference_of, verifiable_reward
from rlhfkit.runtime.precision import autocast, resolve_precision

RewardFn = Callable[[list[str], list[str], list[dict[str, Any]]], Sequence[float]]


def sentiment_reward() -> RewardFn:
    """VADER compound score in [-1, 1]: 'people prefer the more positive answer'."""

    analyzer = SentimentIntensityAnalyzer()

    def score(prompts: list[str], responses: list[str], records: list[dict[str, Any]]) -> list[float]:
        return [analyzer.polarity_scores(response)["compound"] for response in responses]

    return score


def rouge_reward() -> RewardFn:
    """ROUGE-L F1 of the response against the prompt record's `reference` field."""
    from rouge_score import rouge_scorer  # noqa: PLC0415 (lazy: it loads nltk, scipy and scikit-learn)

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def score(prompts: list[str], responses: list[str], records: list[dict[str, Any]]) -> list[float]:
        return [
            scorer.score(record["reference"], response)["rougeL"].fmeasure
            for record, response in zip(records, responses)
        ]

    return score


def length_reward(target_words: int) -> RewardFn:
    """-|words - target| / target: 0 at the target length, -1 at twice (or zero times) the target."""

    def score(prompts: list[str], responses: list[str], records: list[dict[str, Any]]) -> list[float]:
        return [-abs(len(response.split()) - target_words) / target_words for response in responses]

    return score


def function_reward(spec: str) -> RewardFn:
    """A user function `package.module:function` with signature (prompts, responses, records) -> scores.

    Modules in the working directory are found as `python -m` finds them: the `rlhfkit` console
    script's own sys.path does not include it, and users should not need `PYTHONPATH=.`.
    """
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise UserError(f"reward.function {spec!r}: cannot import {module_name!r}: {error}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UserError(f"reward.function {spec!r}: {module_name} has no callable {attribute!r}")
    return function


def score_items(
    model: torch.nn.Module, items: list[dict[str, Any]], pad_token_id: int, dtype: str, side: str = "right"
) -> torch.Tensor:
    """Tokenised prompt + response sequences (N of them) -> (N,) reward-model scores, on the model's device."""

    device = next(model.parameters()).device
    input_ids, attention_mask, response_mask = (t.to(device) for t in pad_batch(items, pad_token_id, side=side))
    with autocast(dtype):
        return model(input_ids, attention_mask, response_mask).float()


def model_reward(directory: str, batch_size: int, dtype: str, device: torch.device | str = "cpu") -> RewardFn:
    """A reward model trained by `rlhfkit rm`: its normalised score of prompt + response + EOS.

    The text is tokenised as in training (prompt through the chat template, then response + EOS).
    """

    model = ScalarHeadModel.load(directory).eval().to(device)
    dtype = resolve_precision(dtype, model.backbone, torch.device(device))
    tokenizer = load_tokenizer(directory)
    max_length = model.backbone.config.max_position_embeddings

    @torch.no_grad()
    def score(prompts: list[str], responses: list[str], records: list[dict[str, Any]]) -> list[float]:
        items = [
            tokenize_prompt_response(tokenizer, record, response, max_length)
            for record, response in zip(records, responses)
        ]
        scores: list[float] = []
        for start in range(0, len(items), batch_size):
            scores += score_items(model, items[start : start + batch_size], tokenizer.pad_token_id, dtype).tolist()
        return scores

    score.model = model  # type: ignore[attr-defined]  # the critic may be initialised from it
    return score


def build_reward(config: RewardConfig, dtype: str = "float32", device: torch.device | str = "cpu") -> RewardFn:
    """The reward source that `config.kind` names (a reward model runs on `device`)."""
    if config.kind == "sentiment":
        return sentiment_reward()
    if config.kind == "rouge":
        return rouge_reward()
    if config.kind == "length":
        return length_reward(config.target_length)
    if config.kind == "function":
        return function_reward(config.function)
    if config.kind == "verifiable":
        return verifiable_reward(config.tolerance)
    return model_reward(config.model, config.batch_size, dtype, device)


def validate_records_for_reward(config: RewardConfig, records: list[dict[str, Any]], source: str) -> None:
    """Fields a reward source needs from every prompt record, checked before any heavy work."""
    if config.kind == "rouge":
        for i, record in enumerate(records, start=1):
            if not isinstance(record.get("reference"), str):
                raise UserError(
                    f"{source}: record {i} has no 'reference' string, which reward.kind=rouge compares against"
                )
    if config.kind == "verifiable":
        for index, record in enumerate(records):
            try:
                reference_of(record, source)
            except UserError:
                reference_of(record, _location(source, index, len(records)))  # the same error, naming file:line


def _location(source: str, index: int, count: int) -> str:
    """`file:line` of the index-th record when `records` are the rows of `source`, else the record's number.

    Only called for a record that fails a check, so reading the file a second time costs nothing on a good run.
    """
    try:
        name, rows = read_rows(source)
    except UserError:
        return f"{source}: record {index + 1}"
    return f"{name}:{rows[index][0]}" if len(rows) == count else f"{source}: record {index + 1}"


def checked_scores(
    reward: RewardFn,
    prompts: list[str],
    responses: list[str],
    records: list[dict[str, Any]],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Call the reward source and check what comes back: (B,) float32, all finite, on `device`."""
    name = getattr(reward, "__qualname__", repr(reward))
    try:
        raw = reward(prompts, responses, records)
        scores = torch.as_tensor([float(s) for s in raw], dtype=torch.float32)
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"the reward function {name} raised {type(error).__name__}: {error}") from error
    if scores.shape != (len(responses),):
        raise UserError(f"the reward function {name} returned {scores.numel()} scores for {len(responses)} responses")
    bad = [i for i, s in enumerate(scores.tolist()) if not math.isfinite(s)]
    if bad:
        raise UserError(
            f"the reward function {name} returned a non-finite score ({scores[bad[0]].item()}) "
            f"for response {bad[0]}: {responses[bad[0]][:60]!r}"
        )
    return scores.to(device)
