"""model.dtype=auto: bf16 only where the hardware computes it natively; the resolved value is what runs and is saved."""

import pytest
import torch

from rlhfkit.config import ModelConfig, fastest_precision, load_config, save_config
from rlhfkit.errors import UserError


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected", [(False, False, "float32"), (True, False, "bfloat16"), (False, True, "bfloat16")]
)
def test_auto_picks_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert fastest_precision() == expected
    assert ModelConfig(dtype="auto").dtype == expected
    assert ModelConfig(dtype="float32").dtype == "float32"  # an explicit choice is kept


def test_auto_is_saved_resolved_and_a_bad_precision_is_refused(tmp_path):
    from rlhfkit.recipes.ppo import PPOConfig

    config = load_config(PPOConfig, overrides=[])
    assert config.model.dtype == fastest_precision()
    save_config(config, tmp_path / "config.yaml")
    assert f"dtype: {fastest_precision()}" in (tmp_path / "config.yaml").read_text()
    with pytest.raises(UserError, match="model.dtype must be auto, float32 or bfloat16, got 'fp16'"):
        load_config(PPOConfig, overrides=["model.dtype=fp16"])


def test_a_typo_gets_the_closest_key_even_in_another_section():
    from rlhfkit.recipes.sft import SFTConfig

    with pytest.raises(UserError, match=r"'lora.enabled'; did you mean 'model.lora.enabled'\?"):
        load_config(SFTConfig, overrides=["lora.enabled=true"])
    with pytest.raises(UserError, match=r"'trian.steps'; did you mean 'train.steps'\?"):
        load_config(SFTConfig, overrides=["trian.steps=3"])
    with pytest.raises(UserError, match=r"'train.stepz'; did you mean 'train.steps'\?"):
        load_config(SFTConfig, overrides=["train.stepz=3"])


def test_a_section_given_as_a_scalar_is_refused_even_with_a_set_under_it(tmp_path):
    from rlhfkit.recipes.sft import SFTConfig

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
