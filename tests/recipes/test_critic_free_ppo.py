"""GRPO, RLOO and REINFORCE++ through the PPO trainer: the advantages the loss gets, no critic, the commands."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.assets import ARITHMETIC
from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.recipes.ppo import PPOConfig, PPOTrainer
from rlhfkit.tracking import read_jsonl
from rlhfkit.training import ppo

POSITIVE = {"good", "great", "happy", "love", "wonderful", "nice", "best", "joy"}
PROMPTS = [{"prompt": p} for p in ["tell me a day", "write a book", "how is the weather", "say what you think"]]
CRITIC_FREE = ["grpo", "rloo", "reinforce++", "reinforce++-baseline"]


def fraction_positive(prompts, responses, records):
    """A simple programmatic reward: the share of response words from a small positive list."""
    return [sum(word in POSITIVE for word in r.split()) / max(len(r.split()), 1) for r in responses]


def scripted(scores):
    """A reward that returns `scores` in row order, whatever was sampled."""
    return lambda prompts, responses, records: list(scores)


def critic_free_config(model_dir, out, estimator, *extra):
    return load_config(
        PPOConfig,
        overrides=[
            f"model.name={model_dir}", "model.dtype=float32", f"algorithm.advantage={estimator}",
            "algorithm.group_size=4", "train.batch_size=2", "train.mini_batch_size=8", "train.ppo_epochs=1",
            "generation.max_new_tokens=6", "train.steps=1", "train.checkpoint_every=0", f"out={out}", *extra,
        ],
    )  # fmt: skip


def capture_advantages(monkeypatch):
    """The (advantages, mask) pairs that the trainer passes to the clipped policy loss."""
    fed, clipped_policy_loss = [], ppo.clipped_policy_loss

    def recording(sample, clip_range, reduce):
        fed.append((sample.advantages.detach().clone(), sample.mask.clone()))
        return clipped_policy_loss(sample, clip_range, reduce)

    monkeypatch.setattr(ppo, "clipped_policy_loss", recording)
    return fed


# Two groups of K = 4: scores (1, 0, 0, 0) and (2, 2, 2, 2). The first group's mean is 1/4, its
# Bessel-corrected std sqrt((0.75² + 3·0.25²) / 3) = 1/2; the second group's scores are all equal.
#   GRPO     (r - mean) / std    :  1.5, -0.5, -0.5, -0.5 | 0, 0, 0, 0
#   Dr. GRPO  r - mean           :  0.75, -0.25 (x3)      | 0 (x4)
#   RLOO      r - mean of others :  1 - 0 = 1, 0 - 1/3    | 0 (x4)
SCORES = [1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0]
HAND_ADVANTAGES = {
    "grpo": [1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0],
    "dr-grpo": [0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0],
    "rloo": [1.0, -1 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("name", list(HAND_ADVANTAGES))
def test_the_loss_gets_the_hand_computed_group_advantages(tiny_model_dir, tmp_path, monkeypatch, name):
    estimator, extra = ("grpo", ["algorithm.scale_by_std=false"]) if name == "dr-grpo" else (name, [])
    config = critic_free_config(tiny_model_dir, tmp_path, estimator, "algorithm.kl_in=loss", *extra)
    fed = capture_advantages(monkeypatch)
    PPOTrainer(config, reward=scripted(SCORES), prompts=PROMPTS[:2]).train()
    ((advantages, mask),) = fed  # one epoch of one minibatch of all 8 responses, rows shuffled
    assert advantages.shape[0] == 8
    assert torch.all(advantages[~mask] == 0), "padding must get no advantage"
    per_row = [advantages[i, mask[i]] for i in range(8)]
    assert all(torch.all(row == row[0]) for row in per_row), "a response's advantage is the same at every token"
    assert sorted(float(row[0]) for row in per_row) == pytest.approx(sorted(HAND_ADVANTAGES[name]), abs=1e-5)
    assert not any(torch.isnan(row).any() for row in per_row)


def test_reinforce_plus_plus_whitens_the_return_over_every_token_of_the_batch(tiny_model_dir, tmp_path):
    # KL as a loss term: the return at every token is the response's score (γ = 1, the score at the
    # last token); A_t = (score - μ) / σ with μ, σ over all real tokens of the batch
    config = critic_free_config(tiny_model_dir, tmp_path, "reinforce++", "algorithm.kl_in=loss")
    trainer = PPOTrainer(config, reward=scripted(SCORES), prompts=PROMPTS[:2])
    experience, _, _ = trainer.rollout(trainer.prompt_batch(0))
    mask = experience.samples.response_mask
    per_token = torch.tensor(SCORES)[:, None].expand_as(mask)[mask]
    expected = (torch.tensor(SCORES)[:, None] - per_token.mean()) / per_token.std()
    torch.testing.assert_close(experience.advantages, torch.where(mask, expected, 0.0), rtol=0, atol=1e-5)
    assert experience.values is None and experience.returns is None


def test_a_prompt_batch_is_whole_groups_of_consecutive_rows(tiny_model_dir, tmp_path):
    trainer = PPOTrainer(critic_free_config(tiny_model_dir, tmp_path, "rloo"), reward=scripted(SCORES), prompts=PROMPTS)
    records = trainer.prompt_batch(0)
    assert len(records) == 8 and records[0] is records[3] and records[4] is records[7] and records[3] != records[4]


def one_update_gradients(trainer):
    """The gradients of one update on a fixed rollout whose responses have unequal lengths (8, 2, 4, ... tokens)."""
    torch.manual_seed(1234)
    records = trainer.prompt_batch(0)
    samples = trainer.generate(records)
    for row, length in ((1, 2), (2, 4), (5, 1)):
        samples.response_mask[row, length:] = False
        samples.response_ids[row, length:] = trainer.tokenizer.pad_token_id
    experience, _ = trainer.score(samples, records)
    gradients = {}
    step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        gradients.update({n: p.grad.detach().clone() for n, p in trainer.unwrapped.named_parameters()})
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    trainer.update(experience)
    return gradients


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean_token_mean", "constant_normalizer"])
def test_micro_batches_give_the_gradient_of_the_whole_minibatch_for_each_aggregation(
    tiny_model_dir, tmp_path, aggregation
):
    extra = ["generation.max_new_tokens=8", f"algorithm.loss_aggregation={aggregation}", "algorithm.kl_in=loss"]
    gradients = [
        one_update_gradients(
            PPOTrainer(
                critic_free_config(tiny_model_dir, tmp_path, "grpo", f"train.micro_batch_size={micro}", *extra),
                reward=fraction_positive,
                prompts=PROMPTS[:2],
            )
        )
        for micro in (8, 2)
    ]
    whole, accumulated = gradients
    assert whole.keys() == accumulated.keys() and all(torch.count_nonzero(g) > 0 for g in whole.values())
    for name in whole:
        torch.testing.assert_close(whole[name], accumulated[name], rtol=1e-5, atol=1e-7, msg=name)


def test_the_aggregations_weigh_tokens_differently(tiny_model_dir, tmp_path):
    # with unequal lengths the three reductions are three different losses: the choice takes effect
    gradients = [
        one_update_gradients(
            PPOTrainer(
                critic_free_config(
                    tiny_model_dir,
                    tmp_path,
                    "grpo",
                    "generation.max_new_tokens=8",
                    f"algorithm.loss_aggregation={aggregation}",
                ),  # fmt: skip
                reward=fraction_positive,
                prompts=PROMPTS[:2],
            )
        )
        for aggregation in ("token_mean", "sequence_mean_token_mean", "constant_normalizer")
    ]
    name = next(n for n in gradients[0] if "lm_head" in n or "embed" in n)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert not torch.allclose(gradients[i][name], gradients[j][name], rtol=1e-3, atol=0), (i, j)


@pytest.mark.parametrize("estimator", CRITIC_FREE)
def test_each_estimator_raises_a_simple_reward_on_a_tiny_model(tiny_model_dir, tmp_path, estimator):
    # 4 prompts x 4 responses per iteration: the 16 responses of the PPO learning test
    config = critic_free_config(
        tiny_model_dir, tmp_path, estimator, "train.batch_size=4", "train.mini_batch_size=8", "train.ppo_epochs=4",
        "train.steps=12", "optim.learning_rate=1e-2", "kl.coef=0.01",
    )  # fmt: skip
    PPOTrainer(config, reward=fraction_positive, prompts=PROMPTS).train()
    scores = [m["reward/score_mean"] for m in read_jsonl(tmp_path / "metrics.jsonl")]
    first, last = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert first < 0.25
    assert last > first + 0.25, scores


def test_no_value_model_is_built_trained_or_saved(tiny_model_dir, tmp_path):
    config = critic_free_config(tiny_model_dir, tmp_path, "grpo", "train.steps=1", "train.checkpoint_every=1")
    trainer = PPOTrainer(config, reward=fraction_positive, prompts=PROMPTS)
    assert trainer.unwrapped.critic is None
    names = [name for name, _ in trainer.unwrapped.named_parameters()]
    assert names and all(name.startswith("policy.") for name in names)
    trainer.train()
    assert not (tmp_path / "final" / "critic.safetensors").exists()
    saved = load_file(str(tmp_path / "checkpoints" / "step-1" / "trainable.safetensors"))
    assert saved and all(name.startswith("policy.") for name in saved)
    (metrics,) = read_jsonl(tmp_path / "metrics.jsonl")
    assert not [key for key in metrics if key.startswith("value/")]
    assert metrics["kl/in_loss"] == 0.0 and metrics["algorithm/group_size"] == 4


def _expect_error(capsys, command, *args):
    code = main([command, *args])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "%|" not in line]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"rlhfkit {command}: error: ")
    return err[0]


def test_bad_settings_are_refused_with_one_line_naming_the_key(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--set", f"model.name={tiny_model_dir}", "--out", str(out)]
    for command in ("grpo", "rloo"):
        assert "algorithm.group_size" in _expect_error(capsys, command, *base, "--set", "algorithm.group_size=1")
    one = _expect_error(capsys, "ppo", *base, "--set", "algorithm.advantage=grpo", "algorithm.group_size=1")
    assert "algorithm.group_size" in one
    unknown = _expect_error(capsys, "ppo", *base, "--set", "algorithm.advantage=ppo2")
    assert "algorithm.advantage" in unknown and "ppo2" in unknown and "rloo" in unknown
    assert "algorithm.kl_in" in _expect_error(capsys, "grpo", *base, "--set", "algorithm.kl_in=both")
    assert "algorithm.kl_estimator" in _expect_error(capsys, "ppo", *base, "--set", "kl.estimator=k3")  # moved
    assert "critic.kind" in _expect_error(capsys, "grpo", *base, "--set", "critic.kind=separate")
    divide = _expect_error(capsys, "grpo", *base, "--set", "train.mini_batch_size=5")
    assert "4 x algorithm.group_size 4 = 16 responses" in divide and "5" in divide
    assert not out.exists()


def test_a_verifiable_prompt_without_a_reference_names_its_line_before_any_model_loads(tmp_path, capsys):
    prompts = tmp_path / "questions.jsonl"
    prompts.write_text('{"prompt": "1 + 1?", "reference": "2"}\n\n{"prompt": "2 + 2?"}\n')
    out = tmp_path / "out"
    error = _expect_error(
        capsys, "grpo", "--set", f"model.name={tmp_path / 'no-such-model'}", "reward.kind=verifiable",
        f"data.prompts={prompts}", "--out", str(out),
    )  # fmt: skip
    assert f"{prompts}:3" in error and "reference" in error
    assert not out.exists()


def test_ppo_with_grpo_on_the_packaged_verifiable_task(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["ppo", "--set", f"model.name={tiny_model_dir}", "algorithm.advantage=grpo", "reward.kind=verifiable",
                 "train.steps=1", "train.batch_size=2", "generation.max_new_tokens=4", "--out", str(out)])  # fmt: skip
    assert code == 0
    assert f"prompts: {ARITHMETIC}" in (out / "config.yaml").read_text()
    samples = read_jsonl(out / "samples.jsonl")
    assert len(samples) == 2 * 4  # the default group of 4 responses per prompt
    assert {s["score"] for s in samples} <= {0.0, 1.0}
    arithmetic = {json.loads(line)["prompt"] for line in ARITHMETIC.read_text().splitlines()}
    assert {s["prompt"] for s in samples} <= arithmetic


def untimed(metrics):
    return [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/"))} for m in metrics]


def test_grpo_command_resumes_with_its_own_config_and_ends_bitwise_equal(tiny_model_dir, tmp_path):
    settings = ["--set", f"model.name={tiny_model_dir}", "model.dtype=float32", "generation.max_new_tokens=6",
                "train.steps=2", "train.checkpoint_every=1", "optim.learning_rate=1e-3"]  # fmt: skip
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert main(["grpo", *settings, "--out", str(straight)]) == 0
    assert main(["grpo", *settings, "--out", str(interrupted)]) == 0
    config = (interrupted / "config.yaml").read_text()
    assert "advantage: grpo" in config and "kl_in: loss" in config and "batch_size: 4" in config
    for name in ("checkpoints/step-2", "final"):  # as if the run had died after step 1
        shutil.rmtree(interrupted / name)
    assert main(["grpo", "--resume", "--out", str(interrupted)]) == 0
    assert (interrupted / "config.yaml").read_text() == config
    metrics = read_jsonl(interrupted / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2] and metrics[0]["kl/in_loss"] == 1.0
    assert untimed(metrics) == untimed(read_jsonl(straight / "metrics.jsonl"))
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(interrupted / "final" / "model.safetensors"))
    initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert any(not torch.equal(a[n], initial[n]) for n in a if n in initial), "training changed nothing"
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert not (straight / "final" / "critic.safetensors").exists()
    assert json.loads((straight / "summary.json").read_text())["advantage"] == "grpo"


def test_rloo_command_takes_the_kl_in_the_reward(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    code = main(["rloo", "--set", f"model.name={tiny_model_dir}", "train.steps=1", "generation.max_new_tokens=4",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    (metrics,) = read_jsonl(out / "metrics.jsonl")
    assert metrics["kl/in_loss"] == 0.0 and "kl/loss" not in metrics and metrics["algorithm/group_size"] == 4
    assert len(read_jsonl(out / "samples.jsonl")) == 16


@pytest.mark.parametrize(
    "overrides, group, mini_batch, prompts",
    [
        ([], 1, 4, "prompts.jsonl"),  # PPO: 16 responses, minibatches of 4
        (["algorithm.advantage=grpo"], 4, 16, "prompts.jsonl"),  # 16 prompts x 4: 64 responses, minibatches of 16
        (["algorithm.advantage=reinforce++"], 1, 4, "prompts.jsonl"),  # not a group estimator: one response each
        (["algorithm.advantage=rloo", "train.batch_size=3", "reward.kind=verifiable"], 4, 3, "arithmetic.jsonl"),
    ],
)
def test_derived_sizes_hold_together(overrides, group, mini_batch, prompts):
    config = load_config(PPOConfig, overrides=overrides)
    assert config.algorithm.group_size == 0 and config.train.mini_batch_size == 0  # config.yaml keeps "derived"
    assert config.algorithm.responses_per_prompt == group and config.mini_batch_size == mini_batch
    responses = config.train.batch_size * group
    assert config.optimizer_steps == config.train.steps * config.train.ppo_epochs * responses // mini_batch
    assert config.data.prompts.endswith(prompts)
