"""Reading a data source into raw rows, each with the place a person would look for it.

A source is a data file (JSON Lines, a JSON list, CSV, Parquet), a folder of such files, a
directory written by `datasets`' `save_to_disk`, or a `datasets` id (`name` or `name:split`).
A folder whose files are named by split (`train.jsonl`, `data/test-00000.parquet`) and a saved
DatasetDict give their `train` split, or the one named as `DIR:split`. Every row comes with its
location, `file:line` (the row for CSV, Parquet and datasets), which every error about it names.
Columnar sources (Parquet, datasets) fill a column a record lacks with None; such cells are
left out of the record, as CSV leaves out empty cells.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhfkit.errors import UserError, read_text, summarize

Numbered = list[tuple[int, Any]]  # (line or row number, raw record)
Located = list[tuple[str, Any]]  # ("file:line", raw record)


def _read_jsonl(path: Path) -> Numbered:
    rows = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if line.strip():
            rows.append((number, _parse_json(line, f"{path}:{number}")))
    return rows


def _parse_json(text: str, where: str) -> Any:
    """A JSON value, or a UserError at `where` naming the line and column of the first mistake."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: malformed JSON ({error.msg}: line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply to be a record") from None


def _read_json(path: Path) -> Numbered:
    data = _parse_json(read_text(path), str(path))
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return list(enumerate(data, start=1))


def _decode_cell(value: str) -> Any:
    """CSV cells holding JSON lists or numbers (responses, best, margin) are decoded; text stays text."""
    stripped = value.strip()
    if stripped[:1] in ("[", "{") or stripped.lstrip("-").replace(".", "", 1).isdigit():
        try:
            return json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def _read_csv(path: Path) -> Numbered:
    """Rows keyed by the header; the line number is where the row starts (a quoted cell may span lines)."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows, start = [], 2
    try:
        for row in reader:
            if None in row:
                raise UserError(
                    f"{path}:{start}: {len(reader.fieldnames or []) + len(row[None])} cells, "
                    f"but the header names {len(reader.fieldnames or [])} columns"
                )
            rows.append((start, {k: _decode_cell(v) for k, v in row.items() if v}))  # missing and empty cells: absent
            start = reader.line_num + 1
    except csv.Error as error:
        raise UserError(f"{path}:{start}: malformed CSV ({error})") from None
    return rows


def _read_parquet(path: Path) -> Numbered:
    import pyarrow as pa  # noqa: PLC0415 (lazy: ~24 MB of memory that only Parquet input needs)
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        reason = str(error).strip().splitlines()[0].rpartition("': ")[2]  # without pyarrow's copy of the path
        raise UserError(f"{path}: not a readable Parquet file ({reason})") from None
    return _columnar_rows(table.to_pylist())


def without_absent_cells(row: Any) -> Any:
    """A table's row without the None cells of the columns this record does not have."""
    return {k: v for k, v in row.items() if v is not None} if isinstance(row, dict) else row


def _columnar_rows(rows: Any) -> Numbered:
    return [(number, without_absent_cells(row)) for number, row in enumerate(rows, start=1)]


def _read_dataset(name: str) -> Numbered:
    # imported here: `import datasets` (with pandas) costs 5-7 s and ~100 MB, as measured on the labelling
    # server, which `label serve` and the light commands must not pay for reading a JSON Lines file
    import datasets  # noqa: PLC0415

    dataset_id, _, split = name.partition(":")
    try:
        dataset = datasets.load_dataset(dataset_id, split=split or "train")
    except Exception as error:  # datasets raises many types; report the cause in one line
        raise UserError(
            f"{name}: not a file, and loading it as a datasets id failed: {str(error).splitlines()[0]}"
        ) from None
    return _columnar_rows(dataset)


