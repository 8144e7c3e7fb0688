"""Record kinds, file reading and validation.

Every stage reads records of one kind (see DESIGN.md, "Data formats"). A
file may be JSON Lines, a JSON list, CSV, Parquet, or a `datasets` id
(`name` or `name:split`). Validation happens before any heavy work and names
the file, the line (1-based; the row for CSV/Parquet) and the field.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from rlhfkit.errors import UserError, read_text

Record = dict[str, Any]


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
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


def _read_json(path: Path) -> list[tuple[int, Any]]:
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


def _read_csv(path: Path) -> list[tuple[int, Any]]:
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


def _read_parquet(path: Path) -> list[tuple[int, Any]]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        reason = str(error).strip().splitlines()[0].rpartition("': ")[2]  # without pyarrow's copy of the path
        raise UserError(f"{path}: not a readable Parquet file ({reason})") from None
    return list(enumerate(table.to_pylist(), start=1))


def _read_dataset(name: str) -> list[tuple[int, Any]]:
    dataset_id, _, split = name.partition(":")
    try:
        dataset = datasets.load_dataset(dataset_id, split=split or "train")
    except Exception as error:  # datasets raises many types; report the cause in one line
        raise UserError(
            f"{name}: not a file, and loading it as a datasets id failed: {str(error).splitlines()[0]}"
        ) from None
    return list(enumerate(dataset, start=1))


READERS: dict[str, Callable[[Path], list[tuple[int, Any]]]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


def read_rows(source: str | Path) -> tuple[str, list[tuple[int, Any]]]:
    """(display name, [(line number, raw record)]) from a file or a datasets id.

    A name with a data-file suffix, an existing path, or one that looks like a path (absolute,
    `./`, `~`, or more than one `/`) is a file; anything else (`name`, `org/name:split`) a datasets id.
    """
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if not (suffix in READERS or path.exists() or _looks_like_path(str(source))):
        return str(source), _read_dataset(str(source))
    if path.is_dir():
        raise UserError(f"{path}: is a directory; expected a .jsonl, .json, .csv or .parquet file")
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if suffix not in READERS:
        raise UserError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, .json, .csv or .parquet")
    return str(path), READERS[suffix](path)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", "\\")) or name.count("/") > 1 or "\\" in name


# ---------------------------------------------------------------------------
# Validation per kind
# ---------------------------------------------------------------------------


def _text(record: Record, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise UserError(
            f"{where}: field {key!r} must be a string, got {type(value).__name__ if key in record else 'nothing'}"
        )
    if not value.strip():
        raise UserError(f"{where}: field {key!r} is empty")
    _check_encodable(value, where, repr(key))
    return value


def _check_encodable(text: str, where: str, field_name: str) -> None:
    """JSON's \\ud800-\\udfff escapes can smuggle in half a UTF-16 pair, which no tokenizer accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UserError(
            f"{where}: field {field_name} holds an unpaired surrogate {text[error.start]!r} at character "
            f"{error.start}, which is not text"
        ) from None


def _messages(record: Record, where: str) -> list[dict[str, str]]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise UserError(f'{where}: messages[{i}] must be {{"role": str, "content": str}}')
        _check_encodable(message["content"], where, f"messages[{i}].content")
    return messages


def _check_prompt(record: Record, where: str) -> None:
    if "prompt" in record:
        _text(record, "prompt", where)
    elif "messages" in record:
        _messages(record, where)
    else:
        raise UserError(f"{where}: needs a 'prompt' string or a 'messages' list")


def _check_responses(record: Record, where: str, minimum: int) -> list[str]:
    responses = record.get("responses")
    if not isinstance(responses, list):
        raise UserError(f"{where}: field 'responses' must be a list of strings")
    if len(responses) < minimum:
        raise UserError(f"{where}: field 'responses' has {len(responses)} response(s); at least {minimum} are needed")
    for i, response in enumerate(responses):
        if not isinstance(response, str) or not response.strip():
            raise UserError(f"{where}: responses[{i}] must be a non-empty string")
        _check_encodable(response, where, f"responses[{i}]")
    return responses


def _validate_prompt(record: Record, where: str) -> None:
    _check_prompt(record, where)


def _validate_demonstration(record: Record, where: str) -> None:
    if "response" in record:
        _check_prompt(record, where)
        _text(record, "response", where)
        return
    messages = _messages(record, where)
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise UserError(
            f"{where}: a demonstration's 'messages' must end with a non-empty assistant message "
            "(or give 'prompt' and 'response')"
        )


