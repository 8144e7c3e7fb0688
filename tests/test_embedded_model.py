"""The embedded default model: loads with no network, pads with a token that is not EOS, and scores its own samples.

The log-probs kept while sampling are those a fresh forward pass over the same tokens gives.
"""

import pytest
import torch

from rlhfkit.config import EMBEDDED_MODEL, GenerationConfig
from rlhfkit.data import format_prompt
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.actor_critic import response_logprobs
from rlhfkit.rollout.generation import decode_responses, sample

pytestmark = pytest.mark.slow


def test_embedded_model_loads_pads_apart_from_eos_and_scores_its_own_samples():
    tokenizer = load_tokenizer(EMBEDDED_MODEL)
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == 0 != tokenizer.eos_token_id
    model = load_causal_lm(EMBEDDED_MODEL, tokenizer)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    text = format_prompt(tokenizer, {"prompt": "Say hello."})
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    torch.manual_seed(0)
    samples = sample(
        model,
        tokenizer,
        [text, format_prompt(tokenizer, {"prompt": "Name a colour."})],
        GenerationConfig(max_new_tokens=12),
        "float32",
        keep_scores=True,
    )
    assert all(response.strip() for response in decode_responses(tokenizer, samples))
    # the log-probs kept from sampling are those of a fresh forward pass (here the reference is the policy)
    fresh, _ = response_logprobs(model, samples.input_ids, samples.attention_mask, samples.response_ids, 1.0, "float32")
    torch.testing.assert_close(fresh.masked_fill(~samples.response_mask, 0.0), samples.logprobs, rtol=0, atol=2e-4)
