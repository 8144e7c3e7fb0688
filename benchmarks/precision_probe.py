"""What `model.dtype=auto` measures on this machine for the embedded model: the probe's seconds per precision.

    .venv/bin/python benchmarks/precision_probe.py [--rounds 3]

Runs `rlhfkit.runtime.precision.probe` (greedy decode of 8 tokens for 4 prompts of 32 tokens plus one
forward-backward, fp32 and bf16 autocast alternated) on the loaded model, without reading or writing
the cache, and prints the medians, the choice and the CPU flags that matter (avx2, avx512_bf16, amx).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlhfkit.config import EMBEDDED_MODEL
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.runtime import precision


def cpu_flags() -> str:
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return " ".join(sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    args = parser.parse_args()
    model = load_causal_lm(args.model, load_tokenizer(args.model))
    seconds = precision.probe(model)
    choice = min(seconds, key=seconds.get)
    shown = ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items())
    print(f"{precision.cpu_model()} [{cpu_flags()}]: {shown} -> {choice}")


if __name__ == "__main__":
    main()
