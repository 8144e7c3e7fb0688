"""A prompt repeated for group sampling is read once, by the `hf` engine's sampling and by scoring; all else holds."""

import pytest
import torch

from rlhfkit.algorithms import logprobs_from_logits
from rlhfkit.config import GenerationConfig, LoRAConfig
from rlhfkit.models import actor_critic, load_causal_lm, load_tokenizer, shared_prompts
from rlhfkit.models.actor_critic import response_logits, response_logprobs
from rlhfkit.models.hf_reward import position_ids_from_mask
from rlhfkit.models.lora import apply_lora
from rlhfkit.models.shared_prompts import shared_prompt_cache, shared_prompt_response_logits
from rlhfkit.rollout import generation
from rlhfkit.rollout.generation import tokenize_prompts

PROMPTS = ["tell me a day", "write a book about the weather", "say"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    return load_causal_lm(tiny_model_dir, tokenizer).eval(), tokenizer


def grouped_prompts(tokenizer, group_size):
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False) for p in PROMPTS]
    return tokenize_prompts(tokenizer, [t for t in texts for _ in range(group_size)])


def test_distinct_prompts_share_nothing(tiny):
    model, tokenizer = tiny
    ids, mask = grouped_prompts(tokenizer, 1)
    assert shared_prompt_cache(model, ids, mask) is None


@torch.no_grad()
def test_each_repeat_gets_the_cache_its_own_prompt_would_have(tiny):
    model, tokenizer = tiny
    ids, mask = grouped_prompts(tokenizer, 3)
    cache = shared_prompt_cache(model, ids, mask)
    head = mask[:, :-1].long()
    alone = model(
        input_ids=ids[:, :-1], attention_mask=head, position_ids=position_ids_from_mask(head), use_cache=True
    ).past_key_values
    assert cache.get_seq_length() == ids.shape[1] - 1
    for shared_layer, own_layer in zip(cache.layers, alone.layers):
        real = mask[:, None, :-1, None]  # left padding's keys are masked out of attention, whatever they hold
        torch.testing.assert_close(shared_layer.keys * real, own_layer.keys * real, rtol=0, atol=1e-5)
        torch.testing.assert_close(shared_layer.values * real, own_layer.values * real, rtol=0, atol=1e-5)


def test_group_sampling_draws_what_reading_every_prompt_draws(tiny, monkeypatch):
    # the same seed gives the same responses with and without the shared prompt cache, and the kept
    # log-probs are those of a fresh forward pass (PPO's first ratio is 1)
    model, tokenizer = tiny
    ids, mask = grouped_prompts(tokenizer, 4)
    config = GenerationConfig(max_new_tokens=6)
    args = (model, ids, mask, config, tokenizer.eos_token_id, tokenizer.pad_token_id, "float32", True, False)
    torch.manual_seed(3)
    shared = generation.sample_tokens(*args)
    monkeypatch.setattr(generation, "shared_prompt_cache", lambda *_: None)
    torch.manual_seed(3)
    every_prompt = generation.sample_tokens(*args)
    assert torch.equal(shared.response_ids, every_prompt.response_ids)
    torch.testing.assert_close(shared.logprobs, every_prompt.logprobs, rtol=0, atol=1e-5)
    fresh, _ = response_logprobs(model, shared.input_ids, shared.attention_mask, shared.response_ids, 1.0, "float32")
    torch.testing.assert_close(shared.logprobs, fresh * shared.response_mask, rtol=0, atol=1e-5)


@torch.no_grad()
def test_log_probs_are_the_tempered_policy_s_and_top_k_truncates_the_draw(tiny):
    # the kept log-probs are log softmax(logits / T) before truncation, while the draw is truncated to top-k
    model, tokenizer = tiny
    ids, mask = grouped_prompts(tokenizer, 4)
    config = GenerationConfig(max_new_tokens=6, temperature=0.7, top_k=3, top_p=0.95)
    torch.manual_seed(0)
    s = generation.sample_tokens(model, ids, mask, config, tokenizer.eos_token_id, tokenizer.pad_token_id, "float32",
                                 True, False)  # fmt: skip
    fresh, _ = response_logprobs(model, s.input_ids, s.attention_mask, s.response_ids, 0.7, "float32")
    torch.testing.assert_close(s.logprobs, fresh * s.response_mask, rtol=0, atol=1e-5)
    untempered, _ = response_logprobs(model, s.input_ids, s.attention_mask, s.response_ids, 1.0, "float32")
    assert ((untempered - fresh).abs() * s.response_mask).max() > 1e-3  # the temperature is really in them
    logits = model(input_ids=s.input_ids, attention_mask=s.attention_mask.long(),
                   position_ids=position_ids_from_mask(s.attention_mask.long())).logits  # fmt: skip
    third_best = logits[:, ids.shape[1] - 1 : -1].topk(3, dim=-1).values[..., -1]
    drawn = logits[:, ids.shape[1] - 1 : -1].gather(-1, s.response_ids[..., None])[..., 0]
    assert bool(((drawn >= third_best - 1e-4) | ~s.response_mask).all())


