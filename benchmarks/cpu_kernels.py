"""The kernel figures behind rlhfkit's CPU choices: matmul speed by precision, one AdamW step, decoding's products.

    .venv/bin/python benchmarks/cpu_kernels.py
    .venv/bin/python benchmarks/cpu_kernels.py --decode-only
    .venv/bin/python benchmarks/cpu_kernels.py --draw-only
    MKL_CBWR=AVX2 .venv/bin/python benchmarks/cpu_kernels.py --head-only

1. fp32 vs bf16 matmul in the layouts a forward and a backward pass use, at a PPO minibatch's
   shape (4 x 91 tokens = 364 rows, hidden 576, MLP 1536). Without AVX-512 (this VM's CPU
   flags show only avx2) bf16 has no native kernel and falls far behind fp32.
2. One AdamW step over all of SmolLM2-135M's parameters: the default per-parameter loop, the
   foreach variant and the fused kernel (what `rlhfkit.training.build_optimizer` uses).
3. The fp32 products of one decoding step of a batch of 16 (16 rows: the MLP's two shapes and the LM
   head over SmolLM2's 49,152 tokens) with MKL's own choice of code path and with MKL_CBWR=AVX2, each
   in a fresh process, since MKL reads the variable when it loads.
4. One decoding step's draw of a token for 16 rows of SmolLM2's 49,152: `torch.multinomial` (what
   `generate` samples with) against the inverse-CDF draw the `hf` engine uses (`DrawByInverseCDF`).
5. (`--head-only`) The LM head's product, x W^T with W the 49,152 x 576 head, at a decoding step's 16
   rows, a minibatch's 132 and a scoring pass's 528: torch's `F.linear` (MKL) against oneDNN's linear
   on the same, unreordered weight (`torch.ops.mkldnn._linear_pointwise`, what torch.compile's CPU
   backend calls), and the backward's g W (MKL); the variants alternated, medians of 7 rounds.
"""

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from rlhfkit.rollout.generation import draw_by_inverse_cdf
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


def fastest_product(rows: int, hidden: int, mlp: int) -> float:
    """FLOP/s of the fastest fp32 layout of `matmul_layouts` at this shape, the median of 5 rounds."""
    rates: dict[str, list[float]] = {name: [] for name in matmul_layouts(rows, hidden, mlp, torch.float32)}
    for _ in range(5):
        for name, product in matmul_layouts(rows, hidden, mlp, torch.float32).items():
            rates[name].append(2 * rows * hidden * mlp / seconds(product))
    return max(statistics.median(values) for values in rates.values())


def decoder_weights(config) -> int:
    """Weights every token is multiplied by in the decoder layers: the attention's four projections and the MLP's
    three (a forward pass does 2 FLOPs per weight per token in them)."""
    hidden, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    queries, keys = heads * head_dim, config.num_key_value_heads * head_dim
    per_layer = hidden * queries + 2 * hidden * keys + queries * hidden + 3 * hidden * config.intermediate_size
    return config.num_hidden_layers * per_layer


def causal_attention_flops(config, tokens: int) -> float:
    """The scores' and the weighted sum's products of one row of `tokens`: each token attends to itself and the
    tokens before it."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    queries = config.num_attention_heads * head_dim
    return config.num_hidden_layers * 2 * 2 * queries * tokens * (tokens + 1) / 2


def parameters_with_gradients() -> list[torch.nn.Parameter]:
    """The embedded model's parameters, each with a small random gradient: what an optimiser step reads."""
    from rlhfkit.config import EMBEDDED_MODEL
    from rlhfkit.models import load_causal_lm, load_tokenizer

    params = list(load_causal_lm(EMBEDDED_MODEL, load_tokenizer(EMBEDDED_MODEL)).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    return params


def adamw_step() -> None:
    params = parameters_with_gradients()
    for variant in ({}, {"foreach": True}, {"fused": True}):
        optimizer = torch.optim.AdamW(params, lr=1e-5, **variant)
        millions = sum(p.numel() for p in params) / 1e6
        print(f"AdamW step, {millions:.1f}M parameters, {variant or 'default'}: {seconds(optimizer.step, 3):.3f} s")


def decode_products() -> None:
    for rows, inner, outer in ((16, 576, 1536), (16, 1536, 576), (16, 576, 49152)):
        x, w = torch.randn(rows, inner), torch.randn(outer, inner)
        took = seconds(lambda x=x, w=w: torch.nn.functional.linear(x, w), 20)
        path = os.environ.get("MKL_CBWR", "MKL's choice")
        print(f"decode product {rows}x{inner} @ {inner}x{outer}, {path}: {took * 1e3:.2f} ms")


def token_draws() -> None:
    probs = torch.softmax(torch.randn(16, 49152), dim=-1)
    print(f"draw 16 x 49152, torch.multinomial: {seconds(lambda: torch.multinomial(probs, 1), 20) * 1e3:.2f} ms")
    print(f"draw 16 x 49152, inverse CDF: {seconds(lambda: draw_by_inverse_cdf(probs), 20) * 1e3:.2f} ms")


def head_products() -> None:
    weight = torch.randn(49152, 576) * 0.02
    for rows in (16, 132, 528):
        x, grad = torch.randn(rows, 576), torch.randn(rows, 49152)
        variants = {
            "F.linear (MKL)": lambda x=x: torch.nn.functional.linear(x, weight),
            "oneDNN linear": lambda x=x: torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], ""),
            "backward g W (MKL)": lambda grad=grad: grad @ weight,
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(7):
            for name, product in variants.items():
                times[name].append(seconds(product))
        medians = ", ".join(f"{name} {sorted(t)[3] * 1e3:.1f} ms" for name, t in times.items())
        print(f"LM head, {rows} rows: {medians}")


def decode_products_by_code_path() -> None:
    for path in (None, "AVX2"):
        env = {key: value for key, value in os.environ.items() if key != "MKL_CBWR"}
        env.update({"MKL_CBWR": path} if path else {})
        subprocess.run([sys.executable, __file__, "--decode-child"], env=env, check=True)


if __name__ == "__main__":
    if "--decode-child" in sys.argv:
        decode_products()
        sys.exit()
    print("CPU flags:", cpu_flags())
    print("torch threads:", torch.get_num_threads())
    if "--draw-only" in sys.argv:
        token_draws()
        sys.exit()
    if "--head-only" in sys.argv:
        print("MKL_CBWR:", os.environ.get("MKL_CBWR", "unset"))
        head_products()
        sys.exit()
    if "--decode-only" not in sys.argv:
        matmul()
        adamw_step()
    decode_products_by_code_path()
    token_draws()
