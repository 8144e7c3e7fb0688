"""Typed configuration: nested dataclasses, a YAML file, `--set a.b=c` overrides.

Every command has one top-level dataclass made of per-concern dataclasses
(`ModelConfig`, `GenerationConfig`, ...). Each field carries a one-line
`doc` in its metadata; `--help` of a command lists them. Values from YAML and
`--set` are parsed as YAML scalars and checked against the field's type
(`rlhfkit.config_tree` builds the dataclass), so a typo in a key or a string
where a number belongs fails before any heavy work, naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from rlhfkit.config_tree import build_config, merge_values, set_dotted
from rlhfkit.errors import UserError, read_text
from rlhfkit.trl_keys import CONFIG_COMMANDS, MappedFile, from_trl, is_trl_file

T = TypeVar("T")

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
SEED_LIMIT = 2**32  # NumPy accepts seeds in [0, 2**32): the range a configured seed must be in


def field(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a one-line doc (shown by `--help`)."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


# ---------------------------------------------------------------------------
# Shared per-concern sections
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class LoRAConfig:
    enabled: bool = field(
        False, "train LoRA adapters instead of all weights (the reference is then the base, adapter off)"
    )
    r: int = field(16, "LoRA rank")
    alpha: int = field(32, "LoRA scaling numerator (scale = alpha / r)")
    dropout: float = field(0.0, "dropout on the adapter input (kept 0 for RL: dropout breaks the PPO ratio)")
    target_modules: list[str] = field(
        factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        doc="module names that get adapters",
    )
    top_layers: int = field(
        0,
        "adapt only the last N transformer layers (0: all); backward stops below them, "
        "and PPO updates start from the frozen layers' output",
    )

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise UserError(f"lora.r must be positive, got {self.r}")
        if self.top_layers < 0:
            raise UserError(f"lora.top_layers must be >= 0 (0: all layers), got {self.top_layers}")


PRECISIONS = ("auto", "float32", "bfloat16")


def check_precision(value: str, key: str) -> str:
    """auto, float32 or bfloat16; anything else refused. `auto` is resolved by measurement once the model
    has loaded (`rlhfkit.runtime.precision`), and config.yaml records the resolved value."""
    if value not in PRECISIONS:
        raise UserError(f"{key} must be auto, float32 or bfloat16, got {value!r}")
    return value


@dataclasses.dataclass
class ModelConfig:
    name: str = field(EMBEDDED_MODEL, "embedded:smollm2-135m-instruct, a local directory, a hub id or a .gguf path")
    dtype: str = field(
        "auto",
        "compute precision of forward passes: auto (the faster of the two, measured on this machine for this model "
        "and cached), float32, or bfloat16 (autocast over fp32 weights; log-probs and losses stay fp32)",
    )
    lora: LoRAConfig = field(factory=LoRAConfig, doc="LoRA adapters")

    def __post_init__(self) -> None:
        self.dtype = check_precision(self.dtype, "model.dtype")


GENERATION_ENGINES = ("auto", "hf", "vllm")
VLLM_EXECUTIONS = ("auto", "eager", "compiled")


@dataclasses.dataclass
class GenerationConfig:
    max_new_tokens: int = field(48, "response length cap in tokens")
    temperature: float = field(1.0, "sampling temperature (log-probs are taken under the same temperature)")
    top_k: int = field(0, "sample from the k most likely tokens (0: all)")
    top_p: float = field(1.0, "nucleus sampling mass (1.0: all)")
    engine: str = field(
        "auto",
        "what samples: hf (transformers generate), vllm (a vLLM engine in this process, the policy's weights "
        "pushed after every update; pip install 'rlhfkit[vllm]'), or auto (vllm where installed and measured "
        "faster for this model on this machine, else hf)",
    )
    vllm_execution: str = field(
        "auto",
        "how the vllm engine runs the model: compiled (torch.compile; CUDA graphs on a GPU), eager, or auto "
        "(compiled on a GPU; eager on a CPU, where the compile took 60 s the first time on a machine and 20 s once "
        "cached, and sampled 1.13-1.22x faster than eager at a batch of 16: RESULTS, session 15)",
    )

    def __post_init__(self) -> None:
        if self.engine not in GENERATION_ENGINES:
            raise UserError(f"generation.engine must be auto, hf or vllm, got {self.engine!r}")
        if self.vllm_execution not in VLLM_EXECUTIONS:
            raise UserError(f"generation.vllm_execution must be auto, eager or compiled, got {self.vllm_execution!r}")
        if self.max_new_tokens <= 0:
            raise UserError(f"generation.max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise UserError(f"generation.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"generation.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"generation.top_k must be >= 0, got {self.top_k}")


REWARD_KINDS = ("sentiment", "rouge", "length", "function", "model", "verifiable")


@dataclasses.dataclass
class RewardConfig:
    kind: str = field(
        "sentiment",
        "reward source: sentiment, rouge, length, function, model, or verifiable (1 when the final answer "
        "matches the prompt record's reference, else 0)",
    )
    model: str = field("", "reward-model directory (an `rlhfkit rm` final/), for kind=model")
    function: str = field("", "package.module:function with signature (prompts, responses, records) -> scores")
    target_length: int = field(
        20, "for kind=length: the response length in words that scores 0; each word away costs 1/target"
    )
    batch_size: int = field(16, "responses per reward-model forward pass")
    tolerance: float = field(
        1e-6, "for kind=verifiable: a numeric answer counts within tolerance x max(1, |reference|)"
    )

    def __post_init__(self) -> None:
        if self.tolerance < 0:
            raise UserError(f"reward.tolerance must be >= 0, got {self.tolerance}")
        if self.kind not in REWARD_KINDS:
            raise UserError(f"reward.kind must be one of {', '.join(REWARD_KINDS)}, got {self.kind!r}")
        if self.kind == "function" and ":" not in self.function:
            raise UserError(f"reward.function must look like package.module:function, got {self.function!r}")
        if self.kind == "model" and not self.model:
            raise UserError("reward.kind=model needs reward.model=<directory of an rlhfkit rm run>/final")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file of configuration keys; unreadable, undecodable or malformed files are one-line UserErrors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} {'is not a file' if path.exists() else 'does not exist'}")
    text = read_text(path)  # UTF-8 (a byte-order mark is fine); other bytes name the line and offset
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark, position = getattr(error, "problem_mark", None), getattr(error, "position", None)
        line = mark.line + 1 if mark is not None else text.count("\n", 0, position) + 1 if position else None
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"config file {path}{f':{line}' if line else ''} is not valid YAML: {problem}") from None
    except RecursionError:
        raise UserError(f"config file {path} is nested too deeply to be a configuration") from None
    if not isinstance(loaded, dict):
        raise UserError(f"config file {path} must hold a mapping of keys, got {type(loaded).__name__}")
    return loaded


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
    command: str = "",
) -> T:
    """Build `cls` from defaults, then `base`, then the YAML file at `path`, then `key.sub=value` overrides.

    A flat TRL-style file at `path` is translated for `command` (`rlhfkit.trl_keys`), which is named
    in one line once the configuration is built.
    """
    values: dict[str, Any] = dict(base or {})
    mapped = None
    if path is not None:
        loaded = load_yaml_mapping(path)
        if is_trl_file(loaded, {f.name for f in dataclasses.fields(cls)}):  # type: ignore[arg-type]
            mapped = trl_file_values(loaded, cls, command, str(path), values)
            loaded = mapped.values
        values = merge_values(values, loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key.sub=value, got {item!r}")
        try:
            parsed = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            parsed = raw
        tree: dict[str, Any] = {}
        set_dotted(tree, key.strip(), parsed)
        values = merge_values(values, tree)
    config = build_config(cls, values)
    if isinstance(getattr(config, "seed", 0), int):
        check_seed(config.seed)
    if mapped is not None:
        mapped.announce(os.environ)
    return config


def trl_file_values(loaded: dict[str, Any], cls: type, command: str, source: str, base: dict[str, Any]) -> MappedFile:
    """`from_trl` for this command (the Python API names none: the config class tells), with its group size."""
    group_size = base.get("algorithm", {}).get("group_size", 0) if isinstance(base.get("algorithm"), dict) else 0
    sections = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return from_trl(loaded, sections, command or CONFIG_COMMANDS.get(cls.__name__, ""), source, group_size)


NAMED = object()  # the value of a --set key: named on the command line, so meant, whatever its value


def user_entries(config_file: str | None, overrides: list[str]) -> list[tuple[str, str, Any]]:
    """(source, dotted key, value) of every key the user named: in the YAML file, then by --set (value NAMED)."""
    entries = []
    if config_file:
        entries += [(f"config file {config_file}", key, value) for key, value in _file_entries(Path(config_file))]
    return entries + [("--set", item.partition("=")[0].strip(), NAMED) for item in overrides]


def refuse_old_keys(config_file: str | None, overrides: list[str], renamed: dict[str, tuple[str, str]]) -> None:
    """UserError naming the new key for any key of `renamed` (old name -> (new name, what else changed)) in
    `overrides` (--set) or the YAML file `config_file`: a command's old vocabulary answered with its new one."""
    for source, key, _ in user_entries(config_file, overrides):
        if key in renamed:
            new, note = renamed[key]
            raise UserError(f"{source}: config key {key!r} is now {new!r}" + (f" ({note})" if note else ""))