@torch.no_grad()
def test_scoring_reads_a_repeated_prompt_once_and_gets_what_a_whole_forward_gets(tiny, monkeypatch):
    # the reference's log-probs and the frozen layers' output (LoRA on the top layers) from two passes,
    # the distinct prompts then the responses on their copied cache, equal those of one forward of every row
    model, tokenizer = tiny
    ids, mask = grouped_prompts(tokenizer, 3)
    config = GenerationConfig(max_new_tokens=5)
    torch.manual_seed(0)
    samples = generation.sample_tokens(model, ids, mask, config, tokenizer.eos_token_id, tokenizer.pad_token_id)
    samples.response_mask[1, 2:] = False  # a response that ended early: padding after its EOS
    samples.response_ids[1, 2:] = tokenizer.pad_token_id
    input_ids, attention_mask, response_ids = samples.input_ids, samples.attention_mask, samples.response_ids
    kept_layer = 1
    shared = shared_prompt_response_logits(model, input_ids, attention_mask, response_ids.shape[1], kept_layer)
    assert shared is not None
    logits, _, states = shared
    kept, _ = response_logprobs(model, input_ids, attention_mask, response_ids, 1.0, "float32", kept_layer)
    monkeypatch.setattr(actor_critic, "shared_prompt_response_logits", lambda *_: None)  # every row read whole
    whole, _, whole_states = response_logits(
        model, input_ids, attention_mask, response_ids.shape[1], frozen_layers=kept_layer, keep_frozen_states=True
    )
    response = samples.response_mask[..., None]
    torch.testing.assert_close(logits * response, whole * response, rtol=0, atol=1e-5)
    real = attention_mask[..., None].bool()
    torch.testing.assert_close(states * real, whole_states * real, rtol=0, atol=1e-5)
    # and response_logprobs takes this path
    torch.testing.assert_close(
        kept * samples.response_mask,
        logprobs_from_logits(whole, response_ids, 1.0) * samples.response_mask,
        rtol=0,
        atol=1e-5,
    )
    distinct_ids, distinct_mask = grouped_prompts(tokenizer, 1)
    assert shared_prompt_response_logits(model, distinct_ids, distinct_mask, 1) is None


def test_the_inverse_cdf_draw_has_the_row_s_distribution_and_never_a_token_of_probability_zero():
    probs = torch.tensor([[0.0, 0.1, 0.2, 0.0, 0.7], [0.5, 0.0, 0.0, 0.5, 0.0]])
    torch.manual_seed(0)
    draws = torch.cat([generation.draw_by_inverse_cdf(probs) for _ in range(20000)], dim=1)  # (2, 20000)
    frequencies = torch.stack([torch.bincount(row, minlength=5) for row in draws]).double() / draws.shape[1]
    # 20,000 draws: a frequency's standard error is at most 0.0036, so 0.015 is over four of them
    torch.testing.assert_close(frequencies, probs.double(), rtol=0, atol=0.015)
    assert frequencies[probs == 0].sum() == 0
    torch.manual_seed(0)
    assert torch.equal(generation.draw_by_inverse_cdf(probs), draws[:, :1])  # the global generator: seeded runs repeat


def test_the_draw_leaves_generate_only_the_drawn_token():
    scores = torch.tensor([[1.0, 2.0, float("-inf")], [0.0, 0.0, 0.0]])
    torch.manual_seed(1)
    kept = generation.DrawByInverseCDF()(torch.zeros(2, 1, dtype=torch.long), scores)
    assert (kept == 0).sum(dim=1).tolist() == [1, 1] and bool((kept[kept != 0] == float("-inf")).all())
    assert kept[0, 2] == float("-inf")


