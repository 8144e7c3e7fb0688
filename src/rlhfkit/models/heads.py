"""Scalar heads: the value head on a policy, and the reward model / separate critic.

A reward model is a transformer backbone with one linear head, read at the
last real token of each sequence (pooling "last", as InstructGPT) or averaged
over the response tokens (pooling "mean"); a separate critic is the same module
read at every token. Its score is gain * head + bias.

`save` writes the standard Hugging Face sequence classifier of the backbone's architecture
(`<Arch>ForSequenceClassification`, one label), so that a reward model leaves rlhfkit as any other:

    config.json, model.safetensors  backbone + score.weight = gain * w; pad_token_id the tokenizer's pad;
                                    score_offset = gain * b + bias and score_pooling (the standard class
                                    has no score bias and reads the last token)
    modeling_rlhfkit_reward.py      where the standard class is not exact (an offset, mean pooling): the class
                                    of `rlhfkit.models.hf_reward`, named in config.json's auto_map
    tokenizer files, README.md      the tokenizer and a model card on loading it
    reward.json                     {"gain", "bias", "pooling", ...figures}

`load` reads that, and the earlier layout (the backbone alone, scalar_head.safetensors, reward.json).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from rlhfkit.errors import UserError
from rlhfkit.models import hf_reward
from rlhfkit.models.hf_reward import STANDARD_IMPORT, RlhfkitRewardModel, pooled_scores
from rlhfkit.models.hf_reward import last_token_index as last_token_index
from rlhfkit.models.hf_reward import position_ids_from_mask as position_ids_from_mask
from rlhfkit.models.loading import load_backbone
from rlhfkit.models.shared_prompts import shared_prompt_response_states

HEAD_FILE = "scalar_head.safetensors"  # the earlier layout's raw head, still read
REWARD_FILE = "reward.json"
MODELING_FILE = "modeling_rlhfkit_reward.py"


class ValueHead(nn.Module):
    """V(s_t) = w·h_t + b on the policy's last hidden states; zero-initialised so early values are 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, T, H) -> (B, T) in fp32."""
        return self.linear(hidden_states.float()).squeeze(-1)


POOLINGS = ("last", "mean")


def check_pooling(value: str, key: str = "pooling") -> str:
    if value not in POOLINGS:
        raise UserError(f"{key} must be one of {', '.join(POOLINGS)}, got {value!r}")
    return value


class ScalarHeadModel(nn.Module):
    """A transformer backbone (no LM head) with a scalar head: a reward model or a separate critic."""

    def __init__(self, backbone: nn.Module, gain: float = 1.0, bias: float = 0.0, pooling: str = "last"):
        super().__init__()
        self.pooling = check_pooling(pooling)
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (backbone.config.hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        self.gain = gain
        self.bias = bias

    def token_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T) raw head outputs at every position, fp32."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).last_hidden_state
        return self.head(hidden.float()).squeeze(-1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) -> (B,) normalised score gain * head + bias, the head read as `pooling` says.

        "mean" averages the head over the response tokens (`response_mask`, EOS included); the head
        being linear, that is the head of the mean hidden state. A judge that adds up what each
        word contributes (a sentiment lexicon, say) is then linear in the features; read at the last
        token, the backbone must first learn to carry that sum there.
        """
        shared = None
        if response_mask is not None:
            shared = shared_prompt_response_states(
                self.backbone, input_ids, attention_mask.bool(), response_mask.bool()
            )
        if shared is not None:  # e.g. a ranking's K responses to one prompt: the prompt read once
            hidden, mask = shared
            values = self.head(hidden.float()).squeeze(-1)
            return self.gain * pooled_scores(values, mask, mask, self.pooling) + self.bias
        values = self.token_values(input_ids, attention_mask)
        return self.gain * pooled_scores(values, attention_mask, response_mask, self.pooling) + self.bias

    def save(self, directory: str | Path, tokenizer=None, extra: dict | None = None) -> None:
        """The standard sequence classifier with gain and bias folded in, reward.json and a model card."""
        if self.gain == 0:
            raise ValueError("a reward model with gain 0 scores every sequence alike; its head could not be read back")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        backbone = self.backbone
        if hasattr(backbone, "merge_and_unload"):
            backbone = backbone.merge_and_unload()
        offset = self.gain * self.head.bias.item() + self.bias
        config = classifier_config(backbone.config, tokenizer, self.pooling, offset)
        classifier = sequence_classifier(backbone, config, self.gain * self.head.weight.detach())
        standard = type(classifier).__name__
        (directory / MODELING_FILE).unlink(missing_ok=True)
        if self.pooling != "last" or offset != 0:
            config.auto_map = {
                "AutoModelForSequenceClassification": f"{Path(MODELING_FILE).stem}.{RlhfkitRewardModel.__name__}"
            }
            (directory / MODELING_FILE).write_text(modeling_source(standard))
        classifier.save_pretrained(directory)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        (directory / HEAD_FILE).unlink(missing_ok=True)
        meta = {"gain": self.gain, "bias": self.bias, "pooling": self.pooling, **(extra or {})}
        (directory / REWARD_FILE).write_text(json.dumps(meta, indent=2))
        (directory / "README.md").write_text(model_card(standard, config, meta))

    @classmethod
    def load(cls, directory: str | Path) -> ScalarHeadModel:
        """A reward model saved by `save`, or in the earlier layout with scalar_head.safetensors."""
        directory = Path(directory)
        if not (directory / REWARD_FILE).is_file():
            raise UserError(
                f"{directory} is not a reward model directory: expected {REWARD_FILE} beside the model "
                "(the final/ of an `rlhfkit rm` run)"
            )
        meta = json.loads((directory / REWARD_FILE).read_text())
        model = cls(
            load_backbone(str(directory)),
            gain=float(meta.get("gain", 1.0)),
            bias=float(meta.get("bias", 0.0)),
            pooling=meta.get("pooling", "last"),
        )
        if (directory / HEAD_FILE).is_file():
            model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        else:
            model.head.load_state_dict(raw_head(directory, model.gain, model.bias))
        return model


def classifier_config(backbone_config: Any, tokenizer: Any, pooling: str, offset: float) -> Any:
    """The backbone's config as a one-label classifier's, with the tokenizer's real pad token (not EOS).

    The standard class reads the last token that is not `pad_token_id`: with EOS as the pad it would
    skip the EOS that rlhfkit scores.
    """
    config = copy.deepcopy(backbone_config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    if tokenizer is not None:
        config.pad_token_id = tokenizer.pad_token_id
    config.score_offset, config.score_pooling = offset, pooling
    if pooling == "mean":
        config.response_start_ids = response_start_ids(tokenizer)
    return config


def sequence_classifier(backbone: nn.Module, config: Any, score_weight: torch.Tensor) -> nn.Module:
    """The standard `<Arch>ForSequenceClassification` around `backbone` (shared, not copied), score = weight."""
    if type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise UserError(
            f"transformers has no sequence classifier for {type(config).__name__}: a reward model needs one"
        )
    with torch.device("meta"):  # the classifier's own backbone is replaced: never allocate it
        classifier = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)](config)
    score = getattr(classifier, "score", None)
    if not isinstance(score, nn.Linear) or score.bias is not None:
        raise UserError(
            f"{type(classifier).__name__} has no bias-free linear `score`, which rlhfkit folds its head into"
        )
    setattr(classifier, classifier.base_model_prefix, backbone)
    score.weight = nn.Parameter(score_weight.detach().clone())
    return classifier


def modeling_source(standard: str) -> str:
    """hf_reward.py, its class built on the backbone's own standard classifier."""
    source = Path(hf_reward.__file__).read_text()
    return source.replace(STANDARD_IMPORT, STANDARD_IMPORT.replace("LlamaForSequenceClassification", standard))


