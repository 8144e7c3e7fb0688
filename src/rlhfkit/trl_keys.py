"""TRL-style flat config files for `--config`: each TRL key with an rlhfkit equivalent becomes that key.

A TRL user's YAML holds the flat fields of TRL's configs (`SFTConfig`, `DPOConfig`, `RewardConfig`,
`GRPOConfig`, `RLOOConfig`, `PPOConfig`, with transformers' `TrainingArguments` under them) and of
TRL's `ModelConfig` script arguments. rlhfkit's configuration is nested by concern (`optim.*`,
`train.*`, `model.*`). A file whose top level has TRL keys and no rlhfkit section is translated here,
per command, and the command prints one line naming what it mapped; a key without an equivalent is
refused naming it, and a file mixing both styles is refused, so nothing a user wrote is silently
dropped.

Batch sizes change unit on the way (one process; rlhfkit's `train.batch_size` is the global batch):

    sft, rm, dpo     per_device_train_batch_size x gradient_accumulation_steps -> train.batch_size,
                     per_device_train_batch_size -> train.micro_batch_size
    grpo, rloo       the same completions per optimiser step -> train.mini_batch_size; prompts per
                     iteration, train.batch_size = that / num_generations (TRL generates one
                     optimiser step's completions at a time)
    ppo              x num_mini_batches -> train.batch_size (one response per prompt)

This module imports nothing of rlhfkit's configuration (config.py calls it), only the error type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import MutableMapping
from typing import Any

from rlhfkit.errors import UserError
from rlhfkit.report_to import REPORT_TO_ENV, parse_report_to

CONFIG_COMMANDS = {"SFTConfig": "sft", "RMConfig": "rm", "DPOConfig": "dpo", "PPOConfig": "ppo"}  # Python API

# TRL key -> rlhfkit key, for every command that takes a TRL file
COMMON = {
    "output_dir": "out",
    "seed": "seed",
    "model_name_or_path": "model.name",
    "use_peft": "model.lora.enabled",
    "lora_r": "model.lora.r",
    "lora_alpha": "model.lora.alpha",
    "lora_dropout": "model.lora.dropout",
    "lora_target_modules": "model.lora.target_modules",
    "learning_rate": "optim.learning_rate",
    "weight_decay": "optim.weight_decay",
    "warmup_steps": "optim.warmup_steps",
    "max_grad_norm": "optim.max_grad_norm",
    "max_steps": "train.steps",
    "save_steps": "train.checkpoint_every",
}
SUPERVISED = {"max_length": "data.max_length", "eval_steps": "train.eval_every"}
SAMPLING = {
    "temperature": "generation.temperature",
    "top_k": "generation.top_k",
    "top_p": "generation.top_p",
    "max_prompt_length": "data.max_prompt_length",
    "missing_eos_penalty": "score.no_eos_penalty",
    "kl_estimator": "algorithm.kl_estimator",
}
GROUP = {
    **SAMPLING,
    "max_completion_length": "generation.max_new_tokens",
    "num_generations": "algorithm.group_size",
    "beta": "kl.coef",
    "epsilon": "ppo.clip_range",
    "num_iterations": "train.ppo_epochs",
}
RENAMES: dict[str, dict[str, str]] = {
    "sft": {**COMMON, **SUPERVISED, "max_seq_length": "data.max_length", "packing": "data.packing"},
    "rm": {**COMMON, **SUPERVISED},
    "dpo": {**COMMON, **SUPERVISED, "beta": "train.beta"},
    "ppo": {
        **COMMON,
        **SAMPLING,
        "response_length": "generation.max_new_tokens",
        "kl_coef": "kl.coef",
        "cliprange": "ppo.clip_range",
        "cliprange_value": "ppo.value_clip_range",
        "vf_coef": "ppo.value_coef",
        "gamma": "ppo.gamma",
        "lam": "ppo.lam",
        "num_ppo_epochs": "train.ppo_epochs",
    },
    "grpo": {**COMMON, **GROUP},
    "rloo": {**COMMON, **GROUP, "rloo_k": "algorithm.group_size", "cliprange": "ppo.clip_range"},
}
# keys translated by a rule below (their value changes form, or several keys make one)
RULE_KEYS = {
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_mini_batches",
    "lr_scheduler_type",
    "warmup_ratio",
    "adam_beta1",
    "adam_beta2",
    "bf16",
    "optim",
    "report_to",
    "loss_type",
    "label_smoothing",
    "scale_rewards",
}
# keys whose values translate through a table: TRL key -> {command: (rlhfkit key, {TRL value: rlhfkit value})}
SCHEDULES = {"constant": "constant", "constant_with_warmup": "constant", "linear": "linear", "cosine": "cosine"}
GROUP_LOSSES = {
    "grpo": "sequence_mean_token_mean",
    "bnpo": "token_mean",
    "dapo": "token_mean",
    "dr_grpo": "constant_normalizer",
}
VALUE_TABLES: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "lr_scheduler_type": {command: ("optim.schedule", SCHEDULES) for command in RENAMES},
    "loss_type": {
        "dpo": ("train.loss", {"sigmoid": "dpo", "ipo": "ipo"}),
        **{command: ("algorithm.loss_aggregation", GROUP_LOSSES) for command in ("grpo", "rloo")},
    },
}
# TRL keys rlhfkit has no equivalent for, with what to do instead where there is something
HINTS = {
    "num_train_epochs": "rlhfkit counts optimiser steps: give max_steps (-> train.steps)",
    "total_episodes": "rlhfkit counts iterations: give max_steps (-> train.steps)",
    "fp16": "rlhfkit computes in float32 or bfloat16: use bf16",
    "push_to_hub": "pass --push-to-hub REPO on the command line",
    "hub_model_id": "pass --push-to-hub REPO on the command line",
    "logging_steps": "rlhfkit logs every step",
    "save_total_limit": "rlhfkit keeps the newest two checkpoints",
    "dataset_name": "name the data with rlhfkit's data.* keys",
}
OTHER_TRL_KEYS = {  # recognised as TRL's, so that a file holding them is read as a TRL file, then refused by name
    "per_device_eval_batch_size",
    "eval_strategy",
    "save_strategy",
    "logging_strategy",
    "logging_dir",
    "run_name",
    "do_train",
    "do_eval",
    "overwrite_output_dir",
    "gradient_checkpointing",
    "remove_unused_columns",
    "dataset_text_field",
    "max_prompt_length",
    "max_completion_length",
    "center_rewards_coefficient",
    "whiten_rewards",
    "torch_dtype",
    "dtype",
}
TRL_KEYS = set().union(*RENAMES.values(), RULE_KEYS, HINTS, OTHER_TRL_KEYS)
TRL_BATCH_DEFAULT = 8  # TrainingArguments.per_device_train_batch_size


@dataclasses.dataclass
class Translation:
    """A flat TRL file on its way to rlhfkit's keys: what is left to map, what was set, and how."""

    command: str
    source: str
    left: dict[str, Any]
    values: dict[str, Any] = dataclasses.field(default_factory=dict)
    mapped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (first TRL key, what it became)

    def take(self, key: str, default: Any = None) -> Any:
        return self.left.pop(key, default)

    def set(self, keys: list[str], targets: dict[str, Any]) -> None:
        self.values.update(targets)
        self.mapped.append((keys[0], f"{' x '.join(keys)} -> {', '.join(targets) or '(nothing to set)'}"))

    def refuse(self, key: str, why: str) -> UserError:
        return UserError(f"config file {self.source}: TRL key {key!r} {why}")


