"""Atomic checkpoints and exact resume.

A checkpoint is a directory `checkpoints/step-N/` written under a temporary
name and renamed into place, so a crash mid-write never damages an earlier
one. It holds whatever the recipe hands over: module state dicts as
safetensors, the rest (optimiser, scheduler, RNG states, controller values,
data position) in one torch file.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (where present) every CUDA device's generator state."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Python, NumPy, torch CPU and every CUDA device from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(
    out_dir: str | Path, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict[str, Any], keep: int = 2
) -> Path:
    """Write `checkpoints/step-{step}/` atomically.

    tensors: name -> state dict, each saved as `<name>.safetensors` (model weights, value head, adapters).
    state: everything else (optimiser and scheduler state dicts, RNG, counters), saved with torch.save.
    keep: how many of the newest checkpoints to keep (older ones are removed after the new one is in place).
    """

    def write(tmp: Path) -> None:
        for name, state_dict in tensors.items():
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(tmp / f"{name}.safetensors")
            )
        torch.save(state, tmp / "state.pt")

    final = write_directory_atomic(Path(out_dir) / "checkpoints" / f"step-{step}", write)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_directory_atomic(directory: str | Path, write: Callable[[Path], None]) -> Path:
    """Fill `directory` through `write(tmp)` on a fresh hidden sibling, then move it into place.

    A crash inside `write` leaves any earlier `directory` untouched (`final/`, a checkpoint).
    """
    directory = Path(directory)
    tmp = directory.with_name(f".tmp-{directory.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    return directory


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "state.pt").exists()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    path = Path(path)
    tensors = {p.stem: load_file(str(p)) for p in path.glob("*.safetensors")}
    state = torch.load(path / "state.pt", weights_only=False)
    return tensors, state


def checkpoint_step(path: str | Path) -> int:
    match = _STEP_DIR.match(Path(path).name)
    assert match, path
    return int(match.group(1))
