"""`model.dtype=auto`: the precision measured fastest for this model on this machine.

Which precision is faster on a CPU cannot be read off its flags: on 2-core AVX2-only VMs bf16
autocast ran PPO 14-25x slower than fp32, on an AVX512-BF16 machine of the same family it ran
faster, and the spread between runs was larger than the difference (MEASURED.md). So `auto`
measures: on first use, a short probe times a few decode steps and one forward-backward pass of
the actual model in fp32 and under bf16 autocast, alternately, and picks the faster. The answer is
cached under `$RLHFKIT_CACHE/precision.json`, keyed by CPU model, torch version and the model's
architecture, so later runs start at once; config.yaml records the resolved value. On CUDA,
bf16 wherever the GPU supports it (tensor cores make it the faster precision there).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from rlhfkit.tracking import write_json_atomic

CANDIDATES = ("float32", "bfloat16")
PROBE_ROUNDS = 3
DECISIVE_RATIO = 3.0  # after one round, a precision this many times slower is not measured again


def cache_root() -> Path:
    """Where rlhfkit keeps what it measured of this machine and the models it converted: $RLHFKIT_CACHE."""
    return Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit"))


def read_measurements(path: Path) -> dict:
    """A cache file of machine measurements ($RLHFKIT_CACHE/*.json); empty when missing or damaged (measured again)."""
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def autocast(dtype: str):
    """The forward-pass precision context: bf16 autocast over fp32 weights, or nothing for float32."""
    if dtype == "bfloat16":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(value: str, model: nn.Module, device: torch.device) -> str:
    """`auto` -> the measured (or cached) faster precision for `model` here; float32 / bfloat16 as given."""
    if value != "auto":
        return value
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    key = machine_key(model)
    path = cache_root() / "precision.json"
    cache = read_measurements(path)
    if key not in cache:
        seconds = probe(model)
        cache[key] = {"precision": min(seconds, key=seconds.get), "seconds": seconds}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cache)
        shown = ", ".join(f"{name} {s:.3f} s" for name, s in seconds.items())
        print(f"rlhfkit: precision probe: {shown} -> {cache[key]['precision']} (cached in {path})", file=sys.stderr)
    return cache[key]["precision"]


def machine_key(model: nn.Module) -> str:
    """CPU model, torch version and the model's architecture: what decides which precision is faster."""
    config = getattr(model, "config", None)
    shape = [getattr(config, name, None) for name in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")]
    return f"{cpu_model()} | torch {torch.__version__} | {shape}"


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The CPU's vector-unit flags that decide precision and kernels (avx2, avx512*, amx*), for figures to name."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.is_file() else []
    return " ".join(sorted({flag for flag in flags if flag.startswith(("avx512", "amx", "avx2"))})) or "unknown"


def probe(model: nn.Module, batch: int = 4, prompt_tokens: int = 32, new_tokens: int = 8) -> dict[str, float]:
    """Median seconds of (decode `new_tokens` greedily + one forward-backward) per precision, alternated.

    Greedy decoding on fixed token ids draws nothing from the global random streams, and the
    gradients are cleared afterwards, so probing changes neither the run's RNG nor its weights.
    """
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(1, vocab, (batch, prompt_tokens), generator=torch.Generator().manual_seed(0))
    ids = ids.to(next(model.parameters()).device)
    was_training = model.training
    model.eval()
    times: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for round_index in range(PROBE_ROUNDS):
        for name in CANDIDATES:
            times[name].append(_time_once(model, ids, new_tokens, name))
        first = [t[0] for t in times.values()]
        if round_index == 0 and max(first) > DECISIVE_RATIO * min(first):
            break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: statistics.median(values) for name, values in times.items()}


def _time_once(model: nn.Module, ids: torch.Tensor, new_tokens: int, precision: str) -> float:
    """Seconds for greedy decoding (models that generate) plus one forward-backward (where weights train)."""
    started = time.perf_counter()
    if hasattr(model, "generate"):
        with torch.no_grad(), autocast(precision):
            model.generate(
                input_ids=ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
            )
    with autocast(precision):
        output = model(input_ids=ids)
    output = output.logits if hasattr(output, "logits") else output.last_hidden_state
    if output.requires_grad:
        output.float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)
    return time.perf_counter() - started