def _read_saved_dataset(path: Path, split: str | None) -> tuple[str, Numbered]:
    """A `save_to_disk` directory: a Dataset, or a DatasetDict's `split` (default train, or its only split)."""
    # imported here: `import datasets` (with pandas) costs 5-7 s and ~100 MB, as measured on the labelling
    # server, which `label serve` and the light commands must not pay for reading a JSON Lines file
    import datasets  # noqa: PLC0415

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as error:  # datasets raises many types; report the cause in one line
        raise UserError(f"{path}: not a readable datasets directory ({summarize(error)})") from None
    if not isinstance(loaded, datasets.DatasetDict):
        if split:
            raise UserError(f"{path}:{split}: {path} holds one dataset, not splits; name the directory alone")
        return str(path), _columnar_rows(loaded)
    splits = list(loaded)
    chosen = split or ("train" if "train" in loaded or len(splits) != 1 else splits[0])
    if chosen not in loaded:
        raise UserError(f"{path}: has no split {chosen!r}; its splits are {splits} (choose one as {path}:SPLIT)")
    return f"{path}:{chosen}", _columnar_rows(loaded[chosen])


READERS: dict[str, Callable[[Path], Numbered]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}
SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
}


def _split_of(relative: Path) -> str | None:
    """The split a data file's name or folder says it belongs to (the conventions of the Hugging Face hub)."""
    words = re.split(r"[^a-z]+", str(relative.with_suffix("")).lower())
    return next((SPLIT_WORDS[word] for word in words if word in SPLIT_WORDS), None)


def _read_folder(path: Path, split: str | None) -> list[tuple[str, Numbered]]:
    """(file, rows) for each data file under `path` in name order; only `split`'s files where names say splits."""
    files = sorted(
        file
        for file in path.rglob("*")
        if file.is_file()
        and file.suffix.lower() in READERS
        and not any(part.startswith(".") for part in file.relative_to(path).parts)
    )
    if not files:
        raise UserError(
            f"{path}: is a directory with no .jsonl, .json, .csv or .parquet files "
            "(and not a directory written by datasets' save_to_disk)"
        )
    splits = {file: _split_of(file.relative_to(path)) for file in files}
    named = sorted({s for s in splits.values() if s})
    if named:
        files = [file for file in files if splits[file] == (split or "train")]
        if not files:
            raise UserError(
                f"{path}: has no {split or 'train'!r} files; its files are named for the splits {named} "
                f"(choose one as {path}:SPLIT)"
            )
    elif split:
        raise UserError(f"{path}:{split}: the files in {path} are not named by split; name the folder alone")
    return [(str(file), READERS[file.suffix.lower()](file)) for file in files]


def _read_directory(path: Path, split: str | None) -> tuple[str, list[tuple[str, Numbered]]]:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        name, rows = _read_saved_dataset(path, split)
        return name, [(name, rows)]
    return str(path) + (f":{split}" if split else ""), _read_folder(path, split)


def _read_parts(source: str | Path) -> tuple[str, list[tuple[str, Numbered]]]:
    """(display name, [(part name, numbered rows)]): one part per file, one for anything else.

    A name with a data-file suffix, an existing path, or one that looks like a path (absolute,
    `./`, `~`, or more than one `/`) is a file or directory; `DIR:split` a split of a directory;
    anything else (`name`, `org/name:split`) a datasets id.
    """
    path = Path(source).expanduser()
    base, separator, split = str(source).rpartition(":")
    if not path.exists() and separator and split and Path(base).expanduser().is_dir():
        return _read_directory(Path(base).expanduser(), split)
    suffix = path.suffix.lower()
    if not (suffix in READERS or path.exists() or _looks_like_path(str(source))):
        return str(source), [(str(source), _read_dataset(str(source)))]
    if path.is_dir():
        return _read_directory(path, None)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if suffix not in READERS:
        raise UserError(
            f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json, .csv or .parquet, "
            "a folder of them, or a datasets save_to_disk directory"
        )
    return str(path), [(str(path), READERS[suffix](path))]


def read_located(source: str | Path) -> tuple[str, Located]:
    """(display name, [("file:line", raw record)]) from any source this module reads."""
    name, parts = _read_parts(source)
    return name, [(f"{part}:{number}", record) for part, rows in parts for number, record in rows]


def read_rows(source: str | Path) -> tuple[str, Numbered]:
    """(display name, [(number, raw record)]): a file's line numbers; a folder's count its records in file order."""
    name, parts = _read_parts(source)
    if len(parts) == 1:
        return name, parts[0][1]
    return name, list(enumerate((record for _, rows in parts for _, record in rows), start=1))


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "\\")) or name.count("/") > 1 or "\\" in name
