"""Constitutional AI, supervised stage: the constitution file, the critique-revision chain, the command."""

import json
import random

import pytest

from rlhfkit.assets import CONSTITUTION
from rlhfkit.cli import main
from rlhfkit.data import load_records
from rlhfkit.errors import UserError
from rlhfkit.rewards.ai_judge import Principle, load_constitution
from rlhfkit.rollout.critique import critique_and_revise

PRINCIPLES = [Principle("p0", "CRIT0", "REV0", "good0"), Principle("p1", "CRIT1", "REV1", "good1")]


def test_shipped_constitution():
    principles = load_constitution(CONSTITUTION)
    assert 6 <= len(principles) <= 10
    assert {"harmless", "honest", "helpful", "kind", "positive"} <= {p.name for p in principles}
    assert len({p.name for p in principles}) == len(principles)


def test_missing_field_names_file_and_principle_index(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "principles:\n"
        "  - {name: a, critique: c, revision: r, preference: p}\n"
        "  - {name: b, critique: c, preference: p}\n"
    )
    with pytest.raises(UserError) as error:
        load_constitution(path)
    assert str(path) in str(error.value) and "principle 1" in str(error.value) and "'revision'" in str(error.value)
    path.write_text("principles: []\n")
    with pytest.raises(UserError, match="non-empty list 'principles'"):
        load_constitution(path)


def fake_generator(calls):
    """Echo generator: the reply to an input names the call number and the row, so chains can be traced."""

    def generate(texts):
        calls.append(texts)
        return [f"out{len(calls)}.{row}" for row in range(len(texts))]

    return generate


def test_chain_rounds_are_batched_and_revise_the_last_revision():
    calls = []
    records = [{"prompt": "q0"}, {"prompt": "q1"}]
    chains = critique_and_revise(
        records, PRINCIPLES, 2, fake_generator(calls), lambda messages: json.dumps(messages), random.Random(7)
    )
    # 1 response call + 2 rounds x (critique, revision) = 5 calls, each over both prompts at once
    assert [len(c) for c in calls] == [2, 2, 2, 2, 2]
    expected = random.Random(7)
    round_principles = [[expected.choice(PRINCIPLES) for _ in records] for _ in range(2)]
    for row, chain in enumerate(chains):
        assert chain["response"] == f"out1.{row}"
        assert [r["principle"] for r in chain["rounds"]] == [
            round_principles[0][row].name,
            round_principles[1][row].name,
        ]
        assert [r["critique"] for r in chain["rounds"]] == [f"out2.{row}", f"out4.{row}"]
        assert chain["final"] == f"out5.{row}" == chain["rounds"][-1]["revision"]
        # round 2's critique request critiques round 1's revision, under round 2's principle
        critique_input = json.loads(calls[3][row])
        assert critique_input[0] == {"role": "user", "content": f"q{row}"}
        assert critique_input[1] == {"role": "assistant", "content": f"out3.{row}"}
        assert critique_input[2] == {"role": "user", "content": round_principles[1][row].critique}
        # the revision request follows that critique
        revision_input = json.loads(calls[4][row])
        assert revision_input[3:] == [
            {"role": "assistant", "content": f"out4.{row}"},
            {"role": "user", "content": round_principles[1][row].revision},
        ]


def test_empty_final_revision_falls_back_to_last_non_empty_text():
    replies = iter([["first"], ["crit"], ["rev1"], ["crit"], ["  "]])
    chains = critique_and_revise([{"prompt": "q"}], PRINCIPLES, 2, lambda texts: next(replies), str, random.Random(0))
    assert chains[0]["final"] == "rev1"


def test_command_writes_demonstrations_for_sft_and_refuses_to_overwrite_them(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    sets = [
        f"model.name={tiny_model_dir}",
        "model.dtype=float32",
        "data.limit=5",
        "critique.batch_size=2",
        "critique.revisions=2",
        "generation.max_new_tokens=6",
    ]
    assert main(["constitution", "--out", str(out), *sum((["--set", s] for s in sets), [])]) == 0
    chains = [json.loads(line) for line in (out / "chains.jsonl").read_text().splitlines()]
    demonstrations = load_records(out / "demonstrations.jsonl", "demonstrations")
    prompts = load_records(CONSTITUTION.parent / "prompts.jsonl", "prompts", limit=5)
    assert [c["prompt"] for c in chains] == [p["prompt"] for p in prompts]
    assert all(len(c["rounds"]) == 2 for c in chains)
    finals = [c["final"] for c in chains if c["final"].strip()]
    assert [d["response"] for d in demonstrations] == finals
    summary = json.loads((out / "summary.json").read_text())
    assert summary["demonstrations"] == len(demonstrations) and summary["prompts"] == 5
    assert (out / "config.yaml").is_file() and (out / "constitution.png").is_file()
    # a rerun into the same directory is refused in one line, like generate and label; the result is kept
    written = (out / "demonstrations.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["constitution", "--out", str(out), *sum((["--set", s] for s in sets), [])]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{out} already holds a finished constitution run" in error
    assert (out / "demonstrations.jsonl").stat().st_mtime_ns == written


def test_bad_constitution_exits_2_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("principles:\n  - {name: a, critique: c, revision: r}\n")
    out = tmp_path / "run"
    code = main(
        ["constitution", "--out", str(out), "--set", f"model.name={tiny_model_dir}", f"critique.constitution={bad}"]
    )
    assert code == 2
    assert f"{bad}: principle 0" in capsys.readouterr().err
    assert not out.exists()
