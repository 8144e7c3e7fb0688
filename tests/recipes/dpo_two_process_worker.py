"""Run by test_dpo_distributed.py, once alone and once under `accelerate launch --num_processes 2`.

Every process draws the same global batch of 3 pairs and keeps its share (2 and 1 pairs); rank 0 saves the
gradients of the one optimiser step (as DDP averaged them over processes) and the step's metrics.
"""

import sys

import torch
from safetensors.torch import save_file

from rlhfkit.config import load_config
from rlhfkit.recipes.dpo import DPOConfig, DPOTrainer


def main(model_dir: str, data: str, out_file: str) -> None:
    overrides = [f"model.name={model_dir}", "model.dtype=float32", f"data.train={data}", "data.eval_fraction=0.2"]
    overrides += ["train.batch_size=3", "train.steps=1", "train.kl_prompts=0", "train.beta=0.5"]
    # no clipping: a clipped gradient would hide a wrongly scaled one
    overrides += ["optim.max_grad_norm=0", "optim.learning_rate=1e-2"]
    trainer = DPOTrainer(load_config(DPOConfig, overrides=overrides))
    gradients = {}
    step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        named = trainer.unwrapped.named_parameters()
        gradients.update({name: p.grad.detach().clone() for name, p in named if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    metrics, _ = trainer.train_step()
    if trainer.runtime.is_main:
        metrics = {f"metric:{key}": torch.tensor(value) for key, value in metrics.items()}
        save_file({**gradients, **metrics}, out_file)
    trainer.runtime.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
