"""The demo's evaluation stage resolves model.dtype=auto before it builds its engine and scores its answers."""

from rlhfkit import reporting
from rlhfkit.config import GenerationConfig
from rlhfkit.runtime import precision


def test_evaluation_builds_its_engine_and_scores_in_the_resolved_precision(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "probe", lambda model: {"float32": 2.0, "bfloat16": 1.0})  # no timing in tests
    monkeypatch.setattr(precision, "cache_root", lambda: tmp_path)
    engines, answers = [], []
    build_engine, answers_and_kl = reporting.build_engine, reporting.answers_and_kl
    monkeypatch.setattr(reporting, "build_engine", lambda *args: engines.append(args[-1]) or build_engine(*args))
    monkeypatch.setattr(reporting, "answers_and_kl", lambda *args: answers.append(args[5]) or answers_and_kl(*args))
    gold = lambda prompts, responses, records: [0.0] * len(responses)  # noqa: E731
    records = [{"prompt": "tell me about the cat"}, {"prompt": "what is the weather like"}]
    result = reporting.evaluate_policies(
        tiny_model_dir,
        tiny_model_dir,
        records,
        {"gold": gold, "learned": gold},
        GenerationConfig(max_new_tokens=3),
        "auto",
        0,
    )
    assert engines == ["bfloat16"] and answers == ["bfloat16", "bfloat16"]
    assert result["num_prompts"] == 2
