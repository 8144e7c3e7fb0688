"""Two processes against one: a worker run alone and under `accelerate launch` (gloo on CPU), then compared.

The worker (two_process_worker.py) builds a trainer, takes one optimiser step with `capture_gradients`
and has rank 0 save the gradients and the step's metrics (`save_on_main`); a test runs it with
`run_alone_and_in_two` and compares the two files with `assert_same_update`. Gradients, not weights:
Adam's first step is lr * sign(g), blind to how g was weighted.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WORKER = str(Path(__file__).with_name("two_process_worker.py"))
METRIC = "metric:"  # the prefix of a metric's name in the saved file; the rest are gradients


def run_alone_and_in_two(tmp_path: Path, port: int, *args: str) -> tuple[dict, dict]:
    """What the worker saved with `args`: (one process, two processes)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    alone = subprocess.Popen([sys.executable, WORKER, str(one), *args], env=env)  # beside the launch
    # on a machine without GPUs, --multi_gpu gives N CPU processes over gloo
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(port), WORKER, str(two), *args]  # fmt: skip
    try:
        subprocess.run(launch, check=True, env=env)
    finally:
        assert alone.wait() == 0, "the one-process worker failed"
    return load_file(str(one)), load_file(str(two))


def assert_same_update(one: dict, two: dict, *, zero_allowed=lambda name: False, ignored=frozenset()) -> None:
    """Every gradient moved (but those `zero_allowed`), and both runs saved the same gradients and metrics."""
    gradients = [name for name in one if not name.startswith(METRIC)]
    assert one.keys() == two.keys() and len(gradients) > 10
    assert all(torch.count_nonzero(one[name]) > 0 for name in gradients if not zero_allowed(name))
    for name in sorted(one.keys() - ignored):
        torch.testing.assert_close(one[name], two[name], rtol=1e-5, atol=1e-6, msg=name)


def capture_gradients(trainer) -> dict[str, torch.Tensor]:
    """A dict that the trainer's next optimiser step fills with the gradients it steps on (after DDP's average)."""
    gradients: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        named = trainer.unwrapped.named_parameters()
        gradients.update({name: p.grad.detach().clone() for name, p in named if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    return gradients


def save_on_main(runtime, out_file: str, gradients: dict, metrics: dict[str, float]) -> None:
    """Rank 0 writes the gradients and the metrics (as METRIC-prefixed scalars); every process waits for it."""
    if runtime.is_main:
        save_file({**gradients, **{METRIC + key: torch.tensor(float(v)) for key, v in metrics.items()}}, out_file)
    runtime.wait()
