"""Two processes with the same global batch give the same reward-model update as one process (gloo on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = str(Path(__file__).with_name("rm_two_process_worker.py"))


def test_two_processes_give_the_same_rm_gradient_as_one(tiny_model_dir, tmp_path):
    # rankings of 2 to 4 responses; a batch of 3 records puts 2 on one process and 1 on the other, so a
    # per-process mean averaged by DDP would weight the lone record twice as much as the others
    words = "good great happy bad sad awful the cat dog food movie".split()
    rows = [{"prompt": f"tell me about the {words[6 + i % 5]}", "responses": [" ".join(words[j : j + 2 + i % 3])
             for j in range(2 + i % 3)]} for i in range(8)]  # fmt: skip
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, WORKER, tiny_model_dir, str(data), str(one)], check=True, env=env)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29531", WORKER, tiny_model_dir, str(data), str(two)]  # fmt: skip
    subprocess.run(launch, check=True, env=env)
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys() and len(a) > 10 and "head.weight" in a
    assert all(torch.count_nonzero(a[name]) > 0 for name in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