def test_a_training_minibatch_reads_a_repeated_prompt_once_with_the_gradients_of_a_whole_forward(tiny, monkeypatch):
    # LoRA on the top layer, the pass starting from the frozen layers' output: logits, last hidden states
    # and every adapter's gradient equal those of one forward over every row
    model, tokenizer = tiny
    ids, mask = grouped_prompts(tokenizer, 2)
    torch.manual_seed(0)
    samples = generation.sample_tokens(model, ids, mask, GenerationConfig(max_new_tokens=5), tokenizer.eos_token_id,
                                       tokenizer.pad_token_id)  # fmt: skip
    samples.response_mask[1, 3:] = False
    samples.response_ids[1, 3:] = tokenizer.pad_token_id
    input_ids, attention_mask, length = samples.input_ids, samples.attention_mask, samples.response_ids.shape[1]
    layers = model.config.num_hidden_layers
    policy = apply_lora(load_causal_lm(model.name_or_path, tokenizer), LoRAConfig(enabled=True, top_layers=1))
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:  # a trained adapter, so that its gradients reach the prompt through the cache
            torch.nn.init.normal_(parameter, std=0.1)
    with torch.no_grad(), policy.disable_adapter():
        _, frozen = response_logprobs(policy, input_ids, attention_mask, samples.response_ids, 1.0, "float32",
                                      layers - 1)  # fmt: skip

    def forward_and_gradients():
        policy.zero_grad()
        logits, hidden, _ = response_logits(policy, input_ids, attention_mask, length, output_hidden_states=True,
                                            frozen_states=frozen, frozen_layers=layers - 1)  # fmt: skip
        response = samples.response_mask[..., None]
        ((logits * response).square().mean() + (hidden * response).mean()).backward()
        grads = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
        return logits * response, hidden * response, grads

    shared_logits, shared_hidden, shared_grads = forward_and_gradients()
    monkeypatch.setattr(actor_critic, "shared_prompt_response_logits", lambda *_: None)
    whole_logits, whole_hidden, whole_grads = forward_and_gradients()
    torch.testing.assert_close(shared_logits, whole_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared_hidden, whole_hidden, rtol=0, atol=1e-5)
    assert shared_grads.keys() == whole_grads.keys() and shared_grads
    for name in whole_grads:
        torch.testing.assert_close(shared_grads[name], whole_grads[name], rtol=1e-4, atol=1e-6)


def test_a_reward_model_reads_a_ranking_s_prompt_once_with_the_scores_and_gradients_of_whole_rows(
    tiny_model_dir, monkeypatch
):
    # a ranking's three responses to one prompt and a pair to a shorter one: the scores and LoRA gradients of
    # the shared-prompt passes equal those of reading every row whole, for both poolings
    from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
    from rlhfkit.models import heads
    from rlhfkit.models.heads import ScalarHeadModel
    from rlhfkit.models.loading import load_backbone

    tokenizer = load_tokenizer(tiny_model_dir)
    records = [("write a book about the weather", ["a day", "the sun is good", "no"]), ("say", ["yes", "a book"])]
    items = [tokenize_prompt_response(tokenizer, {"prompt": p}, r, 64) for p, responses in records for r in responses]
    batch = pad_batch(items, tokenizer.pad_token_id)
    for pooling in ("mean", "last"):
        torch.manual_seed(0)
        backbone = apply_lora(load_backbone(tiny_model_dir, tokenizer), LoRAConfig(enabled=True))
        model = ScalarHeadModel(backbone, gain=2.0, bias=0.5, pooling=pooling)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.1)

        def scores_and_gradients(model=model):
            model.zero_grad()
            scores = model(*batch)
            (scores * torch.arange(1.0, len(items) + 1)).sum().backward()
            return scores.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

        assert shared_prompts.shared_prompt_response_states(model.backbone, *batch) is not None
        shared_scores, shared_grads = scores_and_gradients()
        with monkeypatch.context() as whole_rows:
            whole_rows.setattr(heads, "shared_prompt_response_states", lambda *_: None)
            whole_scores, whole_grads = scores_and_gradients()
        torch.testing.assert_close(shared_scores, whole_scores, rtol=0, atol=1e-5)
        assert shared_grads.keys() == whole_grads.keys() and len(whole_grads) > 2
        for name in whole_grads:  # sums taken in another order: gradients of up to ~0.1 differ by float rounding
            torch.testing.assert_close(shared_grads[name], whole_grads[name], rtol=1e-4, atol=1e-5)
    # one response per prompt: nothing to share
    alone = pad_batch([items[0], items[3]], tokenizer.pad_token_id)
    assert shared_prompts.shared_prompt_response_states(model.backbone, *alone) is None