def is_trl_file(loaded: dict[str, Any], sections: set[str]) -> bool:
    """True when the top level has TRL keys that are not also rlhfkit keys (`seed`; `optim` unless a name)."""
    return any(key in TRL_KEYS and not _rlhfkit_key(key, value, sections) for key, value in loaded.items())


def _rlhfkit_key(key: str, value: Any, sections: set[str]) -> bool:
    return key in sections and (key != "optim" or not isinstance(value, str))  # TRL's optim names an optimiser


@dataclasses.dataclass
class MappedFile:
    """A TRL file in rlhfkit's terms: nested `values`, the line that names the mapping, and its trackers."""

    values: dict[str, Any]
    line: str
    report_to: str | None

    def announce(self, environ: MutableMapping[str, str]) -> None:
        """Print the mapping; the file's report_to becomes the run's trackers unless --report-to chose them."""
        kept = ""
        if self.report_to is not None:
            kept = f" ({REPORT_TO_ENV} already chose the trackers)" if REPORT_TO_ENV in environ else ""
            environ.setdefault(REPORT_TO_ENV, self.report_to)
        print(self.line + kept)


def from_trl(loaded: dict[str, Any], sections: set[str], command: str, source: str, group_size: int = 0) -> MappedFile:
    """A flat TRL file's values as rlhfkit's, and the one line naming what was mapped; UserError otherwise.

    `sections`: the top-level keys of the command's config; `group_size`: responses per prompt before
    the file (grpo and rloo default to 4), which converts TRL's completions into rlhfkit's prompts.
    """
    ours = sorted(key for key, value in loaded.items() if _rlhfkit_key(key, value, sections) and key != "seed")
    if ours:
        theirs = sorted(key for key in loaded if key in TRL_KEYS and key not in ours)
        raise UserError(
            f"config file {source} mixes TRL keys ({', '.join(theirs[:3])}) with rlhfkit sections "
            f"({', '.join(ours[:3])}); write the whole file in one of the two styles"
        )
    if command not in RENAMES:
        raise UserError(f"config file {source} holds TRL keys; rlhfkit {command} takes only its own keys (see --help)")
    translation = Translation(command, source, dict(loaded))
    _batches(translation, translation.left.get("num_generations", translation.left.get("rloo_k", group_size)))
    _optimiser(translation)
    _precision_and_trackers(translation)
    _tabled_values(translation)
    _losses(translation)
    renames = RENAMES[command]
    for key in [key for key in translation.left if key in renames]:
        translation.set([key], {renames[key]: translation.take(key)})
    if translation.left:
        raise _unmapped(translation, next(iter(translation.left)))
    report_to = translation.values.pop("report_to", None)
    nested: dict[str, Any] = {}
    for dotted, value in translation.values.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    in_file_order = [text for _, text in sorted(translation.mapped, key=lambda item: list(loaded).index(item[0]))]
    line = f"rlhfkit {command}: mapped TRL keys from {source}: {', '.join(in_file_order)}"
    return MappedFile(nested, line, report_to)


