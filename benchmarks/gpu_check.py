"""Every trainer and the demo's stages for two steps, in one process and in two: weights move, resume is exact.

    python benchmarks/gpu_check.py                 # on a CUDA machine: the embedded model, 1 and 2 processes
    python benchmarks/gpu_check.py --tiny --out /tmp/check   # anywhere: a tiny random model (CPU: gloo)

Stages, as the demo runs them: generate candidates -> label them with the sentiment judge -> SFT on the
packaged demonstrations -> reward model on the comparisons -> DPO on the comparisons -> PPO against the
reward model -> Gym PPO on CartPole (one process only: `rlhfkit gym` refuses more). Each trainer runs
twice per process count: straight through 2 steps, and stopped after step 1 (its step-2 checkpoint and
final/ removed) then resumed with `--resume --out DIR` alone. The check fails unless
  - summary.json names the expected device and process count,
  - the final weights differ from the starting weights (training moved them),
  - the resumed final weights equal the straight run's bit for bit.
Prints one line per trainer and process count, and a table at the end; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from rlhfkit.assets import DEMONSTRATIONS, PROMPTS
from rlhfkit.models.tiny import build_tiny_model

TWO_STEPS = ["train.steps=2", "train.checkpoint_every=1"]


def rlhfkit(args: list[str], processes: int, port: int) -> None:
    """Run one rlhfkit command, under `accelerate launch` when processes > 1."""
    if processes == 1:
        command = [sys.executable, "-m", "rlhfkit", *args]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
                   "--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(port), "-m", "rlhfkit", *args]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def weights(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update({f"{path.stem}/{k}": v for k, v in load_file(str(path)).items()})
    return tensors


def parameter_name(key: str) -> str:
    """`trainable/backbone.layers.0.mlp.up_proj.weight` and `model/model.layers.0.mlp.up_proj.weight` -> from `layers.`.

    A checkpoint names a reward model's backbone `backbone.`, its final/ (a sequence classifier) `model.`.
    """
    name = key.split("/", 1)[1]
    return name[name.index("layers.") :] if "layers." in name else name


def moved(final: dict[str, torch.Tensor], earlier: dict[str, torch.Tensor]) -> bool:
    """True if some final tensor differs from the same parameter in `earlier`."""
    named = {parameter_name(key): value for key, value in earlier.items()}
    for key, value in final.items():
        match = named.get(parameter_name(key))
        if match is not None and match.shape == value.shape and not torch.equal(match, value):
            return True
    return False


def check_trainer(name: str, args: list[str], out: Path, processes: int, port: int) -> dict:
    """Straight run, stopped-and-resumed run, and the three checks; returns the row of the table."""
    straight, stopped = out / f"{name}-{processes}p-straight", out / f"{name}-{processes}p-resumed"
    rlhfkit([name, *args, "--out", str(straight)], processes, port)
    rlhfkit([name, *args, "--out", str(stopped)], processes, port)
    last = max((stopped / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(last)
    shutil.rmtree(stopped / "final")
    rlhfkit([name, "--resume", "--out", str(stopped)], processes, port)
    summary = json.loads((straight / "summary.json").read_text())
    a, b = weights(straight / "final"), weights(stopped / "final")
    first_checkpoint = min((straight / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    row = {
        "trainer": name,
        "processes": processes,
        "device": summary.get("device"),
        "num_processes_ok": summary.get("num_processes") == processes,
        "weights_moved": moved(a, weights(first_checkpoint)),  # step 2 changed what step 1 saved
        "resume_exact": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
    }
    print(json.dumps(row), flush=True)
    return row


def data_stages(model: str, out: Path, prompts: int) -> Path:
    """The demo's first stages: candidates from the model, ranked by the sentiment judge into comparisons."""
    candidates, labels = out / "generate", out / "label"
    if not (labels / "comparisons.jsonl").is_file():
        shutil.rmtree(candidates, ignore_errors=True)
        shutil.rmtree(labels, ignore_errors=True)
        rlhfkit(["generate", "--set", f"model.name={model}", f"data.limit={prompts}", "num_responses=2",
                 "generation.max_new_tokens=16", "--out", str(candidates)], 1, 0)  # fmt: skip
        rlhfkit(["label", "--judge", "sentiment", "--set", f"data.train={candidates / 'candidates.jsonl'}",
                 "--out", str(labels)], 1, 0)  # fmt: skip
    return labels / "comparisons.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny random model instead of the embedded one")
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--processes", default="1,2", help="process counts to check, comma-separated")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = str(build_tiny_model(out / "tiny-model")) if args.tiny else "embedded:smollm2-135m-instruct"
    comparisons = data_stages(model, out, prompts=8)
    common = [f"model.name={model}", *TWO_STEPS]
    trainers = {
        "sft": [f"data.train={DEMONSTRATIONS}", "train.batch_size=4", "train.eval_every=1", "train.eval_samples=2"],
        "rm": [f"data.train={comparisons}", "train.batch_size=4", "train.eval_every=1"],
        "dpo": [f"data.train={comparisons}", "train.batch_size=4", "train.eval_every=1"],
        "ppo": [
            f"data.prompts={PROMPTS}",
            "train.batch_size=4",
            "train.mini_batch_size=2",
            "generation.max_new_tokens=16",
        ],
    }
    rows = []
    for processes in [int(p) for p in args.processes.split(",")]:
        for port, (name, settings) in enumerate(trainers.items(), start=29600):
            extra = ["reward.kind=model", f"reward.model={out / f'rm-{processes}p-straight' / 'final'}"]
            settings = settings + extra if name == "ppo" else settings
            rows.append(check_trainer(name, ["--set", *common, *settings], out, processes, port))
        if processes == 1:  # `rlhfkit gym` runs in one process and refuses more
            gym = ["--set", "train.total_timesteps=1024", "train.checkpoint_every=1", "eval.episodes=2"]
            rows.append(check_trainer("gym", gym, out, processes, 29610))
    print(
        "\n| trainer | processes | device | num_processes | weights moved | resume exact |\n|---|---|---|---|---|---|"
    )
    for r in rows:
        print(f"| {r['trainer']} | {r['processes']} | {r['device']} | {r['num_processes_ok']} | "
              f"{r['weights_moved']} | {r['resume_exact']} |")  # fmt: skip
    ok = all(r["num_processes_ok"] and r["weights_moved"] and r["resume_exact"] for r in rows)
    print("gpu_check:", "all checks passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
