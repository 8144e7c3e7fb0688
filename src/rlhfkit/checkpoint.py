"""Atomic, verifiable checkpoints and exact resume.

A checkpoint is a directory `checkpoints/step-N/` written under a temporary
name and renamed into place, so a crash mid-write never damages an earlier
one. It holds whatever the recipe hands over: module state dicts as
safetensors, the rest (optimiser, scheduler, RNG states, controller values,
data position) in one torch file, and `manifest.json` with every file's size
and SHA-256. A disk can still damage a finished checkpoint (a full disk, a
copy cut short, a flipped bit): resume verifies the manifest and falls back
to the newest checkpoint that is intact, which is why at least two are kept.
Checkpoints written before manifests existed are accepted without verification
(as long as their `state.pt` is there); a damaged one then fails to load with
a UserError naming the file.

Once a run has completed (`compact_completed_run`), its newest checkpoint is only read again to
extend the run with more steps. Two things then go: a second copy of the weights (a `final/` file
byte-identical to a checkpoint file becomes a hard link to it: an fp32 full fine-tuning run's
model.safetensors) and the optimiser's moments (AdamW's two fp32 tensors per weight, twice the
model; `optim.keep_moments` keeps them). An extended run restarts the moments from zero, with a
warning; an interrupted run never meets a compacted checkpoint, so its resume stays exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rlhfkit.config import SEED_LIMIT
from rlhfkit.errors import UserError, describe_os_error, summarize

_STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"
STATE = "state.pt"
MOMENTS_DROPPED = "optimizer_moments_dropped"  # set in state.pt by `compact_completed_run`
MIN_KEEP = 2  # the newest checkpoint can be damaged after it was written; the one before it is the fallback
TORCH_SEED_LIMIT = 2**64  # torch.manual_seed's range, for derived seeds


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
    """Python, NumPy, torch CPU and every CUDA device from one seed.

    A seed torch or NumPy cannot take is refused here, naming `seed`, so that the same config
    fails the same way in every command (NumPy crashed on negative seeds where torch took them).
    A derived seed past NumPy's range (a configured seed plus a step) wraps around for NumPy only.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < TORCH_SEED_LIMIT:
        raise UserError(f"seed must be an integer in 0..{SEED_LIMIT - 1}, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % SEED_LIMIT)
    torch.manual_seed(seed)


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    keep: int = MIN_KEEP,
) -> Path:
    """Write `checkpoints/step-{step}/` atomically, with its manifest.

    tensors: name -> state dict, each saved as `<name>.safetensors` (model weights, value head, adapters).
    state: everything else (optimiser and scheduler state dicts, RNG, counters), saved with torch.save.
    keep: how many of the newest checkpoints to keep, at least 2 (older ones are removed after the
    new one is in place).
    """
    if keep < MIN_KEEP:
        raise ValueError(
            f"keep={keep}: at least {MIN_KEEP} checkpoints are kept, so a damaged newest one has a fallback"
        )

    def write(tmp: Path) -> None:
        for name, state_dict in tensors.items():
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in state_dict.items()},
                str(tmp / f"{name}.safetensors"),
                metadata={"format": "pt"},  # as transformers writes it: fp32 weights match final/'s byte for byte
            )
        torch.save(state, tmp / STATE)
        write_manifest(tmp)

    final = write_directory_atomic(Path(out_dir) / "checkpoints" / f"step-{step}", write)
    existing = list_checkpoints(out_dir)
    earlier = [p for p in existing if checkpoint_step(p) <= step]
    abandoned = [p for p in existing if checkpoint_step(p) > step]  # skipped as damaged when this run resumed
    for old in earlier[:-keep] + abandoned:
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


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_manifest(directory: Path, known: dict[str, dict[str, Any]] | None = None) -> None:
    """`manifest.json`: the size and SHA-256 of every file in `directory`, as written to disk.

    `known`: entries of files linked unchanged from another checkpoint (not hashed again).
    """
    known = known or {}
    files = {
        p.name: known.get(p.name) or {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def manifest_entries(checkpoint: Path) -> dict[str, dict[str, Any]]:
    """The manifest's {file name: {size, sha256}} (empty for a checkpoint written before manifests)."""
    if not (checkpoint / MANIFEST).is_file():
        return {}
    return json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))["files"]


def compact_completed_run(out_dir: str | Path, drop_moments: bool = True) -> None:
    """After final/ is written: share its files identical to the newest checkpoint's, then drop the moments.

    See the module docstring for why this keeps what an interrupted run's resume needs.
    """
    newest = list_checkpoints(out_dir)[-1:]
    if newest and checkpoint_damage(newest[0]) is None:
        link_identical_files(Path(out_dir) / "final", newest[0])
        if drop_moments:
            drop_optimizer_moments(newest[0])


def link_identical_files(directory: Path, checkpoint: Path) -> None:
    """Each file of `directory` byte-identical to a file of `checkpoint` becomes a hard link to it.

    Sizes are compared first, then SHA-256 (the checkpoint's from its manifest). Where the file
    system cannot link, the copy stays. Writing into the linked file in place (rather than replacing
    it) would change the checkpoint too, which its manifest then reports as damaged.
    """
    entries = manifest_entries(checkpoint)
    for file in sorted(directory.iterdir()):
        same_size = [name for name, entry in entries.items() if file.is_file() and entry["size"] == file.stat().st_size]
        if not same_size or any(os.path.samefile(file, checkpoint / name) for name in same_size):
            continue
        digest = _sha256(file)
        match = next((name for name in same_size if entries[name]["sha256"] == digest), None)
        if match is None:
            continue
        link = file.with_name(f".link-{file.name}")
        try:
            link.unlink(missing_ok=True)
            os.link(checkpoint / match, link)
        except OSError:
            continue
        os.replace(link, file)


