"""Judgement rows -> comparison and ranking records, exactly; atomic files."""

from __future__ import annotations

import json

import pytest

from rlhfkit.errors import UserError
from rlhfkit.labeling.export import build_export, write_jsonl
from rlhfkit.labeling.progress import JudgementRow

PAIR = {"prompt": "Say hi", "responses": ["Hi!", "Hello there."], "source": "gen-3"}
CHAT = {"messages": [{"role": "user", "content": "Rank"}], "responses": ["one", "two", "three"]}
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def row(id, record, choice, ranking, order, labeler="ann", comment=""):
    return JudgementRow(id, id, record, len(record["responses"]), labeler, choice, ranking, order, comment, T0 + id)


def meta(id, choice, order, labeler="ann", comment="", **extra):
    return {
        "task_id": id,
        "labeler": labeler,
        "choice": choice,
        "shown_order": order,
        "comment": comment,
        "judged_at": f"2023-11-14T22:13:{20 + id}Z",
        **extra,
    }


ROWS = [
    row(1, PAIR, "B", (1, 0), [0, 1], comment="friendlier"),
    row(2, PAIR, "tie", None, [1, 0]),
    row(3, PAIR, "both_bad", None, [0, 1], labeler="bob"),
    row(4, CHAT, "ranking", (2, 0, 1), [1, 2, 0]),
    row(5, CHAT, "both_bad", None, [0, 1, 2]),
    row(6, PAIR, "skip", None, [0, 1]),
]


def test_by_default_ties_and_both_bad_are_left_out():
    export = build_export(ROWS, keep_ties=False, keep_both_bad=False)
    assert export.comparisons == [
        {
            "prompt": "Say hi",
            "chosen": "Hello there.",
            "rejected": "Hi!",
            "meta": meta(1, "B", [0, 1], comment="friendlier", extra={"source": "gen-3"}),
        },
    ]
    assert export.rankings == [
        {
            "messages": [{"role": "user", "content": "Rank"}],
            "responses": ["three", "one", "two"],
            "meta": meta(4, "ranking", [1, 2, 0]),
        },
    ]
    assert dict(export.left_out) == {"tie": 1, "both_bad": 1, "all_bad": 1, "skip": 1}


def test_kept_ties_and_both_bad_are_comparisons_with_label_one_half():
    export = build_export(ROWS, keep_ties=True, keep_both_bad=True)
    assert export.comparisons[1:] == [
        {
            "prompt": "Say hi",
            "chosen": "Hi!",
            "rejected": "Hello there.",
            "label": 0.5,
            "meta": meta(2, "tie", [1, 0], extra={"source": "gen-3"}),
        },
        {
            "prompt": "Say hi",
            "chosen": "Hi!",
            "rejected": "Hello there.",
            "label": 0.5,
            "meta": meta(3, "both_bad", [0, 1], labeler="bob", extra={"source": "gen-3"}),
        },
    ]
    assert dict(export.left_out) == {"all_bad": 1, "skip": 1}  # "all bad" on three responses has no record form
    only_ties = build_export(ROWS, keep_ties=True, keep_both_bad=False)
    assert [c["meta"]["choice"] for c in only_ties.comparisons] == ["B", "tie"]


def test_written_files_are_whole_and_leave_no_temp_file(tmp_path):
    out = tmp_path / "comparisons.jsonl"
    out.write_text("old content\n")
    records = build_export(ROWS, keep_ties=True, keep_both_bad=False).comparisons
    write_jsonl(out, records)
    assert [json.loads(line) for line in out.read_text().splitlines()] == records
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparisons.jsonl"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    out = tmp_path / "comparisons.jsonl"
    out.write_text("old content\n")
    with pytest.raises(TypeError):
        write_jsonl(out, [{"prompt": "p", "chosen": object()}])
    assert out.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparisons.jsonl"]
    with pytest.raises(UserError, match="folder .* does not exist"):
        write_jsonl(tmp_path / "absent" / "x.jsonl", [])
