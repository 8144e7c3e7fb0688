"""rlhfkit ppo: it learns, it resumes exactly, it keeps the output contract, it refuses bad input."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rlhfkit.assets import DEMONSTRATIONS
from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer
from rlhfkit.rollout.experience import whiten_across
from rlhfkit.rollout.scoring import score_responses
from rlhfkit.tracking import read_jsonl

POSITIVE = {"good", "great", "happy", "love", "wonderful", "nice", "best", "joy"}
PROMPTS = [{"prompt": p} for p in ["tell me a day", "write a book", "how is the weather", "say what you think"]]


def fraction_positive(prompts, responses, records):
    """A simple programmatic reward: the share of response words from a small positive list."""
    return [sum(word in POSITIVE for word in r.split()) / max(len(r.split()), 1) for r in responses]


def tiny_config(model_dir, out, *extra):
    return load_config(
        PPOConfig,
        overrides=[
            f"model.name={model_dir}", "model.dtype=float32", "train.batch_size=16", "train.mini_batch_size=8",
            "generation.max_new_tokens=6", "kl.coef=0.01", "ppo.value_coef=0.5", f"out={out}", *extra,
        ],
    )  # fmt: skip


def test_ppo_raises_a_simple_reward_on_a_tiny_model(tiny_model_dir, tmp_path):
    # The random tiny model says a positive word ~1 time in 10; PPO must make that clearly more common.
    config = tiny_config(
        tiny_model_dir, tmp_path, "train.steps=12", "optim.learning_rate=1e-2", "train.checkpoint_every=0"
    )
    PPOTrainer(config, reward=fraction_positive, prompts=PROMPTS).train()
    scores = [m["reward/score_mean"] for m in read_jsonl(tmp_path / "metrics.jsonl")]
    assert len(scores) == 12
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert first < 0.25
    assert last > first + 0.25, scores


def _final_weights(out):
    return load_file(str(Path(out) / "final" / "model.safetensors"))


@pytest.mark.parametrize("lora", [False, True])
def test_resume_ends_bitwise_equal_to_an_uninterrupted_run(tiny_model_dir, tmp_path, lora):
    extra = [
        "optim.learning_rate=1e-3",
        "optim.keep_moments=true",  # the 2-step run completes; extending it exactly needs AdamW's moments
        "train.checkpoint_every=2",
        f"model.lora.enabled={str(lora).lower()}",
        "model.lora.r=4",
    ]
    straight = tmp_path / "straight"
    PPOTrainer(
        tiny_config(tiny_model_dir, straight, "train.steps=4", *extra), reward=fraction_positive, prompts=PROMPTS
    ).train()

    resumed = tmp_path / "resumed"
    PPOTrainer(
        tiny_config(tiny_model_dir, resumed, "train.steps=2", *extra), reward=fraction_positive, prompts=PROMPTS
    ).train()
    # a new process would rebuild everything from the config: do the same, then resume with more steps
    PPOTrainer(
        tiny_config(tiny_model_dir, resumed, "train.steps=4", *extra), reward=fraction_positive, prompts=PROMPTS
    ).train(resume=True)

    a, b = _final_weights(straight), _final_weights(resumed)
    assert a.keys() == b.keys()
    changed = False
    for name in a:
        assert torch.equal(a[name], b[name]), name
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    changed = any(not torch.equal(a[n], initial[n]) for n in a if n in initial)
    assert changed, "training did not change the weights, so the comparison proves nothing"
    steps = [m["step"] for m in read_jsonl(resumed / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    scores_straight = [m["reward/score_mean"] for m in read_jsonl(straight / "metrics.jsonl")]
    scores_resumed = [m["reward/score_mean"] for m in read_jsonl(resumed / "metrics.jsonl")]
    assert scores_straight == scores_resumed


def test_gradient_accumulation_gives_the_same_update(tiny_model_dir, tmp_path):
    # trainers seed the global RNG when built: build and train one after the other so both sample the same
    whole = PPOTrainer(
        tiny_config(tiny_model_dir, tmp_path / "a", "train.steps=1", "train.checkpoint_every=0"),
        reward=fraction_positive,
        prompts=PROMPTS,
    )
    whole.train()
    accumulated = PPOTrainer(
        tiny_config(
            tiny_model_dir, tmp_path / "b", "train.steps=1", "train.checkpoint_every=0", "train.micro_batch_size=2"
        ),
        reward=fraction_positive,
        prompts=PROMPTS,
    )
    accumulated.train()
    assert read_jsonl(tmp_path / "a" / "samples.jsonl") == read_jsonl(tmp_path / "b" / "samples.jsonl")
    for (name, p), (_, q) in zip(whole.unwrapped.named_parameters(), accumulated.unwrapped.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_rollout_log_probs_equal_a_fresh_forward_in_float32(tiny_model_dir, tmp_path, critic):
    # the update reuses the sampling pass's log-probs and values (shared trunk), or scores in its own
    # pass (separate critic): either way they must be what a forward pass gives
    trainer = PPOTrainer(
        tiny_config(tiny_model_dir, tmp_path, "train.steps=1", f"critic.kind={critic}"),
        reward=fraction_positive,
        prompts=PROMPTS,
    )
    assert trainer.unwrapped.shares_trunk == (critic == "shared")
    experience, _, _ = trainer.rollout(PROMPTS)
    s = experience.samples
    assert (s.logprobs is not None) == (critic == "shared")
    with torch.no_grad():
        logprobs, _, values = trainer.unwrapped(s.input_ids, s.attention_mask, s.response_ids, 1.0, "float32")
    mask = s.response_mask
    torch.testing.assert_close(logprobs * mask, experience.logprobs, rtol=0, atol=1e-5)
    torch.testing.assert_close(values * mask, experience.values, rtol=0, atol=1e-5)
    # before any update the policy is the reference: KL is zero
    torch.testing.assert_close(experience.ref_logprobs, experience.logprobs, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "extra", [["critic.kind=separate"], ["model.lora.enabled=true", "model.lora.r=4", "model.lora.top_layers=1"]]
)
def test_scoring_a_few_rows_per_pass_gives_what_one_pass_gives(tiny_model_dir, tmp_path, extra):
    # scoring in passes of 3 rows (the last pass shorter) bounds its memory and changes none of its outputs:
    # log-probs, reference log-probs, a separate critic's values, and the frozen layers' output for LoRA
    trainer = PPOTrainer(tiny_config(tiny_model_dir, tmp_path, "train.steps=1", *extra), reward=fraction_positive,
                         prompts=PROMPTS)  # fmt: skip
    samples = trainer.generate(PROMPTS * 4)
    model, reference = trainer.unwrapped.eval(), trainer.reference
    whole = score_responses(model, reference, samples, 1.0, "float32")
    in_passes = score_responses(model, reference, samples, 1.0, "float32", rows_per_pass=3)
    assert [t is None for t in whole] == [t is None for t in in_passes]
    assert whole[2] is not None or whole[3] is not None  # the critic's values or the frozen layers' output
    for one, several in zip(whole, in_passes):
        if one is not None:
            torch.testing.assert_close(several, one, rtol=0, atol=1e-5)


def test_under_bf16_on_a_cpu_the_rollout_log_probs_are_the_updates_own(tiny_model_dir, tmp_path):
    # a CPU decodes in fp32; under bf16 autocast the old log-probs must come from a bf16 forward, so that
    # PPO's ratio starts at exactly 1 (fp32 sampling log-probs differ from a bf16 pass by ~1e-4 to 1e-2)
    trainer = PPOTrainer(
        tiny_config(tiny_model_dir, tmp_path, "train.steps=1", "model.dtype=bfloat16"),
        reward=fraction_positive,
        prompts=PROMPTS,
    )
    experience, _, _ = trainer.rollout(PROMPTS)
    s = experience.samples
    assert s.logprobs is None  # the fp32 sampling pass's log-probs were not kept
    with torch.no_grad():
        logprobs, _, values = trainer.unwrapped(s.input_ids, s.attention_mask, s.response_ids, 1.0, "bfloat16")
        fp32_logprobs, _, _ = trainer.unwrapped(s.input_ids, s.attention_mask, s.response_ids, 1.0, "float32")
    mask = s.response_mask
    torch.testing.assert_close(logprobs * mask, experience.logprobs, rtol=0, atol=1e-6)
    torch.testing.assert_close(values * mask, experience.values, rtol=0, atol=1e-6)
    assert ((fp32_logprobs - logprobs).abs() * mask).max() > 1e-5  # the two precisions really differ here


def test_cli_writes_the_output_contract(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["ppo", "--set", f"model.name={tiny_model_dir}", "train.steps=2", "train.batch_size=4",
                 "train.mini_batch_size=2", "generation.max_new_tokens=5", "train.checkpoint_every=1",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "samples.jsonl",
        "summary.json",
        "training.png",
        "final/config.json",
        "final/critic.safetensors",
        "checkpoints/step-2/state.pt",
    ):
        assert (out / name).exists(), name
    assert list((out / "tensorboard").iterdir())
    metrics = read_jsonl(out / "metrics.jsonl")
    required = {
        "reward/score_mean", "reward/score_std", "reward/total_mean", "kl/mean", "kl/coef", "policy/loss",
        "policy/clipfrac", "policy/approx_kl", "policy/entropy", "value/loss", "value/clipfrac",
        "value/explained_variance", "response/length_mean", "response/eos_fraction", "time/rollout_s",
        "time/update_s", "time/step_s", "throughput/tokens_per_s", "policy/early_stop", "ppo/epochs",
    }  # fmt: skip
    assert required <= set(metrics[0]), required - set(metrics[0])
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 8 and set(samples[0]) == {"step", "prompt", "response", "score"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["steps"] == 2


def _run_and_expect_error(capsys, *args):
    code = main(["ppo", *args])
    lines = capsys.readouterr().err.strip().splitlines()
    err = [line for line in lines if "%|" not in line]  # the progress bar of a run before
    assert code == 2
    assert len(err) == 1, err
    assert err[0].startswith("rlhfkit ppo: error: ")
    return err[0]


def test_bad_input_gets_one_line_and_no_output(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--set", f"model.name={tiny_model_dir}", "--out", str(out)]
    missing = _run_and_expect_error(capsys, *base, "--set", f"data.prompts={tmp_path / 'nope.jsonl'}")
    assert "nope.jsonl" in missing and "no such file" in missing
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "holds no records" in _run_and_expect_error(capsys, *base, "--set", f"data.prompts={empty}")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "fine"}\n{"prompt": "oops"\n')
    assert f"{broken}:2" in _run_and_expect_error(capsys, *base, "--set", f"data.prompts={broken}")
    assert "train.stesp" in _run_and_expect_error(capsys, *base, "--set", "train.stesp=3")
    divide = _run_and_expect_error(capsys, *base, "--set", "train.batch_size=10", "train.mini_batch_size=4")
    assert "10" in divide and "4" in divide and "divisible" in divide
    assert not out.exists()


def test_a_second_run_into_the_same_directory_is_refused_unless_resumed(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "--set",
        f"model.name={tiny_model_dir}",
        "train.steps=1",
        "train.batch_size=2",
        "train.mini_batch_size=2",
        "generation.max_new_tokens=3",
        "--out",
        str(out),
    ]
    assert main(["ppo", *args]) == 0
    checkpoint = out / "checkpoints" / "step-1" / "trainable.safetensors"
    before = checkpoint.read_bytes()
    error = _run_and_expect_error(capsys, *args)
    assert "already holds a run" in error and "--resume" in error
    assert checkpoint.read_bytes() == before


def raising_reward(prompts, responses, records):
    raise RuntimeError("judge is down")


def nan_reward(prompts, responses, records):
    return [float("nan")] * len(responses)


@pytest.mark.parametrize("function, message", [("raising_reward", "judge is down"), ("nan_reward", "non-finite")])
def test_a_failing_reward_function_stops_the_run_cleanly(
    tiny_model_dir, tmp_path, capsys, monkeypatch, function, message
):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "out"
    error = _run_and_expect_error(
        capsys, "--set", f"model.name={tiny_model_dir}", "reward.kind=function", f"reward.function=test_ppo:{function}",
        "train.batch_size=4", "train.mini_batch_size=2", "generation.max_new_tokens=4", "--out", str(out),
    )  # fmt: skip
    assert message in error
    assert not (out / "final").exists() and not (out / "summary.json").exists()


def test_entropy_is_a_statistic_only_without_an_entropy_bonus(tiny_model_dir, tmp_path):
    """With ppo.entropy_coef = 0 the entropy's backward over the vocabulary is skipped, and its value is unchanged."""
    trainer = PPOTrainer(
        tiny_config(tiny_model_dir, tmp_path, "train.steps=1"), reward=fraction_positive, prompts=PROMPTS
    )
    s = trainer.rollout(PROMPTS)[0].samples
    with_grad = trainer.unwrapped(s.input_ids, s.attention_mask, s.response_ids, 1.0, "float32")
    statistic = trainer.unwrapped(s.input_ids, s.attention_mask, s.response_ids, 1.0, "float32", entropy_grad=False)
    assert with_grad[1].grad_fn is not None and statistic[1].grad_fn is None
    assert statistic[0].grad_fn is not None  # the log-probs still train
    torch.testing.assert_close(statistic[1], with_grad[1].detach())


