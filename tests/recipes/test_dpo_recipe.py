"""`rlhfkit dpo`: the reference (computed once, kept in checkpoints), LoRA's reference, learning, micro-batching,
the loss switch, the output contract with the step-0 evaluation, exact resume, bad input."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.configs.dpo import DPOConfig
from rlhfkit.data.collate import tokenize_prompt_response
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.recipes.dpo import REFERENCE, DPOTrainer
from rlhfkit.training.preferences import pair_logprobs, reference_logprobs

GOOD = ["good day", "great fun", "happy and kind", "love the music", "wonderful food", "nice friend"]
BAD = ["bad day", "awful pain", "sad and angry", "hate the music", "terrible food", "poor friend"]
PROMPTS = ["tell me about the day", "what do you think of the movie", "how is the weather", "say what you feel"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=32, num_layers=2))


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [{"prompt": p, "chosen": g, "rejected": b} for p in PROMPTS for g, b in zip(GOOD, BAD)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_config(tiny, comparisons, out, *sets):
    base = [
        f"model.name={tiny}",
        "model.dtype=float32",
        f"data.train={comparisons}",
        f"out={out}",
        "train.kl_prompts=3",
        "generation.max_new_tokens=5",
    ]
    return load_config(DPOConfig, None, [*base, *sets])


def naive_logprob(model, tokenizer, record, response):
    """Sum of log p(response token | prefix) for one unpadded sequence."""
    item = tokenize_prompt_response(tokenizer, record, response, 256)
    ids = torch.tensor([item["input_ids"]])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    mask = torch.tensor(item["response_mask"][1:])
    return logprobs[torch.arange(len(targets)), targets][mask].sum().item()


def test_reference_equals_a_fresh_computation_and_is_read_back_from_the_checkpoint(tiny, comparisons, tmp_path):
    config = make_config(tiny, comparisons, tmp_path / "run", "train.batch_size=4", "optim.learning_rate=1e-2")
    trainer = DPOTrainer(config)
    fresh = load_causal_lm(tiny, load_tokenizer(tiny)).eval()
    records = [json.loads(line) for line in comparisons.read_text().splitlines()][: len(trainer.pairs["train"])]
    with torch.no_grad():
        expected = [naive_logprob(fresh, trainer.tokenizer, r, r["chosen"]) for r in records]
    assert trainer.reference["train"][:, 0].tolist() == pytest.approx(expected, abs=1e-4)
    first = {split: logprobs.clone() for split, logprobs in trainer.reference.items()}
    # policy == reference before the first update: DPO's first loss is -log sigmoid(0) = log 2
    assert trainer.train_step()[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    trainer.train_step()
    with torch.no_grad():
        now = pair_logprobs(
            trainer.unwrapped.eval(), trainer.pairs["train"][:4], trainer.tokenizer.pad_token_id, trainer.runtime
        )
    assert not torch.allclose(now, trainer.reference["train"][:4], atol=1e-3)  # the policy moved ...
    tensors, state = trainer.checkpoint_state()
    assert all(torch.equal(tensors[REFERENCE][split], first[split]) for split in first)  # ... the reference did not

    # on resume the checkpoint's reference is read back, not recomputed (a marked copy shows which) ...
    marked = {**tensors, REFERENCE: {split: logprobs + 1.0 for split, logprobs in tensors[REFERENCE].items()}}
    resumed = DPOTrainer(config)
    resumed.load_checkpoint_state(marked, state)
    assert torch.equal(resumed.reference["train"], first["train"] + 1.0)
    # ... and a checkpoint without it has it computed from the initial policy, before the weights are restored
    older = DPOTrainer(config)
    older.load_checkpoint_state({name: group for name, group in tensors.items() if name != REFERENCE}, state)
    assert torch.equal(older.reference["train"], first["train"])
    older._reference, older.step = None, 2  # a moved policy is no longer the reference
    with pytest.raises(RuntimeError, match="before the policy moves"):
        older.train_step()


def test_lora_reference_is_the_base_with_the_adapter_disabled(tiny, comparisons, tmp_path):
    trainer = DPOTrainer(
        make_config(
            tiny, comparisons, tmp_path / "run", "model.lora.enabled=true", "model.lora.r=4", "train.kl_prompts=0"
        )
    )
    assert trainer.reference_copy is None  # one copy of weights
    model, pad, runtime = trainer.unwrapped, trainer.tokenizer.pad_token_id, trainer.runtime
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # B starts at 0 (adapter = identity); make the adapter matter
                parameter.normal_(0, 0.5)
    pairs = trainer.pairs["train"][:5]
    ref_chosen = reference_logprobs(model, pairs, pad, 2, runtime)[:, 0]
    base = load_causal_lm(tiny, load_tokenizer(tiny)).eval()
    with torch.no_grad():
        base_chosen = pair_logprobs(base, pairs, pad, runtime)[:, 0]
        adapted_chosen = pair_logprobs(model, pairs, pad, runtime)[:, 0]
    assert ref_chosen.tolist() == pytest.approx(base_chosen.tolist(), abs=1e-5)
    assert (adapted_chosen - base_chosen).abs().max() > 1e-2


def test_dpo_steps_raise_the_chosen_over_rejected_margin(tiny, comparisons, tmp_path):
    trainer = DPOTrainer(
        make_config(
            tiny, comparisons, tmp_path / "run", "train.batch_size=8", "optim.learning_rate=3e-3", "train.kl_prompts=0"
        )
    )
    before, _ = trainer.evaluate()
    assert before["eval/reward_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    for _ in range(10):
        trainer.train_step()
    after, _ = trainer.evaluate()
    with torch.no_grad():
        policy = pair_logprobs(
            trainer.unwrapped.eval(), trainer.pairs["train"], trainer.tokenizer.pad_token_id, trainer.runtime
        )
    chosen_ratio, rejected_ratio = (policy - trainer.reference["train"]).unbind(1)
    margins = chosen_ratio - rejected_ratio
    assert margins.mean() > 0.5 and (margins > 0).float().mean() > 0.9
    assert after["eval/reward_margin"] > 0.05 and after["eval/loss"] < math.log(2)


def one_step_gradients(trainer):
    """The gradients the optimiser steps with, and the step's metrics."""
    gradients, step = {}, trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        named = trainer.unwrapped.named_parameters()
        gradients.update({name: p.grad.detach().clone() for name, p in named if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    metrics, _ = trainer.train_step()
    return gradients, metrics


def test_micro_batches_give_the_gradient_of_the_whole_batch(tiny, comparisons, tmp_path):
    settings = ["train.batch_size=4", "train.kl_prompts=0", "optim.max_grad_norm=0"]
    whole, whole_metrics = one_step_gradients(DPOTrainer(make_config(tiny, comparisons, tmp_path / "a", *settings)))
    split, split_metrics = one_step_gradients(
        DPOTrainer(make_config(tiny, comparisons, tmp_path / "b", *settings, "train.micro_batch_size=1"))
    )
    assert whole.keys() == split.keys() and all(torch.count_nonzero(g) > 0 for g in whole.values())
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-5, atol=1e-6, msg=name)
    assert split_metrics == pytest.approx(whole_metrics, rel=1e-5)


def test_ipo_is_picked_by_the_config_key(tiny, comparisons, tmp_path):
    trainer = DPOTrainer(
        make_config(tiny, comparisons, tmp_path / "run", "train.loss=ipo", "train.beta=0.1", "train.kl_prompts=0")
    )
    # h = 0 before any update: IPO's loss is (0 - 1 / (2 * 0.1))^2 = 25
    assert trainer.train_step()[0]["train/loss"] == pytest.approx(25.0, abs=1e-3)


def cli(out, tiny, comparisons, *extra):
    sets = [
        f"model.name={tiny}",
        "model.dtype=float32",
        f"data.train={comparisons}",
        "data.max_length=14",
        "train.steps=4",
        "train.batch_size=3",
        "train.beta=0.3",
        "train.checkpoint_every=2",
        "train.eval_every=2",
        "train.kl_prompts=3",
        "generation.max_new_tokens=5",
        "optim.learning_rate=1e-3",
        *extra,
    ]
    return main(["dpo", "--out", str(out), *sum((["--set", s] for s in sets), [])])


def test_command_output_contract_and_exact_resume(tiny, comparisons, tmp_path):
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    assert cli(full, tiny, comparisons) == 0
    for name in ("config.yaml", "metrics.jsonl", "samples.jsonl", "summary.json", "training.png",
                 f"checkpoints/step-4/{REFERENCE}.safetensors", "final/config.json"):  # fmt: skip
        assert (full / name).exists(), name
    assert list((full / "tensorboard").iterdir())
    metrics = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]
    assert not any(key.startswith("train/") for key in metrics[0])  # step 0: the evaluation before any update
    train_keys = {"train/reward_accuracy", "train/reward_margin", "train/logp_chosen", "train/logp_rejected"}
    assert train_keys | {"eval/reward_accuracy", "kl/mean"} <= set(metrics[-1])
    summary = json.loads((full / "summary.json").read_text())
    assert summary["initial"] == {key: value for key, value in metrics[0].items() if key != "step"}
    assert summary["final_eval"] == {k: v for k, v in metrics[-1].items() if k.startswith(("eval/", "kl/"))}
    assert summary["initial"]["kl/mean"] == pytest.approx(0.0, abs=1e-4)  # policy == reference: every log-ratio is 0
    assert summary["initial"]["eval/reward_margin"] == 0.0
    assert (summary["steps"], summary["beta"], summary["num_processes"]) == (4, 0.3, 1)
    load_causal_lm(str(full / "final"))  # loadable as a policy

    assert cli(stopped, tiny, comparisons) == 0
    config_yaml = (stopped / "config.yaml").read_text()
    shutil.rmtree(stopped / "checkpoints" / "step-4")  # as if killed during step 4
    shutil.rmtree(stopped / "final")
    assert main(["dpo", "--resume", "--out", str(stopped)]) == 0  # the rest of the config comes from config.yaml
    assert (stopped / "config.yaml").read_text() == config_yaml
    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(str(stopped / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert (stopped / name).read_text() == (full / name).read_text(), name


def test_data_that_is_not_comparisons_names_file_and_line(tiny, tmp_path, capsys):
    path = tmp_path / "demos.jsonl"
    path.write_text('{"prompt": "tell me", "response": "good day"}\n')
    out = tmp_path / "run"
    assert cli(out, tiny, path) == 2
    assert f"{path}:1" in capsys.readouterr().err
    assert not out.exists()
