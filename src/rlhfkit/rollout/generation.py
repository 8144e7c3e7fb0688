"""Batched sampling from a causal LM, and the tensors a rollout keeps.

Prompts are left-padded so every response starts at the same column.
Sampling uses the configured temperature, top-k and top-p; a response ends
at its first EOS and everything after it is masked out (`response_mask` is
True on real response tokens, the EOS included).

`sample` also returns what the sampling pass already computed, so PPO need
not run the policy again to score it: the log-probability of each sampled
token under the temperature-scaled distribution (top-k/top-p truncation is a
sampling device, not part of the policy whose ratio PPO takes, as in TRL),
and the last hidden state before each token, from which a shared value head
reads V(s_t).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import GenerationConfig as HFGenerationConfig
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlhfkit.algorithms import logprobs_from_logits
from rlhfkit.config import GenerationConfig
from rlhfkit.models.shared_prompts import cache_keyword, shared_prompt_cache
from rlhfkit.runtime.precision import autocast


@dataclass
class Samples:
    """One batch of prompts and sampled responses. B prompts, P prompt columns, R response columns."""

    query_ids: torch.Tensor  # (B, P) left-padded
    query_mask: torch.Tensor  # (B, P) True on real prompt tokens
    response_ids: torch.Tensor  # (B, R) pad after the first EOS
    response_mask: torch.Tensor  # (B, R) True on real response tokens, EOS included
    ended: torch.Tensor  # (B,) True where the response produced EOS within max_new_tokens
    logprobs: torch.Tensor | None = None  # (B, R) fp32, log π(token) under the sampling temperature
    hidden: torch.Tensor | None = None  # (B, R, H) last hidden state before each response token

    def select(self, index: torch.Tensor) -> Samples:
        """The rows `index` (a minibatch, or one process's share)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Samples(
            *(
                pick(getattr(self, f))
                for f in ("query_ids", "query_mask", "response_ids", "response_mask", "ended", "logprobs", "hidden")
            )
        )

    @property
    def input_ids(self) -> torch.Tensor:
        """(B, P + R) prompt and response."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, P + R) True on real prompt and response tokens."""
        return torch.cat([self.query_mask, self.response_mask], dim=1)


def decoding_precision(dtype: str):
    """The precision context for token-by-token decoding.

    bf16 autocast pays off for full-sequence passes, not for decoding on a CPU: each decode
    step re-casts every weight for a handful of activations. Measured here (SmolLM2-135M,
    16 prompts x 8 new tokens, 1 thread): fp32 11.6 new tok/s, bf16 autocast 2.2, bf16
    weights 2.2. So a CPU decodes in fp32, a GPU in the configured precision.
    """
    if decodes_in(dtype):
        return autocast(dtype)
    return contextlib.nullcontext()


def decodes_in(dtype: str) -> bool:
    """Whether decoding runs in `dtype` itself."""
    return dtype == "float32" or torch.cuda.is_available()


def response_mask_from_ids(response_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R) -> mask True up to and including the first EOS, and (B,) whether an EOS occurred."""
    is_eos = response_ids == eos_token_id
    ended = is_eos.any(dim=1)
    eos_seen_before = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    return ~eos_seen_before, ended


def left_truncate(tokenizer, text: str, max_tokens: int) -> str:
    """`text` cut from the left to its last `max_tokens` tokens: a long prompt keeps its end, where the question is."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[-max_tokens:])