def test_lora_on_top_layers_reuses_the_frozen_layers_and_updates_exactly_as_a_full_forward(tiny_model_dir, tmp_path):
    """With lora.top_layers the update starts from the rollout's output of the frozen layers below.

    One iteration that way must give the same weights as one that recomputes every layer.
    """
    extra = [
        "train.steps=1",
        "train.checkpoint_every=0",
        "model.lora.enabled=true",
        "model.lora.r=4",
        "model.lora.top_layers=1",
        "optim.learning_rate=1e-2",
    ]
    reused = PPOTrainer(tiny_config(tiny_model_dir, tmp_path / "a", *extra), reward=fraction_positive, prompts=PROMPTS)
    depth = reused.unwrapped.policy.config.num_hidden_layers
    assert reused.unwrapped.frozen_layers == depth - 1 > 0
    experience, _, _ = reused.rollout(PROMPTS)
    s = experience.samples
    assert experience.frozen_states.shape[:2] == s.input_ids.shape
    with torch.no_grad():  # before the update the shortcut gives what the whole forward gives
        shortcut = reused.unwrapped(
            s.input_ids, s.attention_mask, s.response_ids, 1.0, "float32", frozen_states=experience.frozen_states
        )
        whole = reused.unwrapped(s.input_ids, s.attention_mask, s.response_ids, 1.0, "float32")
    for a, b in zip(shortcut, whole):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(reused.unwrapped.policy.get_base_model().get_decoder().layers) == depth  # the layers are put back

    reused = PPOTrainer(tiny_config(tiny_model_dir, tmp_path / "b", *extra), reward=fraction_positive, prompts=PROMPTS)
    reused.train()
    recomputed = PPOTrainer(
        tiny_config(tiny_model_dir, tmp_path / "c", *extra), reward=fraction_positive, prompts=PROMPTS
    )
    recomputed.unwrapped.frozen_layers = 0  # the plain path: every layer, every minibatch
    recomputed.train()
    assert read_jsonl(tmp_path / "b" / "samples.jsonl") == read_jsonl(tmp_path / "c" / "samples.jsonl")
    lora_b = [(n, p) for n, p in reused.unwrapped.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for _, p in lora_b), "the update did not move the adapters"
    for (name, p), (_, q) in zip(reused.unwrapped.named_parameters(), recomputed.unwrapped.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("batch_size, derived", [(16, 4), (12, 3), (8, 2), (6, 1), (2, 1), (1, 1)])
def test_mini_batch_size_is_derived_from_the_batch_size(batch_size, derived):
    config = load_config(PPOConfig, overrides=[f"train.batch_size={batch_size}"])
    assert config.train.mini_batch_size == 0 and config.mini_batch_size == derived
    assert config.micro_batch_size == derived
    assert config.optimizer_steps == 20 * 4 * (batch_size // derived)  # steps x epochs x minibatches per epoch


def test_batch_size_alone_gives_a_working_run(tiny_model_dir, tmp_path):
    # the default minibatch (0: derived) must fit any batch size; 2 -> minibatches of 1
    out = tmp_path / "run"
    code = main(["ppo", "--set", f"model.name={tiny_model_dir}", "train.batch_size=2", "train.steps=1",
                 "generation.max_new_tokens=3", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert "mini_batch_size: 0" in (out / "config.yaml").read_text()  # stays derived in the record
    assert len(read_jsonl(out / "metrics.jsonl")) == 1


def untimed(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/"))} for m in metrics]


def test_cli_resume_continues_with_the_runs_own_config_and_ends_bitwise_equal(tiny_model_dir, tmp_path):
    settings = ["--set", f"model.name={tiny_model_dir}", "model.dtype=float32", "train.batch_size=4",
                "generation.max_new_tokens=8", "kl.coef=0.2", "train.steps=2", "train.checkpoint_every=1",
                "optim.learning_rate=1e-3"]  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["ppo", *settings, "--out", str(straight)]) == 0
    assert main(["ppo", *settings, "--out", str(interrupted)]) == 0
    config_before = (interrupted / "config.yaml").read_text()
    # as if the run had died after step 1: no step-2 checkpoint, no final/
    for name in ("checkpoints/step-2", "final"):
        shutil.rmtree(interrupted / name)
    assert main(["ppo", "--resume", "--out", str(interrupted)]) == 0  # nothing else: the run's own config.yaml
    assert (interrupted / "config.yaml").read_text() == config_before
    metrics = read_jsonl(interrupted / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    assert [m["kl/coef"] for m in metrics] == [0.2, 0.2]
    assert untimed(metrics) == untimed(read_jsonl(straight / "metrics.jsonl"))
    a, b = _final_weights(straight), _final_weights(interrupted)
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(a[n], initial[n]) for n in a if n in initial), "training changed nothing"
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    critic_a = load_file(str(straight / "final" / "critic.safetensors"))
    critic_b = load_file(str(interrupted / "final" / "critic.safetensors"))
    assert all(torch.equal(critic_a[n], critic_b[n]) for n in critic_a)


def test_ptx_mixes_the_demonstration_loss_into_the_update(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir, tmp_path, "train.steps=1", "ppo.ptx_coef=0.5", f"data.ptx={DEMONSTRATIONS}",
        "train.checkpoint_every=0",
    )  # fmt: skip
    PPOTrainer(config, reward=fraction_positive, prompts=PROMPTS).train()
    (metrics,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert 0 < metrics["ptx/loss"] < 20  # a token NLL of an untrained model: about log(vocabulary)


def test_whitening_across_processes_equals_whitening_the_whole_batch():
    # two processes with (2, 3) and (2, 2) advantages; the gather right-pads to 3 columns and concatenates
    x = [torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]]), torch.tensor([[5.0, 6.0], [7.0, 8.0]])]
    mask = [torch.tensor([[True, True, True], [True, False, False]]), torch.ones(2, 2, dtype=torch.bool)]

    def gather(t):
        return torch.cat([x[0] if t.dtype != torch.bool else mask[0], torch.nn.functional.pad(t, (0, 1))])

    whitened = whiten_across(x[1], mask[1], gather, rank=1)
    # the 8 real values 1..8: mean 4.5, unbiased variance 6
    expected = (torch.tensor([[5.0, 6.0], [7.0, 8.0]]) - 4.5) / (6.0 + 1e-8) ** 0.5
    torch.testing.assert_close(whitened, expected)
