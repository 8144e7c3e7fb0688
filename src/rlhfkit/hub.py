"""Sharing what a run made on the Hugging Face Hub: a policy, a reward model, an adapter, a dataset.

`push_to_hub(directory, repo_id)` uploads one directory with huggingface_hub's `upload_folder`,
creating the repository first if it does not exist. What is pushed is what the next user loads:

    a run's output directory       its final/ (the policy, reward model or Gym policy)
    a data run's output directory  its records file (generate's candidates, label's comparisons, ...)
    a model or adapter directory   as it is (config.json, or adapter_config.json for PEFT)
    a save_to_disk directory       its rows as Parquet, data/<split>-00000-of-00001.parquet, which the
                                   hub's viewer and `datasets.load_dataset(repo_id)` read
    a data file or data folder     as it is (JSON Lines, JSON, CSV, Parquet)

Nothing here runs without being asked: no command pushes unless the user names a repository
(`--push-to-hub REPO` on a command pushes what the run made once it has succeeded).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
from huggingface_hub import HfApi
from huggingface_hub.utils import validate_repo_id

from rlhfkit import __version__
from rlhfkit.data.readers import READERS
from rlhfkit.errors import UserError, one_line, summarize

MODEL_FILES = ("config.json", "adapter_config.json", "policy.safetensors")
SAVED_DATASET_FILES = ("dataset_dict.json", "state.json")
RUN_LOGS = ("metrics.jsonl", "samples.jsonl", "chains.jsonl")  # a run's logs, not its records


def push_to_hub(
    directory: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload `directory` (see the module docstring for what is pushed) to `repo_id`; returns the commit's URL."""
    source, repo_type = what_to_push(Path(directory))
    api = HfApi(token=token, library_name="rlhfkit", library_version=__version__)
    message = commit_message or f"Upload {source.name} with rlhfkit"
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        with staged(source) as folder:
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type=repo_type, commit_message=message)
    except (OSError, ValueError, httpx.HTTPError) as error:  # the hub's HTTP, connection and token errors
        raise UserError(f"push to the hub repository {repo_id}: {summarize(error)}") from None
    return str(commit)


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if the hub would accept it as a name (owner/name), else a UserError, before any run starts."""
    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise UserError(f"--push-to-hub {repo_id}: {one_line(str(error))}") from None
    return repo_id


def what_to_push(path: Path) -> tuple[Path, str]:
    """(the file or directory to upload, "model" or "dataset"); UserError for anything else."""
    if not path.exists():
        raise UserError(f"{path}: no such file or directory to push")
    if path.is_file():
        if path.suffix.lower() not in READERS:
            raise UserError(f"{path}: not a data file (.jsonl, .json, .csv or .parquet) or a directory to push")
        return path, "dataset"
    if (path / "final").is_dir():
        return what_to_push(path / "final")
    records = [file for file in path.glob("*.jsonl") if file.name not in RUN_LOGS]
    if (path / "summary.json").is_file() and len(records) == 1:
        return records[0], "dataset"
    if any((path / name).is_file() for name in MODEL_FILES):
        return path, "model"
    if any((path / name).is_file() for name in SAVED_DATASET_FILES):
        return path, "dataset"
    if any(file.suffix.lower() in READERS for file in path.rglob("*") if file.is_file()):
        return path, "dataset"
    raise UserError(
        f"{path}: holds nothing to push; expected a run's output directory, a model or adapter directory "
        "(config.json or adapter_config.json), a datasets save_to_disk directory, or data files"
    )


@contextlib.contextmanager
def staged(source: Path) -> Iterator[Path]:
    """A folder holding what the hub gets from `source`: itself, a data file alone, or a saved dataset as Parquet."""
    if source.is_dir() and not any((source / name).is_file() for name in SAVED_DATASET_FILES):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="rlhfkit-push-") as temporary:
        folder = Path(temporary)
        if source.is_file():
            shutil.copy2(source, folder / source.name)
        else:
            write_parquet_splits(source, folder / "data")
        yield folder


def write_parquet_splits(saved: Path, target: Path) -> None:
    """A save_to_disk directory's splits (one dataset: train) as `target`/<split>-00000-of-00001.parquet."""
    # imported here: `import datasets` (with pandas) costs 5-7 s and ~100 MB, as measured on the labelling
    # server; only pushing a saved dataset needs it
    import datasets  # noqa: PLC0415

    loaded = datasets.load_from_disk(str(saved))
    splits = loaded if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    target.mkdir(parents=True)
    for split, dataset in splits.items():
        dataset.to_parquet(str(target / f"{split}-00000-of-00001.parquet"))