def drop_optimizer_moments(checkpoint: Path) -> None:
    """Rewrite `checkpoint` without the optimiser states' per-parameter tensors (param_groups stay).

    The new directory is assembled beside it (weights hard-linked, not copied) and swapped in.
    """
    state = torch.load(checkpoint / STATE, weights_only=False)
    if state.get(MOMENTS_DROPPED):
        return
    pruned = {**without_optimizer_moments(state), MOMENTS_DROPPED: True}
    entries = manifest_entries(checkpoint)

    def write(tmp: Path) -> None:
        for file in checkpoint.iterdir():
            if file.is_file() and file.name not in (STATE, MANIFEST):
                os.link(file, tmp / file.name)
        torch.save(pruned, tmp / STATE)
        write_manifest(tmp, {name: entry for name, entry in entries.items() if name != STATE})

    staged = write_directory_atomic(checkpoint.with_name(f".compact-{checkpoint.name}"), write)
    retired = checkpoint.with_name(f".retired-{checkpoint.name}")
    checkpoint.rename(retired)
    staged.rename(checkpoint)
    shutil.rmtree(retired, ignore_errors=True)


def without_optimizer_moments(state: Any) -> Any:
    """`state` with every optimiser state_dict's `state` (the moments, per parameter) emptied.

    An optimiser loading the result starts each parameter's moments (and AdamW's step count) afresh.
    """
    if isinstance(state, dict):
        if "state" in state and "param_groups" in state:
            return {**state, "state": {}}
        return {key: without_optimizer_moments(value) for key, value in state.items()}
    if isinstance(state, list):
        return [without_optimizer_moments(value) for value in state]
    return state


def checkpoint_damage(path: str | Path) -> str | None:
    """None for an intact checkpoint, else what is wrong, e.g. `model.safetensors: size mismatch`.

    Sizes are compared first (cheap, and what a full disk or a cut copy changes), then checksums.
    Without a manifest (an older checkpoint) only the presence of state.pt is checked.
    """
    path = Path(path)
    if not (path / MANIFEST).exists():
        return None if (path / STATE).is_file() else f"{STATE}: missing"
    try:
        files = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
        expected = {name: (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST}: unreadable"
    for name, (size, _) in expected.items():
        if not (path / name).is_file():
            return f"{name}: missing"
        if (path / name).stat().st_size != size:
            return f"{name}: size mismatch"
    for name, (_, digest) in expected.items():
        if _sha256(path / name) != digest:
            return f"{name}: checksum mismatch"
    return None


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Every `checkpoints/step-N/` directory, oldest first (intact or not)."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest intact checkpoint (None if there is none at all).

    Each damaged newer checkpoint skipped on the way is named in a one-line warning on stderr;
    if checkpoints exist but none is intact, a UserError names them all.
    """
    damaged: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(out_dir)):
        problem = checkpoint_damage(path)
        if problem is None:
            for bad, why in damaged:
                print(f"rlhfkit: warning: checkpoint {bad} is damaged ({why}); resuming from {path}", file=sys.stderr)
            return path
        damaged.append((path, problem))
    if damaged:
        listed = "; ".join(f"{path} ({why})" for path, why in damaged)
        raise UserError(f"no intact checkpoint to resume from: {listed}; start afresh with another --out")
    return None


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """The tensors and state of a checkpoint; a file that cannot be read is a UserError naming it."""
    path = Path(path)
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        try:
            tensors[file.stem] = load_file(str(file))
        except (SafetensorError, OSError) as error:
            raise _damaged(file, error) from None
    try:
        state = torch.load(path / STATE, weights_only=False)
    except Exception as error:  # unpickling damaged bytes can raise almost anything; all of it means "damaged"
        raise _damaged(path / STATE, error) from None
    return tensors, state


def _damaged(file: Path, error: Exception) -> UserError:
    return UserError(
        f"checkpoint file {file} cannot be read ({summarize(error)}); "
        f"remove {file.parent} to resume from the one before it"
    )


def checkpoint_step(path: str | Path) -> int:
    match = _STEP_DIR.match(Path(path).name)
    assert match, path
    return int(match.group(1))


def check_output_directory(path: str | Path) -> None:
    """Refuse, before any model loads, an output path that cannot become a writable directory.

    `path` may not exist yet: its nearest existing ancestor must then be a directory in which
    we can create one. The check creates and removes an empty hidden directory, because
    permission bits alone do not tell (root ignores them; a read-only mount does not show in them).
    """
    path = Path(path)
    existing = path
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise UserError(f"--out {path}: {existing} is a file, not a directory")
        os_probe = tempfile.mkdtemp(prefix=".rlhfkit-write-check-", dir=existing)
        Path(os_probe).rmdir()
    except OSError as error:
        raise UserError(f"--out {path}: cannot write there ({describe_os_error(error, existing)})") from None
