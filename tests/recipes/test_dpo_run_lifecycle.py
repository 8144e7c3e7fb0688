"""`rlhfkit dpo`'s reference log-probs belong to the run: nothing is written before `fit` owns the directory.

A gold judge that fails at the step-0 evaluation (a bad input, found only once the run has started) ends the
run before its first checkpoint, and such a run leaves no directory behind: no config.yaml, no reference.
"""

import json
import sys
import textwrap

from rlhfkit.cli import main

GOLD = """
def gold(prompts, responses, records):
    return [float("nan")] * len(responses)
"""


def test_a_run_that_fails_at_its_first_evaluation_leaves_no_directory(tiny_model_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "dpo_nan_gold.py").write_text(textwrap.dedent(GOLD))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dpo_nan_gold", raising=False)
    pairs, prompts, out = tmp_path / "pairs.jsonl", tmp_path / "prompts.jsonl", tmp_path / "run"
    rows = [{"prompt": f"tell me about the {topic}", "chosen": "good day", "rejected": "bad day"} for topic in "abcd"]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    prompts.write_text(json.dumps({"prompt": "how is the weather"}) + "\n")
    sets = [f"model.name={tiny_model_dir}", "model.dtype=float32", f"data.train={pairs}", f"data.prompts={prompts}",
            "train.steps=1", "train.batch_size=2", "train.kl_prompts=1", "train.score_answers=true",
            "reward.kind=function", "reward.function=dpo_nan_gold:gold", "generation.max_new_tokens=3"]  # fmt: skip
    assert main(["dpo", "--out", str(out), *sum((["--set", s] for s in sets), [])]) == 2
    assert "rlhfkit dpo: error: the reward function gold returned" in capsys.readouterr().err
    assert not out.exists()