def _unmapped(translation: Translation, key: str) -> UserError:
    """The error for a key left over: its hint, or the closest TRL key this command maps."""
    if key in HINTS:
        return translation.refuse(key, f"has no rlhfkit equivalent ({HINTS[key]}); remove it")
    known = sorted(set(RENAMES[translation.command]) | RULE_KEYS)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if close:
        return translation.refuse(key, f"is not one rlhfkit maps; did you mean {close[0]!r}?")
    return translation.refuse(
        key, f"has no equivalent in rlhfkit {translation.command}; remove it (rlhfkit {translation.command} --help)"
    )


def _batches(translation: Translation, group_size: Any) -> None:
    """per_device_train_batch_size x gradient_accumulation_steps (x num_mini_batches for ppo) -> train.*."""
    keys = [k for k in ("per_device_train_batch_size", "gradient_accumulation_steps") if k in translation.left]
    if translation.command == "ppo" and "num_mini_batches" in translation.left:
        keys.append("num_mini_batches")
    if not keys:
        return
    micro = _positive(translation, "per_device_train_batch_size", TRL_BATCH_DEFAULT)
    per_step = micro * _positive(translation, "gradient_accumulation_steps", 1)
    if translation.command in ("sft", "rm", "dpo"):
        translation.set(keys, {"train.batch_size": per_step, "train.micro_batch_size": micro})
        return
    targets = {"train.micro_batch_size": micro, "train.mini_batch_size": per_step}
    if translation.command == "ppo":
        targets["train.batch_size"] = per_step * _positive(translation, "num_mini_batches", 1)
    else:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 0:
            raise translation.refuse("num_generations", f"must be a positive integer, got {group_size!r}")
        group = max(group_size, 1)
        if per_step % group:
            raise translation.refuse(
                keys[0],
                f"gives {per_step} completions per optimiser step, not a multiple of num_generations {group}",
            )
        targets["train.batch_size"] = per_step // group
    translation.set(keys, targets)


