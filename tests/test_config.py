"""Config: precision by measurement, key suggestions, sections, --help defaults."""

import json

import pytest
import torch

from rlhfkit.config import load_config
from rlhfkit.config_tree import qualified_keys
from rlhfkit.configs.reward import RMConfig
from rlhfkit.configs.sft import SFTConfig
from rlhfkit.errors import UserError
from rlhfkit.runtime import precision as precision_module


def test_auto_stays_auto_in_the_config_and_a_bad_precision_is_refused():
    from rlhfkit.configs.sft import SFTConfig

    assert load_config(SFTConfig).model.dtype == "auto"  # resolved later, on the loaded model
    assert load_config(SFTConfig, overrides=["model.dtype=float32"]).model.dtype == "float32"
    with pytest.raises(UserError, match="model.dtype must be auto, float32 or bfloat16, got 'fp16'"):
        load_config(SFTConfig, overrides=["model.dtype=fp16"])


@pytest.mark.parametrize("slower, expected", [("bfloat16", "float32"), ("float32", "bfloat16")])
def test_auto_picks_the_precision_the_probe_measured_faster_and_caches_it(
    tiny_model_dir, tmp_path, monkeypatch, slower, expected
):
    from rlhfkit.models import load_causal_lm, load_tokenizer

    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    timed = []

    def fake_time(model, ids, new_tokens, precision):
        timed.append(precision)
        return 2.0 if precision == slower else 1.0

    monkeypatch.setattr(precision_module, "_time_once", fake_time)
    model = load_causal_lm(tiny_model_dir, load_tokenizer(tiny_model_dir))
    cpu = torch.device("cpu")
    assert precision_module.resolve_precision("auto", model, cpu) == expected
    assert timed == ["float32", "bfloat16"] * precision_module.PROBE_ROUNDS  # alternated, 2x is not decisive
    cached = json.loads((tmp_path / "precision.json").read_text())
    (entry,) = cached.values()
    assert entry == {"precision": expected, "seconds": {"float32": 2.0 if slower == "float32" else 1.0,
                                                        "bfloat16": 2.0 if slower == "bfloat16" else 1.0}}  # fmt: skip
    timed.clear()
    assert precision_module.resolve_precision("auto", model, cpu) == expected and timed == []  # from the cache
    assert precision_module.resolve_precision("float32", model, cpu) == "float32"  # an explicit choice is kept


def test_a_decisively_slower_precision_is_measured_once(tiny_model_dir, monkeypatch):
    from rlhfkit.models import load_causal_lm, load_tokenizer

    timed = []
    monkeypatch.setattr(
        precision_module, "_time_once", lambda m, i, n, p: timed.append(p) or (20.0 if p == "bfloat16" else 1.0)
    )
    model = load_causal_lm(tiny_model_dir, load_tokenizer(tiny_model_dir))
    assert precision_module.probe(model) == {"float32": 1.0, "bfloat16": 20.0} and len(timed) == 2


def test_the_real_probe_leaves_weights_grads_and_rng_untouched(tiny_model_dir):
    from rlhfkit.models import load_causal_lm, load_tokenizer

    model = load_causal_lm(tiny_model_dir, load_tokenizer(tiny_model_dir)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = precision_module.probe(model)
    assert set(seconds) == {"float32", "bfloat16"} and all(s > 0 for s in seconds.values())
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_run_records_the_resolved_precision_in_config_yaml(tiny_model_dir, tmp_path, monkeypatch):
    from rlhfkit.cli import main

    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_module, "_time_once", lambda m, i, n, p: 1.0 if p == "float32" else 5.0)
    out = tmp_path / "run"
    args = ["sft", "--set", f"model.name={tiny_model_dir}", "train.steps=1", "train.eval_samples=0", "--out", str(out)]
    assert main(args) == 0
    assert "dtype: float32" in (out / "config.yaml").read_text()
    assert json.loads((out / "summary.json").read_text())["precision"] == "float32"


def test_a_typo_gets_the_closest_key_even_in_another_section():
    from rlhfkit.configs.sft import SFTConfig

    with pytest.raises(UserError, match=r"'lora.enabled'; did you mean 'model.lora.enabled'\?"):
        load_config(SFTConfig, overrides=["lora.enabled=true"])
    with pytest.raises(UserError, match=r"'trian.steps'; did you mean 'train.steps'\?"):
        load_config(SFTConfig, overrides=["trian.steps=3"])
    with pytest.raises(UserError, match=r"'train.stepz'; did you mean 'train.steps'\?"):
        load_config(SFTConfig, overrides=["train.stepz=3"])


def test_a_section_given_as_a_scalar_is_refused_even_with_a_set_under_it(tmp_path):
    from rlhfkit.configs.sft import SFTConfig

    path = tmp_path / "config.yaml"
    path.write_text("train: 5\n")
    with pytest.raises(UserError, match="'train' is a section; expected a mapping, got 5"):
        load_config(SFTConfig, path, overrides=["train.steps=3"])
    with pytest.raises(UserError, match="'train' is a section"):
        load_config(SFTConfig, path)


def test_help_prints_the_defaults_a_run_really_uses(capsys):
    from rlhfkit.cli import main

    with pytest.raises(SystemExit):
        main(["sft", "--help"])
    text = capsys.readouterr().out
    assert "optim.learning_rate = 2e-05" in text  # SFT's own optimiser default, not OptimConfig's 1e-05


def test_a_section_reused_deeper_names_its_keys_by_their_full_path():
    assert (
        qualified_keys("train.steps must be positive, got 0", "rm.train.") == "rm.train.steps must be positive, got 0"
    )
    message = "train.batch_size 8 is not divisible by train.micro_batch_size 3"
    assert (
        qualified_keys(message, "rm.train.") == "rm.train.batch_size 8 is not divisible by rm.train.micro_batch_size 3"
    )
    assert qualified_keys("train.steps must be positive, got 0", "train.") == "train.steps must be positive, got 0"
    assert qualified_keys("monitor.gold must be empty", "rm.train.") == "monitor.gold must be empty"  # not its key
    with pytest.raises(UserError, match=r"^model\.lora\.r must be positive, got 0$"):
        load_config(SFTConfig, overrides=["model.lora.r=0"])
    with pytest.raises(UserError, match=r"^normalize\.generation\.top_k must be >= 0, got -1$"):
        load_config(RMConfig, overrides=["normalize.generation.top_k=-1"])