def response_start_ids(tokenizer: Any) -> list[int] | None:
    """The tokens a chat template puts before the answer (its generation prompt); None without a template."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "hello"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False)
    with_start = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if len(with_start) <= len(prompt) or not with_start.startswith(prompt):
        return None
    return tokenizer(with_start[len(prompt) :], add_special_tokens=False).input_ids or None


def raw_head(directory: Path, gain: float, bias: float) -> dict[str, torch.Tensor]:
    """The head w, b back from score.weight = gain * w and score_offset = gain * b + bias."""
    index = directory / "model.safetensors.index.json"
    weights_file = json.loads(index.read_text())["weight_map"].get("score.weight") if index.is_file() else None
    path = directory / (weights_file or "model.safetensors")
    with safe_open(str(path), framework="pt") as tensors:
        if "score.weight" not in tensors.keys():
            raise UserError(f"{path} has no score.weight: not a reward model saved by rlhfkit")
        weight = tensors.get_tensor("score.weight").float()
    offset = float(json.loads((directory / "config.json").read_text()).get("score_offset", 0.0))
    return {"weight": weight / gain, "bias": torch.tensor([(offset - bias) / gain])}


def model_card(standard: str, config: Any, meta: dict[str, Any]) -> str:
    """README.md: what the score means and how plain transformers loads and scores it."""
    offset, pooling = config.score_offset, config.score_pooling
    custom = getattr(config, "auto_map", None) is not None
    trust = ", trust_remote_code=True" if custom else ""
    figures = {**{k: v for k, v in meta.items() if isinstance(v, (int, float, str))}, **meta.get("eval", {})}
    note = ""
    if pooling == "mean":
        note = (
            "Its score is the head averaged over the response tokens and their EOS: only the class in "
            f"{MODELING_FILE} (`trust_remote_code=True`) reads it so, the standard class would read the last "
            "token. Pass `response_mask` (1 on the response and its EOS), or the class takes the response to be "
            "what follows the chat template's start of the answer (`response_start_ids` in config.json).\n"
        )
    elif custom:
        note = (
            f"`trust_remote_code=True` loads the small class in {MODELING_FILE}, which adds `score_offset` "
            f"({offset:.6g}, in config.json): {standard}'s `score` has no bias. Without it the standard {standard} "
            f"loads the same weights and scores {offset:.6g} lower: the same order and differences between answers.\n"
        )
    figure_lines = "\n".join(f"- {key}: {value}" for key, value in figures.items())
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [reward-model, rlhf, rlhfkit]
---

# Reward model trained with `rlhfkit rm`

A {standard} with one label: `logits[:, 0]` is the reward of a prompt and its response, higher for
the preferred answer, exactly as rlhfkit scores it (pooling: {pooling}).

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("path/to/this/directory"{trust})
tokenizer = AutoTokenizer.from_pretrained("path/to/this/directory")
messages = [{{"role": "user", "content": "Tell me about cats."}}]
prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
ids = tokenizer(prompt, add_special_tokens=False).input_ids
ids += tokenizer("Cats are wonderful.", add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
reward = model(torch.tensor([ids])).logits[0, 0].item()
```

The text is tokenised as rlhfkit tokenises it: the prompt through the chat template, then the response
and EOS. Batches pad on the right with the tokenizer's pad token (`pad_token_id` {config.pad_token_id}).

{note}
## Figures (reward.json)

{figure_lines}
"""