def _positive(translation: Translation, key: str, default: int) -> int:
    value = translation.take(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise translation.refuse(key, f"must be a positive integer, got {value!r}")
    return value


def _optimiser(translation: Translation) -> None:
    """warmup_ratio (of max_steps), adam_beta1/2, optim (AdamW is rlhfkit's)."""
    if "warmup_ratio" in translation.left:
        ratio, steps = translation.take("warmup_ratio"), translation.left.get("max_steps")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1 or not isinstance(ratio, (int, float)):
            raise translation.refuse(
                "warmup_ratio", "needs a number and max_steps in the same file (rlhfkit counts optim.warmup_steps)"
            )
        translation.set(["warmup_ratio"], {"optim.warmup_steps": math.ceil(ratio * steps)})
    betas = [key for key in ("adam_beta1", "adam_beta2") if key in translation.left]
    if betas:
        translation.set(
            betas, {"optim.betas": [translation.take("adam_beta1", 0.9), translation.take("adam_beta2", 0.999)]}
        )
    if "optim" in translation.left:
        name = translation.take("optim")
        if not str(name).startswith("adamw_torch"):
            raise translation.refuse("optim", f"{name!r} has no equivalent; rlhfkit trains with AdamW (adamw_torch)")
        translation.set(["optim"], {})


def _precision_and_trackers(translation: Translation) -> None:
    """bf16 -> model.dtype; report_to -> the trackers (`--report-to`), given back as `report_to`."""
    if "bf16" in translation.left:
        bf16 = translation.take("bf16")
        if not isinstance(bf16, bool):
            raise translation.refuse("bf16", f"must be true or false, got {bf16!r}")
        translation.set(["bf16"], {"model.dtype": "bfloat16" if bf16 else "float32"})
    if "report_to" in translation.left:
        trackers = translation.take("report_to")
        names = trackers if isinstance(trackers, list) else [trackers]
        if "all" in names or not all(isinstance(name, str) for name in names):
            raise translation.refuse("report_to", "must name the trackers (tensorboard, wandb, trackio, mlflow, none)")
        chosen = parse_report_to(",".join(names) or "none", f"config file {translation.source}: report_to")
        translation.values["report_to"] = ",".join(chosen) or "none"
        translation.mapped.append(("report_to", "report_to -> --report-to"))


def _tabled_values(translation: Translation) -> None:
    """The `VALUE_TABLES` keys (lr_scheduler_type, loss_type): a value the command's table has, refused otherwise."""
    for key, tables in VALUE_TABLES.items():
        if key in translation.left and translation.command in tables:
            target, table = tables[translation.command]
            value = translation.take(key)
            if value not in table:
                raise translation.refuse(key, f"{value!r} has no equivalent; rlhfkit has {', '.join(table)}")
            translation.set([key], {target: table[value]})


def _losses(translation: Translation) -> None:
    """label_smoothing (DPO: conservative DPO; after loss_type) and scale_rewards (GRPO) to the command's keys."""
    command = translation.command
    if "label_smoothing" in translation.left and command == "dpo":
        smoothing = translation.take("label_smoothing")
        targets = {"train.label_smoothing": smoothing}
        if (
            isinstance(smoothing, (int, float))
            and smoothing > 0
            and translation.values.get("train.loss", "dpo") == "dpo"
        ):
            targets["train.loss"] = "conservative"  # TRL's sigmoid loss with label smoothing is conservative DPO
        translation.set(["label_smoothing"], targets)
    if "scale_rewards" in translation.left and command in ("grpo", "rloo"):
        scale = translation.take("scale_rewards")
        if scale not in (True, False, "group", "none"):
            raise translation.refuse("scale_rewards", f"{scale!r} has no equivalent; rlhfkit scales by the group's std")
        translation.set(["scale_rewards"], {"algorithm.scale_by_std": scale in (True, "group")})
