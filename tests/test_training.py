"""Optimiser schedule, response-only log-probs against a naive loop, data order, exact resume."""

import math

import pytest
import torch

from rlhfkit.checkpoint import load_checkpoint, save_checkpoint
from rlhfkit.data.collate import pad_batch
from rlhfkit.errors import UserError
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.training import (
    OptimConfig,
    batch_indices,
    build_optimizer,
    load_training_state,
    lr_multiplier,
    optimizer_step,
    training_state,
)
from rlhfkit.training.logprobs import response_token_nll, sequence_logprobs

ITEMS = [
    {"input_ids": [1, 106, 92, 2, 1, 107, 31, 57, 2], "response_mask": [False] * 6 + [True] * 3},
    {"input_ids": [1, 106, 5, 2, 1, 107, 40, 2], "response_mask": [False] * 6 + [True] * 2},
    {"input_ids": [1, 107, 33, 34, 35, 2], "response_mask": [False] * 2 + [True] * 4},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = str(build_tiny_model(tmp_path_factory.mktemp("tiny")))
    return directory, load_tokenizer(directory)


def naive_response_logprobs(model, item):
    """Each sequence alone, unpadded: log_softmax of the logits before each response token."""
    ids = torch.tensor([item["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return [logprobs[t - 1, item["input_ids"][t]].item() for t in range(1, len(ids[0])) if item["response_mask"][t]]


def test_lr_multiplier_by_hand():
    # warmup 2 of 10 steps: 1/2, 2/2, then linear from 1 at step 2 to 0 at step 10 (progress (s-2)/8)
    assert [lr_multiplier(s, 2, 10, "linear") for s in (0, 1, 2, 6, 10)] == [0.5, 1.0, 1.0, 0.5, 0.0]
    assert lr_multiplier(6, 2, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(9, 0, 10, "constant") == 1.0
    with pytest.raises(UserError, match="schedule"):
        OptimConfig(schedule="step")


@pytest.mark.parametrize("side", ["right", "left"])
def test_sequence_logprobs_match_a_naive_loop(tiny, side):
    directory, tokenizer = tiny
    model = load_causal_lm(directory, tokenizer)
    ids, attention, response = pad_batch(ITEMS, tokenizer.pad_token_id, side=side)
    with torch.no_grad():
        got = sequence_logprobs(model, ids, attention, response)
        nll = response_token_nll(model, ids, attention, response)
    naive = [naive_response_logprobs(model, item) for item in ITEMS]
    assert got.tolist() == pytest.approx([sum(row) for row in naive], abs=1e-4)
    # mean over the 3 + 2 + 4 = 9 response tokens of the batch, not the mean of per-row means
    assert nll.item() == pytest.approx(-sum(sum(row) for row in naive) / 9, abs=1e-5)


def test_batch_indices_cover_each_epoch_once_and_are_pure():
    first_epoch = batch_indices(10, 5, 0, seed=3) + batch_indices(10, 5, 1, seed=3)
    assert sorted(first_epoch) == list(range(10))
    assert batch_indices(10, 4, 2, seed=3) == batch_indices(10, 4, 2, seed=3)
    # step 2 of size 4 straddles epochs: last 2 of epoch 0's permutation, first 2 of epoch 1's
    assert batch_indices(10, 4, 2, seed=3)[:2] == first_epoch[8:]


def _train(model, optimizer, scheduler, batch, steps):
    for _ in range(steps):
        torch.manual_seed(len(optimizer.state) + int(scheduler.last_epoch))  # RNG use that resume must restore
        noise = torch.randn(()) * 1e-3
        (response_token_nll(model, *batch) + noise).backward()
        optimizer_step([p for p in model.parameters() if p.requires_grad], optimizer, scheduler, 1.0)


def test_save_and_restore_resume_bitwise(tiny, tmp_path):
    directory, tokenizer = tiny
    batch = pad_batch(ITEMS, tokenizer.pad_token_id)
    config = OptimConfig(learning_rate=1e-2, warmup_steps=1, schedule="linear")

    torch.manual_seed(0)
    straight = load_causal_lm(directory, tokenizer)
    optimizer, scheduler = build_optimizer(straight.parameters(), config, total_steps=4)
    _train(straight, optimizer, scheduler, batch, 4)

    stopped = load_causal_lm(directory, tokenizer)
    optimizer, scheduler = build_optimizer(stopped.parameters(), config, total_steps=4)
    _train(stopped, optimizer, scheduler, batch, 2)
    save_checkpoint(tmp_path, 2, *training_state(stopped, optimizer, scheduler))

    resumed = load_causal_lm(directory, tokenizer)
    optimizer, scheduler = build_optimizer(resumed.parameters(), config, total_steps=4)
    load_training_state(*load_checkpoint(tmp_path / "checkpoints" / "step-2"), resumed, optimizer, scheduler)
    _train(resumed, optimizer, scheduler, batch, 2)
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name
    assert not torch.equal(straight.lm_head.weight, load_causal_lm(directory, tokenizer).lm_head.weight)


def test_a_directory_written_atomically_survives_a_failed_rewrite(tmp_path):
    from rlhfkit.checkpoint import write_directory_atomic

    final = tmp_path / "final"
    write_directory_atomic(final, lambda d: (d / "weights").write_text("first"))
    assert (final / "weights").read_text() == "first"

    def crash(d):
        (d / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_directory_atomic(final, crash)
    assert (final / "weights").read_text() == "first"  # the earlier directory is untouched
    write_directory_atomic(final, lambda d: (d / "other").write_text("second"))
    assert sorted(p.name for p in final.iterdir()) == ["other"]  # replaced whole, nothing left from before
