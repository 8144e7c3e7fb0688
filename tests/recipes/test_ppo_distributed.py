"""Two processes with the same global batch give the same PPO update as one process (gloo on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = str(Path(__file__).with_name("ppo_two_process_worker.py"))


@pytest.mark.parametrize(
    "overrides, port",
    [([], "29517"), (["model.lora.enabled=true", "model.lora.r=4", "model.lora.top_layers=1"], "29518")],
    ids=["full", "lora-top-layer-from-frozen-states"],
)
def test_two_processes_give_the_same_update_as_one(tiny_model_dir, tmp_path, overrides, port):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, WORKER, tiny_model_dir, str(one), *overrides], check=True, env=env)
    # on a machine without GPUs, --multi_gpu gives N CPU processes over gloo
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
              WORKER, tiny_model_dir, str(two), *overrides]  # fmt: skip
    subprocess.run(launch, check=True, env=env)
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys() and len(a) > 10
    # LoRA's A matrices get no gradient at the first step (B starts at zero)
    assert all(torch.count_nonzero(a[name]) > 0 for name in a if "value" not in name and "lora_A" not in name)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    # the statistics (early stopping reads approx-KL) are the one-process token means on every process
    stats_one, stats_two = (
        json.loads(one.with_suffix(".json").read_text()),
        json.loads(two.with_suffix(".json").read_text()),
    )
    assert stats_one.keys() == stats_two.keys() and "policy/approx_kl" in stats_one
    for key in stats_one:
        assert stats_two[key] == pytest.approx(stats_one[key], rel=1e-5, abs=1e-6), key
