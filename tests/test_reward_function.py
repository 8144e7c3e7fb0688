"""reward.kind=function finds a module in the working directory without PYTHONPATH."""

import sys

from rlhfkit.rewards import function_reward


def test_a_reward_module_in_the_working_directory_imports_without_pythonpath(tmp_path, monkeypatch):
    (tmp_path / "my_reward_for_test.py").write_text("def score(p, r, records):\n    return [len(x) for x in r]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert function_reward("my_reward_for_test:score")(["q"], ["abc"], [{}]) == [3]
