"""New tokens per second of the generation engines, `hf` (transformers `generate`) and `vllm` (eager or compiled).

    .venv/bin/python benchmarks/generation_engines.py                      # the embedded model, both engines
    .venv/bin/python benchmarks/generation_engines.py --compiled           # and vLLM compiled (its build first)
    .venv/bin/python benchmarks/generation_engines.py --batches 2 --new-tokens 4 --rounds 1 --model DIR  # smoke

Every (batch, new tokens) cell samples the same prompts (chat prompts from the package's prompt
file, repeated to the batch size) at temperature 1 with each engine in turn, alternated for
`--rounds` rounds, and reports the median. Beside the engines, plain `model.generate(do_sample=True)`
on the same prompt ids: transformers' sampler with nothing of rlhfkit's around it, the yardstick of
issue 13's 3x goal (the `hf` engine is `generate` with a shared prompt cache and its own token draw).
The machine's floor stands beside them: the most new tokens/s any sampler of this model can reach here.
Sampling B prompts is a prefill pass over their tokens, then one decode step per further new token. The
prefill's products (2 FLOPs per decoder weight per prompt token, the causal attention, the LM head on
each row's last token) take at least their FLOPs / the fastest fp32 product measured here (as
`benchmarks/cpu_kernels.py` times them, at the prefill's shape). A decode step reads every weight once
and multiplies B rows by the decoder and the head, so it takes at least the longer of model bytes /
memory bandwidth and its FLOPs / that same rate (its attention over the cache is left out, so the floor
stays a floor). The bandwidth is measured here with a large tensor copy (read + write bytes / seconds).
"floor / plain" is therefore the most any sampler could gain here over plain `generate`. Also the seconds
of each vLLM engine's build and of one weight push into it (after a change to the policy's weights).
"""

import argparse
import statistics
import time

import torch

from cpu_kernels import causal_attention_flops, decoder_weights, fastest_product
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
def plain_generate_per_second(model, tokenizer, query_ids, query_mask, config) -> float:
    """New tokens/s of transformers' own sampling loop on left-padded prompt ids, nothing of rlhfkit's around it."""
    started = time.perf_counter()
    out = model.generate(
        input_ids=query_ids, attention_mask=query_mask.long(), do_sample=True, temperature=config.temperature,
        top_k=0, max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    response_mask, _ = response_mask_from_ids(out[:, query_ids.shape[1] :], tokenizer.eos_token_id)
    return float(response_mask.sum()) / seconds


def floor_tokens_per_second(config, prompt_lengths: list[int], new_tokens: int, model_bytes: int, bandwidth: float,
                            product_rate: float) -> float:  # fmt: skip
    """New tokens/s if the prefill and every decode step ran at this machine's limits (see the module's doc)."""
    weights, head = decoder_weights(config), config.vocab_size * config.hidden_size
    batch = len(prompt_lengths)
    prefill = sum(2 * weights * n + causal_attention_flops(config, n) for n in prompt_lengths) + 2 * head * batch
    step = max(model_bytes / bandwidth, 2 * batch * (weights + head) / product_rate)
    return batch * new_tokens / (prefill / product_rate + (new_tokens - 1) * step)


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
    parser.add_argument("--compiled", action="store_true", help="also vLLM compiled (generation.vllm_execution)")
    args = parser.parse_args()

    print("CPU flags:", cpu_flags(), "| torch threads:", torch.get_num_threads(), "| precision:", args.precision)
    tokenizer = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tokenizer).eval()
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if args.precision == "bfloat16":
        model_bytes //= 2  # vLLM holds bf16 weights; hf decodes from the fp32 ones (the limit is vLLM's)
    bandwidth = memory_bandwidth()
    print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s, model {model_bytes / 1e6:.0f} MB")
    engines = {"hf": HF_ENGINE}
    for execution in ("eager", "compiled") if args.compiled else ("eager",):
        started = time.perf_counter()
        engines[f"vllm {execution}"] = VLLMEngine.load(args.model, args.precision, execution)
        print(f"vllm {execution}: build {time.perf_counter() - started:.1f} s, "
              f"weight push {push_seconds(engines[f'vllm {execution}'], model):.2f} s")  # fmt: skip
    vllm_names = [name for name in engines if name != "hf"]
    records = load_records(str(PROMPTS), "prompts")
    batches = {}  # batch size -> (texts, their ids, mask and lengths, the fastest fp32 product at the prefill's shape)
    for batch in map(int, args.batches.split(",")):
        texts = [format_prompt(tokenizer, records[i % len(records)]) for i in range(batch)]
        query_ids, query_mask = tokenize_prompts(tokenizer, texts)
        lengths = query_mask.sum(dim=1).tolist()
        rate = fastest_product(sum(lengths), model.config.hidden_size, model.config.intermediate_size)
        batches[batch] = texts, query_ids, query_mask, lengths, rate
        print(
            f"batch {batch}: {sum(lengths)} prompt tokens, fastest fp32 product at that shape {rate / 1e9:.0f} GFLOP/s"
        )
    columns = ["batch", "new tokens", "plain generate", *engines, *(f"{name} / plain" for name in vllm_names)]
    print(f"new tokens/s; the floor is this machine's most\n| {' | '.join([*columns, 'floor', 'floor / plain'])} |")
    print("|" + " --- |" * (len(columns) + 2))
    for batch, (texts, query_ids, query_mask, lengths, product_rate) in batches.items():
        for new_tokens in map(int, args.new_tokens.split(",")):
            config = GenerationConfig(max_new_tokens=new_tokens)
            rates = {name: [] for name in ("plain", *engines)}
            for _ in range(args.rounds):
                rates["plain"].append(plain_generate_per_second(model, tokenizer, query_ids, query_mask, config))
                for name, candidate in engines.items():
                    rates[name].append(
                        new_tokens_per_second(candidate, model, tokenizer, texts, config, args.precision)
                    )
            median = {name: statistics.median(values) for name, values in rates.items()}
            floor = floor_tokens_per_second(model.config, lengths, new_tokens, model_bytes, bandwidth, product_rate)
            cells = [batch, new_tokens, *(f"{rate:.1f}" for rate in median.values())]
            cells += [f"{median[name] / median['plain']:.2f}" for name in vllm_names]
            cells += [f"{floor:.0f}", f"{floor / median['plain']:.2f}"]
            print(f"| {' | '.join(map(str, cells))} |")


if __name__ == "__main__":
    main()
