"""The two kernel figures behind rlhfkit's CPU choices: matmul speed by precision, and one AdamW step.

    .venv/bin/python benchmarks/kernels.py

1. fp32 vs bf16 matmul in the layouts a forward and a backward pass use, at a PPO minibatch's
   shape (4 x 91 tokens = 364 rows, hidden 576, MLP 1536). Without AVX-512 (this VM's CPU
   flags show only avx2) bf16 has no native kernel and falls far behind fp32.
2. One AdamW step over all of SmolLM2-135M's parameters: the default per-parameter loop, the
   foreach variant and the fused kernel (what `rlhfkit.training.build_optimizer` uses).
"""

import time
from collections.abc import Callable

import torch

from rlhfkit.runtime.precision import cpu_flags


def seconds(fn, repeats: int = 5) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def matmul() -> None:
    rows, hidden, mlp = 364, 576, 1536
    flops = 2 * rows * hidden * mlp
    for dtype in (torch.float32, torch.bfloat16):
        for name, fn in matmul_layouts(rows, hidden, mlp, dtype).items():
            print(f"matmul {str(dtype).removeprefix('torch.'):>8} {name:<26} {flops / seconds(fn) / 1e9:7.1f} GFLOP/s")


def matmul_layouts(rows: int, hidden: int, mlp: int, dtype: torch.dtype) -> dict[str, Callable[[], torch.Tensor]]:
    """The three products of one linear layer's forward and backward, on fresh tensors of `dtype`."""
    x, w = torch.randn(rows, hidden, dtype=dtype), torch.randn(hidden, mlp, dtype=dtype)
    # nn.Linear keeps its weight as (out, in): the forward multiplies by its transpose
    w_t = torch.randn(mlp, hidden, dtype=dtype).t()
    grad = torch.randn(rows, mlp, dtype=dtype)
    return {
        "x @ w": lambda: x @ w,
        "x @ W.t (forward)": lambda: x @ w_t,
        "grad.t @ x (weight grad)": lambda: grad.t() @ x,
    }


def adamw_step() -> None:
    from rlhfkit.config import EMBEDDED_MODEL
    from rlhfkit.models import load_causal_lm, load_tokenizer

    params = list(load_causal_lm(EMBEDDED_MODEL, load_tokenizer(EMBEDDED_MODEL)).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    for variant in ({}, {"foreach": True}, {"fused": True}):
        optimizer = torch.optim.AdamW(params, lr=1e-5, **variant)
        millions = sum(p.numel() for p in params) / 1e6
        print(f"AdamW step, {millions:.1f}M parameters, {variant or 'default'}: {seconds(optimizer.step, 3):.3f} s")


if __name__ == "__main__":
    print("CPU flags:", cpu_flags())
    print("torch threads:", torch.get_num_threads())
    matmul()
    adamw_step()