def _file_entries(path: Path) -> list[tuple[str, Any]]:
    """(dotted key, value) of a YAML file, sections too (none where it does not parse: `load_config` says why)."""
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        return []
    return _dotted_entries(tree) if isinstance(tree, dict) else []


def _dotted_entries(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    entries = []
    for key, value in tree.items():
        entries.append((f"{prefix}{key}", value))
        if isinstance(value, dict):
            entries += _dotted_entries(value, f"{prefix}{key}.")
    return entries


def check_seed(seed: int, key: str = "seed") -> int:
    """A configured seed, refused unless every consumer (Python, NumPy, torch, Gymnasium) accepts it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise UserError(f"{key} must be an integer in 0..{SEED_LIMIT - 1}, got {seed!r}")
    return seed


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def field_docs(config: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, doc) for every leaf field of a default-built config instance, for `--help`.

    Read from an instance, not the class, so a section built by a factory (SFT's optimiser with its
    own learning rate) shows the value the command really starts from.
    """
    rows: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            rows += field_docs(value, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, value, f.metadata.get("doc", "")))
    return rows


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, resume: bool = True) -> None:
    """The options every training command shares: --config, --set, --out, --resume; keys listed in --help."""
    keys = "\n".join(f"  {key} = {default!r}\n      {doc}" for key, default, doc in field_docs(cls()))
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "configuration keys (--set key=value):\n" + keys
    parser.add_argument("--config", help="a YAML file of configuration keys")
    parser.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override keys, e.g. --set train.steps=20 seed=1",
    )
    parser.add_argument("--out", help="output directory (same as --set out=DIR)")
    if resume:
        parser.add_argument(
            "--resume", action="store_true", help="continue from the latest checkpoint in the output directory"
        )


def config_from_args(cls: type[T], args: argparse.Namespace, base: dict[str, Any] | None = None) -> T:
    overrides = list(args.set)
    if getattr(args, "out", None):
        overrides.append(f"out={args.out}")
    return load_config(cls, args.config, overrides, base=base, command=getattr(args, "command", ""))
