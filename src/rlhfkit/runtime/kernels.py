"""MKL's code path for torch's CPU matrix products, chosen by measurement (`MKL_CBWR`).

torch's x86 CPU build multiplies fp32 matrices with Intel MKL, and MKL picks its code path from
the CPU it finds. On the AVX2-only AMD EPYC VMs of this project it picked a slower one than its
AVX2 path: a decoding step's LM-head product (16 x 576 @ 576 x 49152) took 53 ms against 34 ms
with `MKL_CBWR=AVX2`, and a whole GRPO iteration about 8 % less (benchmarks/RESULTS.md). On a CPU
with AVX-512 the same setting would hold MKL back to AVX2. So neither value is right everywhere, and
which one is faster cannot be read off the flags: `choose_mkl_code_path` times linear layers of the
shapes decoding and a minibatch multiply (x W^T, as models compute them: a plain x @ W measured
otherwise here), in child processes (MKL reads the variable once, at its first product), with and
without `MKL_CBWR=AVX2`, alternately, and keeps AVX2 where it is clearly faster. The answer is cached
under `$RLHFKIT_CACHE/mkl_code_path.json`, keyed by CPU model and torch version.

A `MKL_CBWR` the user set is kept as it is. The choice only takes effect in a process that has not
multiplied a matrix yet: the `Runtime` makes it before any model loads.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import MutableMapping

import torch

VARIABLE = "MKL_CBWR"
CANDIDATE = "AVX2"
CLEAR_WIN = 0.9  # the candidate's products must take at most this share of the time of MKL's own choice's
ROUNDS = 2
# (rows, inputs, outputs) of a linear layer on SmolLM2-135M's widths: a decoding step's LM head and MLP
# (up, down) for a batch of 16, and a minibatch's MLP and LM head (4 sequences of ~73 tokens, 33 scored)
SHAPES = ((16, 576, 49152), (16, 576, 1536), (16, 1536, 576), (292, 576, 1536), (292, 1536, 576), (132, 576, 49152))


def choose_mkl_code_path(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set MKL_CBWR=AVX2 where it measured clearly faster here (cached); returns the value in effect.

    Nothing is measured where a GPU runs the models (the CPU's products do not matter there). Where the
    timing child fails, the run goes on with MKL's own choice and says so; nothing is cached, so the
    next run measures again.
    """
    if VARIABLE in environ or not mkl_is_used() or torch.cuda.is_available():
        return environ.get(VARIABLE)
    # lazy: the child process that times the products runs this file alone, with torch only
    from rlhfkit.runtime.precision import cache_root, cpu_model, read_measurements  # noqa: PLC0415
    from rlhfkit.tracking import write_json_atomic  # noqa: PLC0415

    key = f"{cpu_model()} | torch {torch.__version__}"
    path = cache_root() / "mkl_code_path.json"
    cache = read_measurements(path)
    if key not in cache:
        try:
            seconds = measure(environ)
        except ProbeFailed as failure:
            print(f"rlhfkit: warning: MKL code path probe failed ({failure}); keeping MKL's own", file=sys.stderr)
            return environ.get(VARIABLE)
        ratio = time_ratio(seconds[CANDIDATE], seconds["default"])
        cache[key] = {VARIABLE: CANDIDATE if ratio <= CLEAR_WIN else None, "time_ratio": ratio, "seconds": seconds}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cache)
        chosen = f"{VARIABLE}={CANDIDATE}" if ratio <= CLEAR_WIN else "MKL's own"
        print(
            f"rlhfkit: MKL code path probe: {VARIABLE}={CANDIDATE} takes {ratio:.2f}x the time of MKL's own choice "
            f"-> {chosen} (cached in {path})",
            file=sys.stderr,
        )
    if cache[key][VARIABLE] is not None:
        environ[VARIABLE] = cache[key][VARIABLE]
    return environ.get(VARIABLE)


def time_ratio(candidate: list[float], default: list[float]) -> float:
    """The geometric mean over SHAPES of candidate / default seconds: each kind of product counts alike."""
    return statistics.geometric_mean(c / d for c, d in zip(candidate, default, strict=True))


def mkl_is_used() -> bool:
    """torch multiplies CPU matrices with MKL (x86 builds; not ARM or macOS)."""
    return torch.backends.mkl.is_available()


class ProbeFailed(Exception):
    """A timing child exited with an error or printed no timings."""


def measure(environ: MutableMapping[str, str]) -> dict[str, list[float]]:
    """Per shape, the median seconds with MKL's own choice and with MKL_CBWR=AVX2, child processes alternated."""
    base = {**environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    settings = {"default": base, CANDIDATE: {**base, VARIABLE: CANDIDATE}}
    times: dict[str, list[list[float]]] = {name: [] for name in settings}
    for _ in range(ROUNDS):
        for name, env in settings.items():
            # -P: the child's sys.path does not start with this directory (whose modules would shadow others)
            child = subprocess.run([sys.executable, "-P", __file__], env=env, capture_output=True, text=True)
            times[name].append(child_timings(child))
    return {name: [statistics.median(shape) for shape in zip(*rounds)] for name, rounds in times.items()}


def child_timings(child: subprocess.CompletedProcess) -> list[float]:
    """The timing child's seconds per shape, or ProbeFailed naming its exit status and last error line."""
    try:
        seconds = json.loads(child.stdout) if child.returncode == 0 else None
    except ValueError:
        seconds = None
    if not isinstance(seconds, list) or len(seconds) != len(SHAPES):
        last_line = (child.stderr.strip().splitlines() or ["no error output"])[-1]
        raise ProbeFailed(f"timing process exit status {child.returncode}: {last_line}")
    return seconds


def time_products(repeats: int = 5) -> list[float]:
    """Per shape of SHAPES, the median seconds of one product x W^T as a linear layer computes it (in the child)."""
    seconds = []
    for rows, inputs, outputs in SHAPES:
        x, weight = torch.randn(rows, inputs), torch.randn(outputs, inputs)
        torch.nn.functional.linear(x, weight)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.nn.functional.linear(x, weight)
            times.append(time.perf_counter() - started)
        seconds.append(statistics.median(times))
    return seconds


if __name__ == "__main__":
    print(json.dumps(time_products()))
