"""`rlhfkit sft` on the tiny model: response-only loss, learning, LoRA merge, exact resume, bad input."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit.cli import main
from rlhfkit.data.collate import pad_batch, tokenize_prompt_response
from rlhfkit.models import load_causal_lm, load_tokenizer
from rlhfkit.recipes.sft import batch_loss_backward, response_tokens
from rlhfkit.runtime import Runtime

POSITIVE = {"good", "great", "happy", "love", "wonderful", "joy"}
TOPICS = "cat dog food movie book weather friend house music game work life water tree city day".split()


@pytest.fixture(scope="module")
def demonstrations(tmp_path_factory):
    """Prompts about a topic, answered with the same cheerful words: easy for a tiny model to learn."""
    path = tmp_path_factory.mktemp("data") / "demos.jsonl"
    rows = [
        {"prompt": f"tell me about the {topic}", "response": "good great happy love wonderful joy"}
        for topic in TOPICS
        for _ in range(2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def common(tiny, out, *extra):
    return [
        "--set",
        f"model.name={tiny}",
        "model.dtype=float32",
        "train.eval_samples=0",
        "train.batch_size=4",
        f"out={out}",
        *extra,
    ]


def test_loss_is_response_only_and_micro_batching_is_exact(tiny):
    tokenizer = load_tokenizer(tiny)
    model = load_causal_lm(tiny, tokenizer)
    items = [
        tokenize_prompt_response(tokenizer, {"prompt": p}, r, 64)
        for p, r in [("tell me a day", "good day"), ("say no", "bad sad pain")]
    ]
    captured = []

    def keep_logits(module, inputs, output):
        if output.requires_grad:
            output.retain_grad()
            captured.append(output)

    model.lm_head.register_forward_hook(keep_logits)
    runtime = Runtime("float32")
    tokens = response_tokens(items)
    loss = batch_loss_backward(model, items, tokenizer.pad_token_id, runtime, micro_batch_size=2, total_tokens=tokens)

    # Hand computation, one unpadded sequence at a time: -mean over the 3 + 4 response tokens (EOS included)
    # of log softmax(logits[t - 1])[token t].
    naive, prompt_nll = [], []  # a random model is near-uniform on both, so the gradient check below is the sharp one
    for item in items:
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=torch.tensor([item["input_ids"]])).logits[0].double(), -1)
        for t in range(1, len(item["input_ids"])):
            (naive if item["response_mask"][t] else prompt_nll).append(-logprobs[t - 1, item["input_ids"][t]].item())
    assert len(naive) == 7
    assert loss == pytest.approx(sum(naive) / 7, abs=1e-5)

    # The gradient reaching the logits that predict prompt tokens is exactly zero; response positions get one.
    grad = captured[0].grad  # (B, T, V)
    _, _, response_mask = pad_batch(items, tokenizer.pad_token_id)
    predicts_response = torch.zeros_like(response_mask)
    predicts_response[:, :-1] = response_mask[:, 1:]
    assert grad[~predicts_response].abs().max().item() == 0.0
    assert (grad[predicts_response].abs().sum(-1) > 0).all()

    # Two micro-batches of one give the same gradient as one batch of two.
    whole = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    assert batch_loss_backward(
        model, items, tokenizer.pad_token_id, runtime, micro_batch_size=1, total_tokens=tokens
    ) == pytest.approx(loss, abs=1e-6)
    for a, p in zip(whole, model.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-5)


def positive_share(model_dir, tokenizer, seed=0):
    """Share of sampled answer words (16 held-out prompts) that are the demonstrations' cheerful words."""
    from rlhfkit.config import GenerationConfig
    from rlhfkit.data import format_prompt
    from rlhfkit.rollout.generation import decode_responses, sample

    torch.manual_seed(seed)
    model = load_causal_lm(model_dir, tokenizer)
    texts = [format_prompt(tokenizer, {"prompt": f"tell me about a {t}"}) for t in TOPICS]
    words = " ".join(
        decode_responses(tokenizer, sample(model, tokenizer, texts, GenerationConfig(max_new_tokens=8), "float32"))
    ).split()
    return sum(w in POSITIVE for w in words) / max(1, len(words))


def test_sft_lowers_held_out_loss_and_moves_generations(tiny, demonstrations, tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "sft",
            *common(
                tiny,
                out,
                f"data.train={demonstrations}",
                "data.eval_fraction=0.25",
                "train.steps=30",
                "train.eval_every=15",
                "optim.learning_rate=0.01",
            ),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_loss_final"] < 0.5 * summary["eval_loss_initial"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(0, 31))  # step 0: the evaluation before training
    assert metrics[-1]["eval/loss"] == summary["eval_loss_final"]
    assert (out / "training.png").is_file() and (out / "config.yaml").is_file()
    tokenizer = load_tokenizer(str(out / "final"))
    before, after = positive_share(tiny, tokenizer), positive_share(str(out / "final"), tokenizer)
    assert after > 0.8 and before < 0.2, (before, after)


def test_lora_final_is_a_merged_plain_model(tiny, demonstrations, tmp_path):
    out = tmp_path / "lora"
    assert (
        main(
            [
                "sft",
                *common(
                    tiny,
                    out,
                    f"data.train={demonstrations}",
                    "train.steps=3",
                    "model.lora.enabled=true",
                    "model.lora.r=4",
                    "optim.learning_rate=0.01",
                ),
            ]
        )
        == 0
    )
    final = out / "final"
    assert not (final / "adapter_config.json").exists()
    merged, base = load_file(str(final / "model.safetensors")), load_file(str(Path(tiny) / "model.safetensors"))
    assert set(merged) == set(base)
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])  # not an adapter target


def test_resume_after_a_stop_ends_bitwise_equal(tiny, demonstrations, tmp_path):
    args = [
        f"data.train={demonstrations}",
        "train.steps=4",
        "train.checkpoint_every=2",
        "train.eval_every=2",
        "optim.learning_rate=0.01",
        "optim.schedule=linear",
        "train.micro_batch_size=2",
    ]
    assert main(["sft", *common(tiny, tmp_path / "straight", *args)]) == 0
    stopped = tmp_path / "stopped"
    assert main(["sft", *common(tiny, stopped, *args)]) == 0
    shutil.rmtree(stopped / "checkpoints" / "step-4")  # as if killed during step 3
    shutil.rmtree(stopped / "final")
    assert (
        main(["sft", "--resume", "--out", str(stopped)]) == 0
    )  # the rest of the config comes from the run's config.yaml
    a, b = (
        load_file(str(tmp_path / "straight" / "final" / "model.safetensors")),
        load_file(str(stopped / "final" / "model.safetensors")),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(line)["step"] for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert metrics == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "rows, settings, message",
    [
        ([{"prompt": "hi", "response": ""}], [], "data.jsonl:1: field 'response' is empty"),
        (
            [{"prompt": "hi", "response": "good"}, {"prompt": "a", "chosen": "b", "rejected": "c"}],
            [],
            "data.jsonl:2: this looks like a comparisons record",
        ),
        ([{"prompt": "hi", "response": "good"}] * 4, ["train.bogus=1"], "unknown config key 'train.bogus'"),
        (
            [{"prompt": "hi", "response": "good"}] * 4,
            ["train.micro_batch_size=3"],
            "train.batch_size 4 is not divisible by train.micro_batch_size 3",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(tiny, refused, rows, settings, message):
    assert message in refused("sft", rows, lambda out, data: common(tiny, out, data, *settings))
