"""generation.engine: the vLLM engine samples what `generate` samples, from the weights the policy has now.

The tests' tiny model has 8-wide attention heads, which vLLM's CPU kernels lack (they start at 32):
these tests build one with 32-wide heads, and the tiny model itself is the "model vLLM cannot run".
"""

import copy
import json
import subprocess
import sys

import pytest
import torch

from rlhfkit.cli import main
from rlhfkit.config import GenerationConfig, LoRAConfig, load_config
from rlhfkit.configs.ppo import PPOConfig
from rlhfkit.errors import UserError
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.actor_critic import response_logprobs
from rlhfkit.models.lora import apply_lora
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.recipes.ppo import PPOTrainer
from rlhfkit.rollout import engines
from rlhfkit.rollout.engines import build_engine, measured_engine
from rlhfkit.rollout.generation import HF_ENGINE, sample
from rlhfkit.rollout.vllm_engine import VLLMEngine
from rlhfkit.training import OptimConfig, build_optimizer

PROMPTS = [
    "<|im_start|>user tell me about the cat<|im_end|><|im_start|>assistant ",
    "<|im_start|>user the weather is bad today<|im_end|><|im_start|>assistant ",
    "<|im_start|>user what is good music<|im_end|><|im_start|>assistant ",
]
GREEDY = GenerationConfig(max_new_tokens=8, top_k=1)  # top-k 1: both engines take the argmax


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-vllm"), hidden_size=128))


@pytest.fixture(scope="module")
def engine(vllm_model_dir):
    pytest.importorskip("vllm")
    return build_engine(GenerationConfig(engine="vllm"), vllm_model_dir, None, "float32")


@pytest.fixture(scope="module")
def tokenizer(vllm_model_dir):
    return load_tokenizer(vllm_model_dir)


def one_update(model, tokenizer) -> None:
    """One step of the trainers' own optimiser (fused AdamW, which writes weights without bumping their
    version counters) on a loss that moves every weight."""
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    optimizer, _ = build_optimizer(model.parameters(), OptimConfig(learning_rate=0.05, warmup_steps=0), 1)
    model(ids).logits.square().mean().backward()
    optimizer.step()


