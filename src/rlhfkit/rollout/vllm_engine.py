"""`generation.engine=vllm`: a vLLM engine in the training process samples the rollouts (colocated, as TRL's
`vllm_mode="colocate"`), and the policy's current weights are pushed into it before it samples.

The push. vLLM's CPU backend repacks every linear weight for oneDNN once it has loaded (the
`Parameter` it loaded into is replaced by an empty one, so `model.load_weights` finds no
`weight_loader` on it). vLLM's in-place reload (`reload_weights`, the worker method behind RL weight
updates) first restores each layer's parameters as they were before that processing, loads the
new checkpoint-format tensors through the usual loaders, and re-runs the processing, which packs
the new weights. So full fine-tuning and LoRA push alike: a LoRA policy is pushed with its adapter
merged (W + scale·B·A, computed per layer, no copy of the model), and vLLM then samples at the
base model's cost, with no adapter kernels in every decode step. The weights are pushed before
every sampling call (under a second for the embedded model): the trainers' fused AdamW writes the
weights without bumping their `Tensor._version`, so a version check skipped every push after the
first and vLLM sampled the initial policy for the whole run (caught by the demo: its KL estimate
fell to -2.6 as the policy moved away from the samples).

What the engine returns is what the `hf` engine returns, from the same left-padded prompt ids,
sampled with the same temperature, top-k, top-p and length cap, stopping at the tokenizer's EOS
only (vLLM's own EOS and generation_config.json are ignored, as `generate` ignores them here).
It returns no log-probs: PPO's old log-probs come from the training model's own forward pass
(`rollout.scoring`), so the first ratio of an iteration is exactly 1, whatever vLLM's kernels round
differently. Random numbers come from torch's global generator, which vLLM's sampler draws from in
this process: a seeded run samples the same responses again.

On a GPU the same engine runs the CUDA build of vLLM with a share of the GPU's memory, asleep
(weights offloaded, KV cache freed) between rollouts so that training gets the memory back.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from torch import nn

from rlhfkit.checkpoint import rng_state, set_rng_state
from rlhfkit.config import GenerationConfig
from rlhfkit.errors import UserError
from rlhfkit.models.loading import adapter_base, resolve_model_path
from rlhfkit.rollout.generation import GenerationEngine, Samples, samples_from_responses

# Before vLLM is imported: the engine runs in this process (no engine-core subprocess) and leaves the
# process's OpenMP threads unbound. It logs only errors: its warnings here are advice for a server
# (LD_PRELOAD a faster allocator) and, at every push, that rotary tables had no tensors to load.
VLLM_ENVIRONMENT = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_LOGGING_LEVEL": "ERROR",
    # vLLM 0.32 saves a compiled model as an AOT artifact that its CPU backend then fails to load ("'function'
    # object has no attribute 'finalize_loading'"), so every compiled build compiled again (98-125 s here);
    # inductor's own cache, used without AOT, loads: a second build took 19.5 s (RESULTS, session 15)
    "VLLM_USE_AOT_COMPILE": "0",
}
# The CPU default reserves most of the machine's memory for the KV cache; 1 GiB holds SmolLM2-135M's
# fp32 keys and values for ~22,000 tokens (2 · 30 layers · 3 heads · 64 · 4 bytes = 46 kB a token).
KV_CACHE_BYTES = 1 << 30
GPU_MEMORY_SHARE = 0.3  # of a GPU's memory, while awake; training has it all while the engine sleeps
INSTALL_HINT = "pip install 'rlhfkit[vllm]' ('rlhfkit[vllm-cuda]' on a GPU machine)"


def import_vllm():
    """The vllm package, imported on first use (seconds to import; most runs never need it)."""
    for key, value in VLLM_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    try:
        return importlib.import_module("vllm")
    except ImportError as error:
        raise UserError(
            f"generation.engine=vllm needs vLLM, which is not importable here ({error}); "
            f"{INSTALL_HINT}, or set generation.engine=hf"
        ) from None


def drop_kept_tracebacks(package: str = "vllm") -> None:
    """Let go of the call stacks that imported `package`'s modules, so that what they built can be freed.

    vLLM keeps the exceptions of some optional imports as module globals (torchcodec's, where it is
    missing). An exception's traceback holds the frames of the whole call stack that ran the import,
    and a frame keeps its locals after it returns: the engine built in that stack (weights, KV cache)
    stayed reachable for the life of the process. Measured with the embedded model (RESULTS, session 13):
    after an engine was built, probed and unloaded, RSS stayed at 3.0 GiB; with these dropped, 1.95 GiB.
    """
    for name, module in list(sys.modules.items()):
        if module is not None and (name == package or name.startswith(f"{package}.")):
            for value in list(getattr(module, "__dict__", {}).values()):
                if isinstance(value, BaseException):
                    value.__traceback__ = None


def plain_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of `model` as a plain transformers checkpoint: LoRA deltas merged in, adapter tensors left out."""
    if not isinstance(model, PeftModel):
        yield from ((name, tensor.detach()) for name, tensor in model.state_dict().items())
        return
    base = model.get_base_model()
    adapted = {name: module for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    for name, tensor in base.state_dict().items():
        module_name, _, leaf = name.rpartition(".")
        if ".lora_" in name:
            continue
        if module_name.endswith(".base_layer"):
            module_name = module_name.removesuffix(".base_layer")
            layer = adapted[module_name]
            if leaf == "weight":
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        tensor = tensor + layer.get_delta_weight(adapter)
        yield f"{module_name}.{leaf}", tensor.detach()


def base_model_directory(model_name: str) -> str:
    """The model files vLLM loads: model.name's directory, or for an adapter directory its base's
    (the merged policy is pushed before the first sample)."""
    path = resolve_model_path(model_name)
    base = adapter_base(model_name, path)
    return path if base is None else base_model_directory(base)


@contextlib.contextmanager
def colocated() -> Iterator[None]:
    """Build vLLM without it changing the training process: it reseeds the global RNGs, sets torch's
    thread count, replaces `torch.set_num_threads` with a no-op and freezes the garbage collector's
    objects (a server's start-up; here the trainer's garbage would never be collected); all four are
    put back, and the import-time tracebacks that would keep the builder's frames are dropped."""
    state, threads, set_threads = rng_state(), torch.get_num_threads(), torch.set_num_threads
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        set_rng_state(state)
        gc.unfreeze()
        drop_kept_tracebacks()


class VLLMEngine(GenerationEngine):
    """One vLLM engine per process and model; it samples whichever policy it is handed, pushed first."""

    name = "vllm"
    _shared: dict[tuple[str, str], VLLMEngine] = {}

    def __init__(self, llm, vllm, sleeps: bool):
        self.llm, self.vllm, self.sleeps = llm, vllm, sleeps

    @classmethod
    def load(cls, model_name: str, precision: str, execution: str = "auto") -> VLLMEngine:
        """The process's engine for model.name in `precision`, built on first use; UserError if vLLM cannot run it.

        `execution` is generation.vllm_execution: eager, compiled, or auto (compiled on a GPU only).
        """
        vllm = import_vllm()
        directory = base_model_directory(model_name)
        compiled = cls.compiles(execution)
        key = (str(Path(directory).resolve()), precision, compiled)
        if key not in cls._shared:
            cls._shared[key] = cls._build(vllm, model_name, directory, precision, compiled)
        return cls._shared[key]

    @staticmethod
    def compiles(execution: str) -> bool:
        """Whether generation.vllm_execution compiles the model here (auto: on a GPU)."""
        return torch.cuda.is_available() if execution == "auto" else execution == "compiled"

    def unload(self) -> None:
        """Let this engine go (its weights and KV cache with it) once nothing else holds it: `auto` chose `hf`."""
        for key, engine in list(self._shared.items()):
            if engine is self:
                del self._shared[key]

    @classmethod
    def _build(cls, vllm, model_name: str, directory: str, precision: str, compiled: bool) -> VLLMEngine:
        on_gpu = torch.cuda.is_available()
        memory = {"gpu_memory_utilization": GPU_MEMORY_SHARE} if on_gpu else {"kv_cache_memory_bytes": KV_CACHE_BYTES}
        with colocated():
            try:
                llm = vllm.LLM(
                    model=directory, dtype=precision, skip_tokenizer_init=True, generation_config="vllm",
                    enforce_eager=not compiled, enable_sleep_mode=on_gpu, use_tqdm_on_load=False, **memory,
                )  # fmt: skip
                # a model vLLM loads may still fail on its first step (e.g. a head size its kernels lack)
                llm.generate([{"prompt_token_ids": [0]}], vllm.SamplingParams(max_tokens=1), use_tqdm=False)
            except Exception as error:  # whatever vLLM raised, the user's fix is the same
                reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                raise UserError(
                    f"model.name {model_name}: vLLM cannot run this model ({reason}); set generation.engine=hf"
                ) from None
        engine = cls(llm, vllm, sleeps=on_gpu)
        engine._sleep()
        return engine

    def push(self, model: nn.Module) -> None:
        """Load `model`'s current weights into the engine."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": plain_weights(model)})
        self.llm.reset_prefix_cache()  # cached prompt keys and values were computed with the old weights

    @torch.no_grad()
    def sample_tokens(
        self,
        model: nn.Module,
        query_ids: torch.Tensor,
        query_mask: torch.Tensor,
        config: GenerationConfig,
        eos_token_id: int,
        pad_token_id: int,
        *hf_only_settings: object,
    ) -> Samples:
        """Samples of `model` for left-padded (B, P) prompt ids; logprobs and hidden are None (see the module doc).

        `hf_only_settings` (the decoding precision, keep_scores, keep_hidden of the `hf` engine) do not apply:
        vLLM returns tokens only, and the log-probs PPO needs come from the training model's own forward pass.
        """
        params = self.vllm.SamplingParams(
            temperature=config.temperature, top_k=config.top_k, top_p=config.top_p, max_tokens=config.max_new_tokens,
            ignore_eos=True, stop_token_ids=[eos_token_id], detokenize=False,
        )  # fmt: skip
        prompts = [{"prompt_token_ids": ids[mask].tolist()} for ids, mask in zip(query_ids.cpu(), query_mask.cpu())]
        with self._awake():
            self.push(model)
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        responses = [list(output.outputs[0].token_ids) for output in outputs]
        response_ids = torch.full((len(responses), max(map(len, responses))), pad_token_id, dtype=torch.long)
        for row, tokens in enumerate(responses):
            response_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return samples_from_responses(
            query_ids, query_mask, response_ids.to(query_ids.device), eos_token_id, pad_token_id
        )

    @contextlib.contextmanager
    def _awake(self) -> Iterator[None]:
        if self.sleeps:
            self.llm.wake_up()
        try:
            yield
        finally:
            self._sleep()

    def _sleep(self) -> None:
        if self.sleeps:
            self.llm.sleep(level=1)
