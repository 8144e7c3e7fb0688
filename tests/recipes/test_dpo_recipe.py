"""`rlhfkit dpo`: the cached reference, LoRA's reference, learning, the loss switch, the output contract, bad input."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.config import load_config
from rlhfkit.data.collate import tokenize_prompt_response
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.recipes.dpo import REFERENCE_FILE, DPOConfig, DPORun, pair_logprobs, reference_logprobs

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


def test_cached_reference_equals_a_fresh_computation_and_is_never_recomputed(tiny, comparisons, tmp_path):
    run = DPORun(
        make_config(
            tiny, comparisons, tmp_path / "run", "train.steps=3", "train.batch_size=4", "optim.learning_rate=1e-2"
        )
    )
    run.out.mkdir(parents=True)
    cache = run.cache_reference()
    fresh = load_causal_lm(tiny, load_tokenizer(tiny)).eval()
    records = [json.loads(line) for line in comparisons.read_text().splitlines()][: len(run.train_pairs)]
    with torch.no_grad():
        expected = [naive_logprob(fresh, run.tokenizer, r, r["chosen"]) for r in records]
    assert cache["train_chosen"].tolist() == pytest.approx(expected, abs=1e-4)
    on_disk = load_file(str(run.out / REFERENCE_FILE))
    assert torch.equal(on_disk["train_rejected"], cache["train_rejected"])
    # policy == reference before the first update: DPO's first loss is -log sigmoid(0) = log 2
    first = run.train_step(cache)
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    run.train_step(cache)
    with torch.no_grad():
        now, _ = pair_logprobs(run.model.eval(), run.train_pairs[:4], run.tokenizer.pad_token_id, "float32")
    assert not torch.allclose(now, cache["train_chosen"][:4], atol=1e-3)  # the policy moved ...
    assert torch.equal(
        load_file(str(run.out / REFERENCE_FILE))["train_chosen"], on_disk["train_chosen"]
    )  # ... the cache did not


def test_lora_reference_is_the_base_with_the_adapter_disabled(tiny, comparisons, tmp_path):
    run = DPORun(
        make_config(
            tiny, comparisons, tmp_path / "run", "model.lora.enabled=true", "model.lora.r=4", "train.kl_prompts=0"
        )
    )
    assert run.reference_copy is None  # one copy of weights
    with torch.no_grad():
        for name, parameter in run.model.named_parameters():
            if "lora_B" in name:  # B starts at 0 (adapter = identity); make the adapter matter
                parameter.normal_(0, 0.5)
    pairs = run.train_pairs[:5]
    ref_chosen, _ = reference_logprobs(run.model, pairs, run.tokenizer.pad_token_id, 2, "float32")
    base = load_causal_lm(tiny, load_tokenizer(tiny)).eval()
    with torch.no_grad():
        base_chosen, _ = pair_logprobs(base, pairs, run.tokenizer.pad_token_id, "float32")
        adapted_chosen, _ = pair_logprobs(run.model, pairs, run.tokenizer.pad_token_id, "float32")
    assert ref_chosen.tolist() == pytest.approx(base_chosen.tolist(), abs=1e-5)
    assert (adapted_chosen - base_chosen).abs().max() > 1e-2


def test_dpo_steps_raise_the_chosen_over_rejected_margin(tiny, comparisons, tmp_path):
    run = DPORun(
        make_config(
            tiny, comparisons, tmp_path / "run", "train.batch_size=8", "optim.learning_rate=3e-3", "train.kl_prompts=0"
        )
    )
    run.out.mkdir(parents=True)
    reference = run.cache_reference()
    before = run.evaluate_pairs(reference)
    assert before["eval/reward_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    for _ in range(10):
        run.train_step(reference)
    after = run.evaluate_pairs(reference)
    train_chosen, train_rejected = pair_logprobs(
        run.model.eval(), run.train_pairs, run.tokenizer.pad_token_id, "float32"
    )
    margins = (train_chosen - reference["train_chosen"]) - (train_rejected - reference["train_rejected"])
    assert margins.mean() > 0.5 and (margins > 0).float().mean() > 0.9
    assert after["eval/reward_margin"] > 0.05 and after["eval/loss"] < math.log(2)


def test_ipo_is_picked_by_the_config_key(tiny, comparisons, tmp_path):
    run = DPORun(
        make_config(tiny, comparisons, tmp_path / "run", "train.loss=ipo", "train.beta=0.1", "train.kl_prompts=0")
    )
    run.out.mkdir(parents=True)
    # h = 0 before any update: IPO's loss is (0 - 1 / (2 * 0.1))^2 = 25
    assert run.train_step(run.cache_reference())["train/loss"] == pytest.approx(25.0, abs=1e-3)


def cli(out, tiny, comparisons, *extra):
    sets = [
        f"model.name={tiny}",
        "model.dtype=float32",
        f"data.train={comparisons}",
        "train.steps=4",
        "train.batch_size=4",
        "train.checkpoint_every=2",
        "train.eval_every=2",
        "train.kl_prompts=3",
        "generation.max_new_tokens=5",
        "optim.learning_rate=1e-3",
        *extra,
    ]
    return main(["dpo", "--out", str(out), *sum((["--set", s] for s in sets), [])])


def test_command_output_contract_and_exact_resume(tiny, comparisons, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert cli(full, tiny, comparisons) == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "samples.jsonl",
        "summary.json",
        "training.png",
        REFERENCE_FILE,
        "checkpoints/step-4",
        "final/config.json",
    ):
        assert (full / name).exists(), name
    assert list((full / "tensorboard").iterdir())
    metrics = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert {
        "train/reward_accuracy",
        "train/reward_margin",
        "train/logp_chosen",
        "train/logp_rejected",
        "eval/reward_accuracy",
        "kl/mean",
    } <= set(metrics[-1])
    summary = json.loads((full / "summary.json").read_text())
    assert summary["initial"]["kl/mean"] == pytest.approx(0.0, abs=1e-4)  # policy == reference: every log-ratio is 0
    load_causal_lm(str(full / "final"))  # loadable as a policy

    assert cli(resumed, tiny, comparisons) == 0
    import shutil

    shutil.rmtree(resumed / "checkpoints" / "step-4")
    shutil.rmtree(resumed / "final")
    assert main(["dpo", "--out", str(resumed), "--resume"]) == 0
    a, b = load_file(str(full / "final" / "model.safetensors")), load_file(str(resumed / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed / "metrics.jsonl").read_text() == (full / "metrics.jsonl").read_text()


def test_data_that_is_not_comparisons_names_file_and_line(tiny, tmp_path, capsys):
    path = tmp_path / "demos.jsonl"
    path.write_text('{"prompt": "tell me", "response": "good day"}\n')
    out = tmp_path / "run"
    assert cli(out, tiny, path) == 2
    assert f"{path}:1" in capsys.readouterr().err
    assert not out.exists()