def assert_same_samples(a, b) -> None:
    for name in ("query_ids", "query_mask", "response_ids", "response_mask", "ended"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("execution", ["eager", "compiled"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_samples_follow_the_policy_through_an_update_as_generate_does(
    engine, tokenizer, vllm_model_dir, lora, execution
):
    """Also with generation.vllm_execution=compiled: the pushed weights reach the compiled model."""
    engine = build_engine(GenerationConfig(engine="vllm", vllm_execution=execution), vllm_model_dir, None, "float32")
    assert engine.llm.llm_engine.model_config.enforce_eager == (execution == "eager")
    policy = load_causal_lm(vllm_model_dir, tokenizer)
    if lora:
        policy = apply_lora(policy, LoRAConfig(enabled=True, r=8, top_layers=1))
    before = sample(policy, tokenizer, PROMPTS, GREEDY)
    assert_same_samples(engine.sample(policy, tokenizer, PROMPTS, GREEDY), before)
    one_update(policy, tokenizer)
    after = sample(policy, tokenizer, PROMPTS, GREEDY)
    assert not torch.equal(after.response_ids, before.response_ids)  # the update changed what generate samples
    assert_same_samples(engine.sample(policy, tokenizer, PROMPTS, GREEDY), after)


def test_an_unknown_vllm_execution_is_refused_naming_the_key(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["ppo", "--out", str(out), "--set", "generation.vllm_execution=fast"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "generation.vllm_execution must be auto, eager or compiled" in error
    assert not out.exists()


def test_engine_log_probs_of_the_same_sequences_equal_the_training_model(engine, tokenizer, vllm_model_dir):
    policy = load_causal_lm(vllm_model_dir, tokenizer)
    one_update(policy, tokenizer)
    samples = engine.sample(policy, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=6))
    expected, _ = response_logprobs(
        policy, samples.input_ids, samples.attention_mask, samples.response_ids, 1.0, "float32"
    )
    params = engine.vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
    for row in range(len(PROMPTS)):
        prompt = samples.query_ids[row][samples.query_mask[row]].tolist()
        response = samples.response_ids[row][samples.response_mask[row]].tolist()
        output = engine.llm.generate([{"prompt_token_ids": prompt + response}], params, use_tqdm=False)[0]
        got = [next(iter(step.values())).logprob for step in output.prompt_logprobs[len(prompt) :]]
        torch.testing.assert_close(torch.tensor(got), expected[row, : len(response)], atol=1e-4, rtol=0)


def test_a_response_stops_at_the_tokenizers_eos_as_with_generate(engine, tokenizer, vllm_model_dir):
    policy = load_causal_lm(vllm_model_dir, tokenizer)
    greedy = sample(policy, tokenizer, PROMPTS, GREEDY).response_ids
    stop = int(greedy[0, 2])  # the first prompt's third greedy token becomes EOS: it ends there
    stopping = copy.deepcopy(tokenizer)
    stopping.eos_token = stopping.convert_ids_to_tokens(stop)
    hf = sample(policy, stopping, PROMPTS, GREEDY)
    assert hf.ended[0] and hf.response_mask[0].sum() <= 3
    assert_same_samples(engine.sample(policy, stopping, PROMPTS, GREEDY), hf)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_first_tokens_are_drawn_at_the_configured_temperature(engine, tokenizer, vllm_model_dir, temperature):
    """The top token's share of 400 first tokens is its probability under softmax(logits / T), to 4 sigma."""
    policy = load_causal_lm(vllm_model_dir, tokenizer)
    with torch.no_grad():
        policy.model.norm.weight.mul_(4.0)  # sharper logits: T = 0.5 and T = 2 then differ widely
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        probabilities = torch.softmax(policy(ids).logits[0, -1] / temperature, dim=-1)
    top, p = int(probabilities.argmax()), float(probabilities.max())
    config = GenerationConfig(max_new_tokens=1, temperature=temperature)
    draws = engine.sample(policy, tokenizer, PROMPTS[:1] * 400, config).response_ids[:, 0]
    share = float((draws == top).float().mean())
    assert abs(share - p) < 4 * (p * (1 - p) / 400) ** 0.5 + 1e-3


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-top-layer"])
def test_the_first_ppo_ratio_of_vllm_samples_is_one(engine, vllm_model_dir, tmp_path, lora):
    """The old log-probs come from the training model's own forward pass, not from the engine."""
    overrides = [
        f"model.name={vllm_model_dir}", "model.dtype=float32", "generation.engine=vllm", "generation.max_new_tokens=6",
        "train.batch_size=4", "train.mini_batch_size=4", f"model.lora.enabled={str(lora).lower()}",
        "model.lora.top_layers=1", f"out={tmp_path}",
    ]  # fmt: skip
    trainer = PPOTrainer(
        load_config(PPOConfig, overrides=overrides),
        reward=lambda prompts, responses, records: [float(len(r.split())) for r in responses],
        prompts=[{"prompt": p} for p in ("tell me a day", "write a book", "how is the weather", "say it")],
    )
    assert trainer.engine is engine
    experience, _, _ = trainer.rollout(trainer.prompt_batch(0))
    assert experience.samples.logprobs is None  # the engine keeps none: the policy's forward gave them
    samples = experience.samples
    trainer.actor_critic.train()
    logprobs, _, _ = trainer.actor_critic(
        samples.input_ids, samples.attention_mask, samples.response_ids, 1.0, "float32",
        frozen_states=experience.frozen_states,
    )  # fmt: skip
    ratio = torch.exp(logprobs - experience.logprobs)[samples.response_mask]
    assert (ratio - 1).abs().max() < 1e-5


def test_auto_measures_once_caches_the_faster_and_leaves_the_random_streams(
    engine, tokenizer, vllm_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(VLLMEngine, "_shared", dict(VLLMEngine._shared))  # whatever wins, the module's engine stays
    policy = load_causal_lm(vllm_model_dir, tokenizer)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    chosen = measured_engine(vllm_model_dir, policy, "float32", "auto")
    assert torch.equal(torch.rand(3), expected)
    (record,) = json.loads((tmp_path / "generation_engine.json").read_text()).values()
    rates = record["new_tokens_per_s"]
    assert set(rates) == {"hf", "vllm"} and all(rate > 0 for rate in rates.values())
    assert chosen.name == record["engine"] == max(rates, key=rates.get)
    monkeypatch.setattr(engines, "probe", lambda *args: pytest.fail("measured twice"))
    assert measured_engine(vllm_model_dir, policy, "float32", "auto").name == chosen.name


def test_auto_stays_with_generate_for_a_tiny_model_without_measuring(tiny_model_dir):
    policy = load_causal_lm(tiny_model_dir)
    assert build_engine(GenerationConfig(), tiny_model_dir, policy, "float32") is HF_ENGINE


def test_vllm_without_vllm_installed_is_one_line_before_any_output(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    with pytest.raises(UserError, match=r"generation.engine=vllm needs vLLM.*rlhfkit\[vllm\]"):
        build_engine(GenerationConfig(engine="vllm"), tiny_model_dir, None, "float32")
    out = tmp_path / "candidates"
    args = ["generate", "--set", f"model.name={tiny_model_dir}", "--set", "generation.engine=vllm", "--out", str(out)]
    assert main(args) == 2
    assert "needs vLLM" in capsys.readouterr().err
    assert not out.exists()


def test_vllm_on_a_model_it_cannot_run_is_one_line_before_any_output(engine, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ppo"
    args = ["ppo", "--set", f"model.name={tiny_model_dir}", "--set", "generation.engine=vllm", "--out", str(out)]
    assert main(args) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "vLLM cannot run this model" in error[0] and "generation.engine=hf" in error[0]
    assert not out.exists()


def test_vllm_with_several_processes_is_refused():
    with pytest.raises(UserError, match="set generation.engine=hf for a multi-process run"):
        build_engine(GenerationConfig(engine="vllm"), "unused", None, "float32", num_processes=2)


UNLOAD_AND_COLLECT = """
import gc, sys, weakref
from rlhfkit.rollout.vllm_engine import VLLMEngine
def build_and_unload():
    engine = VLLMEngine.load(sys.argv[1], "float32")
    llm = weakref.ref(engine.llm)
    engine.unload()
    return llm
llm = build_and_unload()
gc.collect()
print("freed" if llm() is None else "kept")
"""


def test_an_unloaded_engine_is_freed_in_a_process_that_first_imported_vllm_to_build_it(vllm_model_dir):
    """The probe unloads the engine it loses with; vLLM's import-time tracebacks had kept it alive."""
    pytest.importorskip("vllm")
    child = subprocess.run(
        [sys.executable, "-c", UNLOAD_AND_COLLECT, vllm_model_dir], capture_output=True, text=True, check=True
    )
    assert child.stdout.strip().splitlines()[-1] == "freed"
