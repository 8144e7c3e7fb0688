import json
import re

import pytest

from rlhfkit.assets import ARITHMETIC
from rlhfkit.data.records import load_records
from rlhfkit.errors import UserError
from rlhfkit.rewards.verifiable import (
    check_references,
    final_answer,
    is_correct,
    last_number,
    normalize_answer,
    parse_number,
    verifiable_reward,
)


def test_normalisation_by_hand():
    assert normalize_answer("  The  Eiffel\tTower. ") == "the eiffel tower"
    assert normalize_answer('"Paris"!') == "paris"
    assert normalize_answer("well-known 3/4") == "well-known 3/4"  # punctuation inside a word stays
    assert normalize_answer("...") == ""


def test_final_answer_markers():
    assert final_answer("5 + 7 = 12, so the answer is 12.") == "12."
    assert final_answer("Answer: Paris\n") == "Paris"
    assert final_answer("work... #### 1,000") == "1,000"
    assert final_answer("we get \\boxed{3} then \\boxed{4}, answer: 5") == "4"  # \boxed wins, the last one
    assert final_answer("  just text  ") == "just text"


def test_numbers_by_hand():
    assert parse_number("12") == 12.0
    assert parse_number(" -3.5. ") == -3.5
    assert parse_number("1,000") == 1000.0
    assert parse_number("12 apples") is None
    assert parse_number("Paris") is None
    assert last_number("5 + 7 = 12. I hope this helps") == 12.0
    assert last_number("it fell from 3 to -2.5") == -2.5
    assert last_number("about 1,234,567 people") == 1234567.0
    assert last_number("no digits here") is None


def test_numeric_answers_within_tolerance():
    assert is_correct("The answer is 12.", "12", 1e-6)
    assert is_correct("5 + 7 = 12", "12", 0.0)
    assert not is_correct("5 + 7 = 13", "12", 1e-6)
    assert not is_correct("I do not know", "12", 1e-6)
    # |x - ref| <= tol * max(1, |ref|): ref 1000, tol 1e-3 allows 1; ref 0.5, tol 1e-3 allows 0.001
    assert is_correct("1001", "1000", 1e-3)
    assert not is_correct("1001.5", "1000", 1e-3)
    assert is_correct("0.5009", "0.5", 1e-3)
    assert not is_correct("0.502", "0.5", 1e-3)
    assert is_correct("0.333333", "0.3333333", 1e-6)
    # the last number of the final answer counts, not an earlier one
    assert not is_correct("12 is wrong; the answer is 13", "12", 1e-6)


def test_text_answers_match_exactly_after_normalisation():
    assert is_correct("The answer is Paris.", "paris", 1e-6)
    assert is_correct("PARIS", "Paris", 1e-6)
    assert not is_correct("The capital is Paris.", "Paris", 1e-6)  # no marker: the whole response must be the answer
    assert not is_correct("Answer: Lyon", "Paris", 1e-6)


def test_reward_scores_a_batch():
    reward = verifiable_reward(tolerance=1e-6)
    records = [{"prompt": "2 + 2?", "reference": "4"}, {"prompt": "Capital?", "reference": "Paris"}, {"reference": 7}]
    scores = reward(["2 + 2?", "Capital?", "3 + 4?"], ["2 + 2 = 4.", "answer: Rome", "It is 7"], records)
    assert scores == [1.0, 0.0, 1.0]


def test_record_without_reference_is_named():
    reward = verifiable_reward()
    with pytest.raises(UserError, match=r"prompt record 2 of 2 in the batch has no 'reference'"):
        reward(["a", "b"], ["1", "2"], [{"reference": "1"}, {"prompt": "b"}])
    with pytest.raises(UserError, match=r"prompts.jsonl: record 2 has 'reference' \['x'\]"):
        check_references([{"reference": "1"}, {"reference": ["x"]}], "prompts.jsonl")
    with pytest.raises(UserError, match="tolerance"):
        verifiable_reward(tolerance=-1.0)


def expected_answer(prompt: str) -> int:
    """The answer of a shipped problem, worked out from its wording (independently of the file's reference)."""
    numbers = [int(n) for n in re.findall(r"\d+", prompt)]
    a, b = numbers
    if " + " in prompt or "more" in prompt:
        return a + b
    if " - " in prompt or "away" in prompt:
        return a - b
    if "times" in prompt or "in each" in prompt:
        return a * b
    assert "equally among" in prompt, prompt
    assert a % b == 0, prompt
    return a // b


def test_shipped_arithmetic_problems_are_right():
    records = load_records(ARITHMETIC, "prompts")
    assert len(records) == 200
    assert len({record["prompt"] for record in records}) == 200
    check_references(records, str(ARITHMETIC))
    for record in records:
        assert record["reference"] == str(expected_answer(record["prompt"])), record
    reward = verifiable_reward()
    prompts = [record["prompt"] for record in records]
    assert reward(prompts, [f"The answer is {r['reference']}." for r in records], records) == [1.0] * 200
    assert reward(prompts, [f"{int(r['reference']) + 1}" for r in records], records) == [0.0] * 200
    raw = [json.loads(line) for line in ARITHMETIC.read_text(encoding="utf-8").splitlines()]
    assert all(set(row) == {"prompt", "reference"} for row in raw)
