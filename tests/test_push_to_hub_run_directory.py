"""`--push-to-hub` uploads the directory the command's `run` returned: no process-wide record of directories.

A stand-in `run` resolves a decoy output directory (as any nested run might) and returns another; the
push must take the returned one. A `run` that returns only an exit code made nothing to push.
"""

import json

from rlhfkit.cli import main
from rlhfkit.data import load_records
from rlhfkit.recipes import label
from rlhfkit.runtime import RunDirectory
from test_push_to_hub_cli import hub  # noqa: F401  (the local hub fixture)

RECORD = {"prompt": "tell me about the cat", "chosen": "good", "rejected": "bad"}


def test_the_pushed_directory_is_the_one_run_returned(hub, monkeypatch, tmp_path, capsys):  # noqa: F811
    made = tmp_path / "made"

    def run(args):
        RunDirectory.resolve(str(tmp_path / "decoy"), "label", resume=False)
        made.mkdir()
        (made / "comparisons.jsonl").write_text(json.dumps(RECORD) + "\n")
        return made

    monkeypatch.setattr(label, "run", run)
    assert main(["label", "--judge", "length", "--push-to-hub", "me/prefs"]) == 0
    assert f"rlhfkit label: pushed {made} to the hub repository me/prefs" in capsys.readouterr().out
    assert load_records(hub / "dataset" / "me" / "prefs" / "comparisons.jsonl", "comparisons") == [RECORD]


def test_a_run_that_returns_only_its_exit_code_has_nothing_to_push(hub, monkeypatch, tmp_path, capsys):  # noqa: F811
    def run(args):
        RunDirectory.resolve(str(tmp_path / "out"), "label", resume=False)
        return 0

    monkeypatch.setattr(label, "run", run)
    assert main(["label", "--judge", "length", "--push-to-hub", "me/prefs"]) == 2
    assert capsys.readouterr().err.strip() == (
        "rlhfkit label: error: --push-to-hub me/prefs: rlhfkit label made no output directory to push"
    )
    assert not hub.exists()
