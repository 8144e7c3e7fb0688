"""Judgements -> records for `rlhfkit rm`: comparisons (two responses) and rankings (more).

- "A"/"B" on two responses: `{"prompt", "chosen", "rejected", "meta"}`.
- A ranking of K > 2: `{"prompt", "responses": [best, ..., worst], "meta"}`.
- "tie" and "both_bad" on two responses say nothing about which is better:
  left out, unless kept (`keep_ties`, `keep_both_bad`); a kept one is a
  comparison with `"label": 0.5`, the probability that "chosen" is preferred
  (chosen/rejected are then in the candidates file's order).
- "all bad" on K > 2 responses is always left out: a ranking cannot say it.
- Skips are not judgements and are never exported.

The prompt keeps the form it had in the candidates file (`prompt` or
`messages`). Provenance goes in `meta`: task id, labeller, the raw choice,
the order shown (display position -> response index), comment, time, and
the candidate's other keys under `extra`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlhfkit.errors import UserError
from rlhfkit.labeling.progress import JudgementRow

Record = dict[str, Any]


@dataclass
class Export:
    comparisons: list[Record] = field(default_factory=list)
    rankings: list[Record] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)  # "tie", "both_bad", "all_bad", "skip" -> count


def _prompt_key(record: Record) -> str:
    return "prompt" if "prompt" in record else "messages"


def _meta(row: JudgementRow) -> Record:
    key = _prompt_key(row.record)
    meta: Record = {
        "task_id": row.task_id,
        "labeler": row.labeler,
        "choice": row.choice,
        "shown_order": row.display_order,
        "comment": row.comment,
        "judged_at": datetime.fromtimestamp(row.created_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    extra = {k: v for k, v in row.record.items() if k not in (key, "responses")}
    if extra:
        meta["extra"] = extra
    return meta


def _comparison(row: JudgementRow, chosen: int, rejected: int, label: float | None) -> Record:
    key, responses = _prompt_key(row.record), row.record["responses"]
    record: Record = {key: row.record[key], "chosen": responses[chosen], "rejected": responses[rejected]}
    if label is not None:
        record["label"] = label
    record["meta"] = _meta(row)
    return record


def _ranking(row: JudgementRow, ranking: tuple[int, ...]) -> Record:
    key, responses = _prompt_key(row.record), row.record["responses"]
    return {key: row.record[key], "responses": [responses[i] for i in ranking], "meta": _meta(row)}


def build_export(rows: Iterable[JudgementRow], keep_ties: bool, keep_both_bad: bool) -> Export:
    """Split judgements into comparison and ranking records, counting what is left out and why."""
    export = Export()
    kept = {"tie": keep_ties, "both_bad": keep_both_bad}
    for row in rows:
        if row.choice == "skip":
            export.left_out["skip"] += 1
        elif row.choice in ("A", "B"):
            assert row.ranking is not None, "A/B judgements store the winner first"
            export.comparisons.append(_comparison(row, row.ranking[0], row.ranking[1], label=None))
        elif row.choice == "ranking":
            assert row.ranking is not None, "ranking judgements store their ranking"
            export.rankings.append(_ranking(row, row.ranking))
        elif row.n_responses > 2:
            export.left_out["all_bad"] += 1
        elif kept[row.choice]:
            export.comparisons.append(_comparison(row, 0, 1, label=0.5))
        else:
            export.left_out[row.choice] += 1
    return export


def jsonl_text(records: Iterable[Record]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def check_writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise UserError(f"{path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a file name for JSON Lines output")


def write_jsonl(path: Path, records: list[Record]) -> None:
    """Write JSON Lines atomically: a temp file in the same folder, fsynced, then renamed over `path`."""
    check_writable(path)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(jsonl_text(records))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
