"""Two processes with the same global batch give the same DPO update as one process (gloo on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = str(Path(__file__).with_name("dpo_two_process_worker.py"))


def test_two_processes_give_the_same_dpo_gradient_as_one(tiny_model_dir, tmp_path):
    # a global batch of 3 pairs splits 2 + 1: DDP's plain average of the two processes' mean losses would
    # weight the lone pair twice; responses of different lengths make the pairs' gradients differ
    rows = [{"prompt": f"say something about {w}", "chosen": " ".join(["good"] * n), "rejected": " ".join(["bad"] * m)}
            for w, n, m in [("cats", 1, 4), ("dogs", 6, 2), ("rain", 2, 1), ("sun", 4, 5), ("tea", 3, 3)]]  # fmt: skip
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, WORKER, tiny_model_dir, str(data), str(one)], check=True, env=env)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29541", WORKER, tiny_model_dir, str(data), str(two)]  # fmt: skip
    subprocess.run(launch, check=True, env=env)
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys() and len(a) > 10
    assert all(torch.count_nonzero(a[name]) > 0 for name in a if not name.startswith("metric:train/reward"))
    # at the reference every margin is 0 up to rounding, which differs with the padding: accuracy is a coin toss
    for name in sorted(a.keys() - {"metric:train/reward_accuracy"}):
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
