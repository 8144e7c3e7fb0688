"""Run by test_rm_distributed.py, once alone and once under `accelerate launch --num_processes 2`.

Every process draws the same global batch of 3 rankings and keeps its share (2 records on one
process, 1 on the other); rank 0 saves the gradients of the one optimiser step (as DDP averaged
them over processes) and the step's loss.
"""

import sys

import torch
from safetensors.torch import save_file

from rlhfkit.config import load_config
from rlhfkit.recipes.reward import RewardModelTrainer, RMConfig


def main(model_dir: str, data: str, out_file: str) -> None:
    overrides = [f"model.name={model_dir}", "model.dtype=float32", f"data.train={data}", "data.eval_fraction=0.25"]
    overrides += ["train.batch_size=3", "train.steps=1", "normalize.enabled=false"]
    trainer = RewardModelTrainer(load_config(RMConfig, overrides=overrides))
    gradients = {}
    step = trainer.optimizer.step

    def capture_then_step(*args, **kwargs):
        named = trainer.unwrapped.named_parameters()
        gradients.update({name: p.grad.detach().clone() for name, p in named if p.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = capture_then_step
    metrics, _ = trainer.train_step()
    if trainer.runtime.is_main:
        gradients["loss"] = torch.tensor(metrics["train/loss"])
        save_file(gradients, out_file)
    trainer.runtime.wait()


if __name__ == "__main__":
    main(*sys.argv[1:])
