"""Two processes with the same global batch give the same update as one process (gloo on CPU): SFT, RM, DPO, PPO.

Each case is built so that a per-process mean averaged by DDP would be wrong: records of very different
lengths, or a batch that splits unevenly (2 + 1) between the processes.
"""

import json

import pytest
import torch
from two_process import METRIC, assert_same_update, run_alone_and_in_two

from rlhfkit.runtime import Runtime


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def demonstrations(tmp_path):
    """Responses of very different lengths."""
    lengths = [("cats", 1), ("dogs", 7), ("rain", 2), ("sun", 5), ("tea", 3)]
    rows = [{"prompt": f"say something about {w}", "response": " ".join(["good"] * n)} for w, n in lengths]
    return write_jsonl(tmp_path / "demos.jsonl", rows)


def rankings(tmp_path):
    """Rankings of 2 to 4 responses; a batch of 3 records puts 2 on one process and 1 on the other."""
    words = "good great happy bad sad awful the cat dog food movie".split()
    rows = [{"prompt": f"tell me about the {words[6 + i % 5]}", "responses": [" ".join(words[j : j + 2 + i % 3])
             for j in range(2 + i % 3)]} for i in range(8)]  # fmt: skip
    return write_jsonl(tmp_path / "rankings.jsonl", rows)


def pairs(tmp_path):
    """3 pairs split 2 + 1, responses of different lengths."""
    rows = [{"prompt": f"say something about {w}", "chosen": " ".join(["good"] * n), "rejected": " ".join(["bad"] * m)}
            for w, n, m in [("cats", 1, 4), ("dogs", 6, 2), ("rain", 2, 1), ("sun", 4, 5), ("tea", 3, 3)]]  # fmt: skip
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


ONE_STEP = {
    "sft": (demonstrations, ["data.eval_fraction=0.2", "train.batch_size=4", "train.micro_batch_size=1",
                             "train.eval_samples=0"], 29521),
    "rm": (rankings, ["data.eval_fraction=0.25", "train.batch_size=3", "normalize.enabled=false"], 29531),
    # no clipping: a clipped gradient would hide a wrongly scaled one
    "dpo": (pairs, ["data.eval_fraction=0.2", "train.batch_size=3", "train.kl_prompts=0", "train.beta=0.5",
                    "optim.max_grad_norm=0", "optim.learning_rate=1e-2"], 29541),
}  # fmt: skip


@pytest.mark.parametrize("command", ONE_STEP)
def test_two_processes_give_the_same_gradient_as_one(tiny_model_dir, tmp_path, command):
    data, overrides, port = ONE_STEP[command]
    one, two = run_alone_and_in_two(tmp_path, port, command, tiny_model_dir, data(tmp_path), *overrides)
    assert command != "rm" or "head.weight" in one
    # DPO at the reference: every margin is 0 up to rounding, which differs with the padding (accuracy a coin toss)
    accuracy = METRIC + "train/reward_accuracy"
    # the ranking loss reads differences of scores: the head's bias gets no gradient (0 up to rounding)
    unmoved = (METRIC, "head.bias") if command == "rm" else (METRIC,)
    assert_same_update(one, two, zero_allowed=lambda name: name.startswith(unmoved), ignored={accuracy})


PPO = [
    ("1", [], 29517),
    ("1", ["model.lora.enabled=true", "model.lora.r=4", "model.lora.top_layers=1"], 29518),
    ("4", ["algorithm.advantage=grpo"], 29551),
    ("4", ["algorithm.advantage=reinforce++", "algorithm.loss_aggregation=constant_normalizer"], 29552),
]


@pytest.mark.parametrize(
    "group_size, overrides, port", PPO, ids=["ppo", "ppo-lora-top-layer", "grpo", "reinforce++-constant-normalizer"]
)
def test_two_processes_give_the_same_ppo_update_as_one(tiny_model_dir, tmp_path, group_size, overrides, port):
    one, two = run_alone_and_in_two(tmp_path, port, "ppo", tiny_model_dir, group_size, *overrides)
    # the statistics (early stopping reads approx-KL) are the one-process means on every process too
    assert METRIC + "policy/approx_kl" in one and (group_size == "1" or not any("value" in name for name in one))
    # LoRA's A matrices get no gradient at the first step (B starts at zero)
    unmoved = ("value", "lora_A", METRIC)
    assert_same_update(one, two, zero_allowed=lambda name: any(part in name for part in unmoved))


def test_each_process_has_its_own_random_streams_and_gets_them_back(tmp_path):
    one, two = run_alone_and_in_two(tmp_path, 29561, "rng")
    # each (3 draws: before the restore, after it, after restoring only process 0's streams; 2 values)
    (alone,), (first, second) = one["draws"], two["draws"]
    assert torch.equal(first, alone)  # process 0 draws what one process draws from the same seed
    assert not torch.equal(second[0], first[0])  # the other process samples with other draws
    assert torch.equal(first[0], first[1]) and torch.equal(second[0], second[1])  # each got its own streams back
    # resumed on more processes than saved: process 0 gets its streams back, process 1 does not copy them
    assert torch.equal(first[2], first[0]) and not torch.equal(second[2], first[0])


def test_a_checkpoint_of_one_stream_set_restores_every_process():
    runtime = Runtime(seed=5)
    saved = runtime.rng_states()
    assert len(saved) == 1
    first = torch.rand(3)
    runtime.set_rng_states(saved[0])  # a checkpoint written before each process had its own: one dict
    assert torch.equal(torch.rand(3), first)