def _validate_comparison(record: Record, where: str) -> None:
    _check_prompt(record, where)
    chosen, rejected = _text(record, "chosen", where), _text(record, "rejected", where)
    if chosen == rejected:
        raise UserError(f"{where}: 'chosen' and 'rejected' are the same text, so the pair says nothing")
    if "margin" in record and (isinstance(record["margin"], bool) or not isinstance(record["margin"], (int, float))):
        raise UserError(f"{where}: field 'margin' must be a number")
    if "label" in record:
        label = record["label"]
        if isinstance(label, bool) or not isinstance(label, (int, float)) or not 0 <= label <= 1:
            raise UserError(
                f"{where}: field 'label' (probability that 'chosen' is preferred) must be a number in [0, 1]"
            )


def _validate_ranking(record: Record, where: str) -> None:
    _check_prompt(record, where)
    responses = _check_responses(record, where, minimum=2)
    if len(set(responses)) != len(responses):
        raise UserError(f"{where}: a ranking lists the same response twice")


def _validate_choice(record: Record, where: str) -> None:
    _check_prompt(record, where)
    responses = _check_responses(record, where, minimum=2)
    best = record.get("best")
    if isinstance(best, bool) or not isinstance(best, int) or not 0 <= best < len(responses):
        raise UserError(
            f"{where}: field 'best' must be an index into 'responses' (0..{len(responses) - 1}), got {best!r}"
        )


def _validate_candidates(record: Record, where: str) -> None:
    _check_prompt(record, where)
    _check_responses(record, where, minimum=1)


VALIDATORS: dict[str, Callable[[Record, str], None]] = {
    "prompts": _validate_prompt,
    "demonstrations": _validate_demonstration,
    "comparisons": _validate_comparison,
    "rankings": _validate_ranking,
    "choices": _validate_choice,
    "candidates": _validate_candidates,
}


def detect_kind(record: Record) -> str:
    """The record kind its keys say it is (the most specific match)."""
    if "chosen" in record or "rejected" in record:
        return "comparisons"
    if "responses" in record:
        return "choices" if "best" in record else "rankings_or_candidates"
    if "response" in record or (
        "messages" in record
        and isinstance(record["messages"], list)
        and record["messages"]
        and isinstance(record["messages"][-1], dict)
        and record["messages"][-1].get("role") == "assistant"
    ):
        return "demonstrations"
    return "prompts"


def _compatible(expected: str, found: str) -> bool:
    if found == "rankings_or_candidates":
        return expected in ("rankings", "candidates")
    # prompts can be read from any record that has a prompt; candidates accept choices too
    return found == expected or expected == "prompts" or (expected == "candidates" and found == "choices")


def load_records(source: str | Path, kind: str, limit: int | None = None) -> list[Record]:
    """Read and validate records of `kind` from a file or datasets id; raise UserError naming file:line:field."""
    if kind not in VALIDATORS:
        raise ValueError(f"unknown record kind {kind!r}")
    name, rows = read_rows(source)
    if not rows:
        raise UserError(f"{name}: holds no records (expected {kind})")
    records: list[Record] = []
    first_kind: str | None = None
    for number, record in rows:
        where = f"{name}:{number}"
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
        found = detect_kind(record)
        if not _compatible(kind, found):
            raise UserError(
                f"{where}: this looks like a {found.split('_')[0]} record, but {kind} records are expected here"
            )
        if first_kind is None:
            first_kind = found
        elif found != first_kind and kind != "prompts":
            raise UserError(f"{where}: mixed record kinds in one file ({first_kind} earlier, {found} here)")
        VALIDATORS[kind](record, where)
        records.append(dict(record))
        if limit is not None and len(records) >= limit:
            break
    return records


# ---------------------------------------------------------------------------
# Text of a record
# ---------------------------------------------------------------------------


def prompt_messages(record: Record) -> list[dict[str, str]]:
    """The conversation before the response: `messages` (less a final assistant turn) or one user turn."""
    if "prompt" in record:
        return [{"role": "user", "content": record["prompt"]}]
    messages = list(record["messages"])
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages


def prompt_text(record: Record) -> str:
    """A human-readable prompt (the last user turn) for samples, reports and judges."""
    if "prompt" in record:
        return record["prompt"]
    users = [m["content"] for m in prompt_messages(record) if m["role"] == "user"]
    return users[-1] if users else ""


def format_prompt(tokenizer: Any, record: Record) -> str:
    """The model input before the response: the chat template for chat models, the raw prompt otherwise."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt_messages(record), tokenize=False, add_generation_prompt=True)
    return "\n".join(m["content"] for m in prompt_messages(record))


def demonstration_response(record: Record) -> str:
    return record["response"] if "response" in record else record["messages"][-1]["content"]
