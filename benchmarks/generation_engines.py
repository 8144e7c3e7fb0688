"""New tokens per second of the two generation engines, `hf` (transformers `generate`) and `vllm`.

    .venv/bin/python benchmarks/generation_engines.py                      # the embedded model, both engines
    .venv/bin/python benchmarks/generation_engines.py --batches 2 --new-tokens 4 --rounds 1 --model DIR  # smoke

Every (batch, new tokens) cell samples the same prompts (chat prompts from the package's prompt
file, repeated to the batch size) at temperature 1 with each engine in turn, alternated for
`--rounds` rounds, and reports the median. Beside the engines, plain `model.generate(do_sample=True)`
on the same prompt ids: transformers' sampler with nothing of rlhfkit's around it, the yardstick of
issue 13's 3x goal (the `hf` engine is `generate` with a shared prompt cache and its own token draw).
The machine's weights-streaming limit stands beside them: a decode step reads every weight once, so
one step cannot be faster than model bytes / memory bandwidth, and a batch of B makes B new tokens
per step: limit = B · bandwidth / model bytes. The bandwidth is measured here with a large tensor copy
(read + write bytes / seconds). Also the seconds of one weight push into the engine (after a change to
the policy's weights).
"""

import argparse
import statistics
import time

import torch

from rlhfkit.assets import PROMPTS
from rlhfkit.config import EMBEDDED_MODEL, GenerationConfig
from rlhfkit.data import format_prompt, load_records
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.rollout.generation import HF_ENGINE, response_mask_from_ids, tokenize_prompts
from rlhfkit.rollout.vllm_engine import VLLMEngine
from rlhfkit.runtime.precision import cpu_flags


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes per second of a large tensor copy (each byte read once and written once)."""
    source = torch.empty(megabytes << 20, dtype=torch.uint8).fill_(1)
    target = torch.empty_like(source)
    target.copy_(source)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        target.copy_(source)
        times.append(time.perf_counter() - started)
    return 2 * source.numel() / statistics.median(times)


def new_tokens_per_second(engine, model, tokenizer, texts, config, precision) -> float:
    started = time.perf_counter()
    samples = engine.sample(model, tokenizer, texts, config, precision)
    return float(samples.response_mask.sum()) / (time.perf_counter() - started)


@torch.no_grad()
def plain_generate_per_second(model, tokenizer, texts, config) -> float:
    """New tokens/s of transformers' own sampling loop, nothing of rlhfkit's around it."""
    query_ids, query_mask = tokenize_prompts(tokenizer, texts)
    started = time.perf_counter()
    out = model.generate(
        input_ids=query_ids, attention_mask=query_mask.long(), do_sample=True, temperature=config.temperature,
        top_k=0, max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    response_mask, _ = response_mask_from_ids(out[:, query_ids.shape[1] :], tokenizer.eos_token_id)
    return float(response_mask.sum()) / seconds


def push_seconds(engine: VLLMEngine, model) -> float:
    with torch.no_grad():
        next(model.parameters()).add_(0.0)  # an in-place write: the weights count as changed
    started = time.perf_counter()
    engine.push(model)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--new-tokens", default="32,128")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    print("CPU flags:", cpu_flags(), "| torch threads:", torch.get_num_threads(), "| precision:", args.precision)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tokenizer).eval()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if args.precision == "bfloat16":
        model_bytes //= 2  # vLLM holds bf16 weights; hf decodes from the fp32 ones (the limit is vLLM's)
    bandwidth = memory_bandwidth()
    print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s, model {model_bytes / 1e6:.0f} MB")
    engine = VLLMEngine.load(args.model, args.precision)
    print(f"weight push: {push_seconds(engine, model):.2f} s")
    records = load_records(str(PROMPTS), "prompts")
    print(
        "| batch | new tokens | plain generate tok/s | hf tok/s | vllm tok/s | vllm / hf | vllm / plain | limit tok/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch in map(int, args.batches.split(",")):
        texts = [format_prompt(tokenizer, records[i % len(records)]) for i in range(batch)]
        for new_tokens in map(int, args.new_tokens.split(",")):
            config = GenerationConfig(max_new_tokens=new_tokens)
            rates = {"plain": [], "hf": [], "vllm": []}
            for _ in range(args.rounds):
                rates["plain"].append(plain_generate_per_second(model, tokenizer, texts, config))
                for name, candidate in (("hf", HF_ENGINE), ("vllm", engine)):
                    rates[name].append(
                        new_tokens_per_second(candidate, model, tokenizer, texts, config, args.precision)
                    )
            plain, hf, vllm = (statistics.median(rates[name]) for name in ("plain", "hf", "vllm"))
            limit = batch * bandwidth / model_bytes
            ratios = f"{vllm / hf:.2f} | {vllm / plain:.2f}"
            print(f"| {batch} | {new_tokens} | {plain:.1f} | {hf:.1f} | {vllm:.1f} | {ratios} | {limit:.0f} |")


if __name__ == "__main__":
    main()