def tokenize_prompts(
    tokenizer, prompt_texts: list[str], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (B, P) ids and a bool mask; the chat template already added any special tokens."""
    tokenizer.padding_side = "left"
    batch = tokenizer(prompt_texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return batch.input_ids.to(device), batch.attention_mask.to(device).bool()


class GenerationEngine:
    """What samples the rollouts (`generation.engine`): `hf` here, `vllm` in `rollout.vllm_engine`.

    Engines differ in `sample_tokens`; both return the same `Samples` for the same prompt ids.
    """

    name = "hf"

    def sample(
        self,
        model,
        tokenizer,
        prompt_texts: list[str],
        config: GenerationConfig,
        dtype: str = "float32",
        keep_scores: bool = False,
        keep_hidden: bool = True,
    ) -> Samples:
        """Sample one response of `model` per prompt text (see `sample_tokens` for keep_scores and keep_hidden)."""
        device = next(model.parameters()).device
        query_ids, query_mask = tokenize_prompts(tokenizer, prompt_texts, device)
        return self.sample_tokens(
            model, query_ids, query_mask, config, tokenizer.eos_token_id, tokenizer.pad_token_id, dtype,
            keep_scores, keep_hidden,
        )  # fmt: skip

    def sample_tokens(self, model, *args, **kwargs) -> Samples:
        """Hugging Face `generate`: see the function `sample_tokens`."""
        return sample_tokens(model, *args, **kwargs)


HF_ENGINE = GenerationEngine()


sample = HF_ENGINE.sample  # one response per prompt text with Hugging Face `generate` (the `hf` engine)


@torch.no_grad()
def sample_tokens(
    model,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    config: GenerationConfig,
    eos_token_id: int,
    pad_token_id: int,
    dtype: str = "float32",
    keep_scores: bool = False,
    keep_hidden: bool = True,
) -> Samples:
    """Sample with `generate` from left-padded (B, P) prompt ids and their mask.

    With keep_scores, also keep log-probs and (keep_hidden) last hidden states. They are kept only
    when decoding ran in `dtype` itself, so that they are what a forward pass in `dtype` gives (a CPU
    decodes in fp32 under bf16 too); otherwise `logprobs` and `hidden` are None and the caller runs
    that forward pass. Without a value head to read them, keep_hidden=False spares the memory of
    every decoding step's hidden states.
    """
    keep_scores = keep_scores and decodes_in(dtype)
    keep_hidden = keep_hidden and keep_scores
    recorder = SampledTokenLogprobs(config.temperature) if keep_scores else None
    generation = HFGenerationConfig(
        do_sample=False,  # `sampling_processors` draws the token; generate's argmax then takes it
        max_new_tokens=config.max_new_tokens,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        return_dict_in_generate=True,
        output_hidden_states=keep_hidden,
    )
    with decoding_precision(dtype):
        out = model.generate(
            input_ids=query_ids,
            attention_mask=query_mask.long(),
            generation_config=generation,
            logits_processor=sampling_processors(config, recorder),
            **{cache_keyword(model): shared_prompt_cache(model, query_ids, query_mask)},
        )
    samples = samples_from_responses(
        query_ids, query_mask, out.sequences[:, query_ids.shape[1] :], eos_token_id, pad_token_id
    )
    if keep_scores:
        samples.logprobs = recorder.finish(out.sequences[:, -1]).masked_fill(~samples.response_mask, 0.0)
    if keep_hidden:
        # hidden_states[t][-1]: last layer at step t; step 0 covers the whole prompt, its last column precedes token 0
        samples.hidden = torch.cat([step[-1][:, -1:, :] for step in out.hidden_states], dim=1).float()
    return samples


class SampledTokenLogprobs(LogitsProcessor):
    """log π(token) of each sampled token under the temperature, kept while `generate` runs.

    `generate` calls its logits processors with the ids so far and the next token's raw logits; the
    ids of step t + 1 end with the token drawn at step t, so its log-prob is read then from the logits
    kept of step t, which are dropped. One step's (B, V) logits are held at a time, where
    `output_logits` would hold all R of them (batch 64 x 128 tokens x 49k vocabulary: 1.6 GB).
    """

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.previous_logits: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._take(input_ids[:, -1])
        self.previous_logits = scores
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.previous_logits is not None:
            self.logprobs.append(logprobs_from_logits(self.previous_logits, tokens, self.temperature))

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """(B, R) fp32, given the last step's tokens (the last column of the sequences)."""
        self._take(last_tokens)
        self.previous_logits = None
        return torch.stack(self.logprobs, dim=1)


class DrawByInverseCDF(LogitsProcessor):
    """Draw each row's token from softmax(scores) and leave only it possible: `generate`'s argmax then takes it.

    `generate`'s own sampling is `torch.multinomial`, which on a CPU draws an exponential variate for
    every vocabulary entry: 28-33 ms for 16 rows of SmolLM2's 49,152 against 2.3-4.8 ms for a
    cumulative sum and a binary search (`benchmarks/cpu_kernels.py --draw-only`, RESULTS.md session 10),
    where a whole decoding step of 16 rows takes 230-300 ms.
    The draw is the same distribution: one uniform u per row, the first token whose cumulative
    probability exceeds u; a token of probability 0 (cut by top-k or top-p) is never drawn.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        tokens = draw_by_inverse_cdf(torch.softmax(scores.float(), dim=-1))
        return torch.full_like(scores, float("-inf")).scatter_(1, tokens, 0.0)


def draw_by_inverse_cdf(probs: torch.Tensor) -> torch.Tensor:
    """(B, 1) token ids drawn from the rows of (B, V) probabilities, with torch's global generator."""
    cumulative = probs.double().cumsum(dim=-1)
    uniform = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device) * cumulative[:, -1:]
    tokens = torch.searchsorted(cumulative, uniform, right=True).clamp_max_(probs.shape[1] - 1)
    impossible = probs.gather(1, tokens).squeeze(1) == 0  # u rounded up to the total: about once in 2^50 draws
    if impossible.any():
        tokens[impossible] = torch.multinomial(probs[impossible], 1)
    return tokens


def sampling_processors(config: GenerationConfig, recorder: SampledTokenLogprobs | None) -> LogitsProcessorList:
    """The recorder on the raw logits, then temperature, top-k and top-p, then the draw.

    The log-probs PPO takes are those of the temperature-scaled policy before truncation (top-k and
    top-p are a sampling device, as in TRL), so the recorder must come before the warpers, and
    `generate` puts processors passed to it after its own (none: it decodes greedily, the draw is here).
    """
    processors = LogitsProcessorList([recorder] if recorder is not None else [])
    if config.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        processors.append(TopKLogitsWarper(config.top_k))
    if config.top_p < 1.0:
        processors.append(TopPLogitsWarper(config.top_p))
    processors.append(DrawByInverseCDF())
    return processors


def samples_from_responses(
    query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor, eos_token_id: int, pad_token_id: int
) -> Samples:
    """The rollout of (B, R) generated ids, whatever generated them: cut at each row's first EOS, padded after it."""
    response_mask, ended = response_mask_from_ids(response_ids, eos_token_id)
    response_ids = response_ids.masked_fill(~response_mask, pad_token_id)
    return Samples(query_ids, query_mask, response_ids, response_mask, ended)


def decode_responses(tokenizer, samples: Samples) -> list[str]:
    """Response text without EOS and padding."""
    return tokenizer.batch_decode(samples.response_ids, skip_special_tokens=True)
