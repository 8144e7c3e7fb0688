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
