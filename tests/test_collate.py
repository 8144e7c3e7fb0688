"""Tokenisation of prompt + response (+ EOS), truncation that keeps the response, padding, packing."""

import pytest
import torch

from rlhfkit.data.collate import pack_items, pad_batch, tokenize_prompt_response
from rlhfkit.errors import UserError
from rlhfkit.models import load_tokenizer
from rlhfkit.models.tiny import build_tiny_model

# Tiny word-level vocabulary: <|im_start|>=1, <|im_end|>=2 (EOS), pad=0, user=106, tell=92, me=105,
# a=5, good=31, day=57, assistant=107.
PROMPT_IDS = [
    1,
    106,
    92,
    105,
    5,
    31,
    57,
    2,
    1,
    107,
]  # "<|im_start|>user tell me a good day<|im_end|><|im_start|>assistant "
RECORD = {"prompt": "tell me a good day"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(str(build_tiny_model(tmp_path_factory.mktemp("tiny"))))


def test_prompt_response_eos_and_mask(tokenizer):
    item = tokenize_prompt_response(tokenizer, RECORD, "good day", max_length=64)
    assert item["input_ids"] == PROMPT_IDS + [31, 57, 2]
    assert item["response_mask"] == [False] * 10 + [True, True, True]
    assert not item["truncated"] and not item["prompt_truncated"]
    without_eos = tokenize_prompt_response(tokenizer, RECORD, "good day", max_length=64, add_eos=False)
    assert without_eos["input_ids"] == PROMPT_IDS + [31, 57]


def test_prompt_is_cut_from_the_left_before_the_response(tokenizer):
    # 13 tokens, room for 8: the response + EOS (3) stays whole, the prompt keeps its last 5 tokens
    item = tokenize_prompt_response(tokenizer, RECORD, "good day", max_length=8)
    assert item["input_ids"] == PROMPT_IDS[-5:] + [31, 57, 2]
    assert item["response_mask"] == [False] * 5 + [True] * 3
    assert item["prompt_truncated"] and not item["truncated"]


def test_a_response_too_long_alone_is_cut_at_its_end_but_kept(tokenizer):
    # room for 3: one prompt token (so the first response token is predicted) and 2 response tokens, no EOS
    item = tokenize_prompt_response(tokenizer, RECORD, "good day good day", max_length=3)
    assert item["input_ids"] == [107, 31, 57]
    assert item["response_mask"] == [False, True, True]
    assert item["truncated"]


def test_an_empty_response_is_eos_alone_or_refused(tokenizer):
    assert tokenize_prompt_response(tokenizer, RECORD, "", max_length=16)["input_ids"] == PROMPT_IDS + [2]
    with pytest.raises(UserError, match="no tokens"):
        tokenize_prompt_response(tokenizer, RECORD, "", max_length=16, add_eos=False)


def test_pad_batch_right_and_left():
    items = [
        {"input_ids": [5, 6, 7], "response_mask": [False, True, True]},
        {"input_ids": [8], "response_mask": [True]},
    ]
    ids, attention, response = pad_batch(items, pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention.tolist() == [[True, True, True], [True, False, False]]
    assert response.tolist() == [[False, True, True], [True, False, False]]
    assert ids.dtype == torch.long and attention.dtype == torch.bool and response.dtype == torch.bool
    ids, attention, response = pad_batch(items, pad_token_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention.tolist() == [[True, True, True], [False, False, True]]
    assert response.tolist() == [[False, True, True], [False, False, True]]


def test_packing_keeps_each_response_mask_and_never_splits_an_example():
    items = [{"input_ids": [1] * 3, "response_mask": [False, True, True]} for _ in range(3)]
    rows = pack_items(items, max_length=7)
    assert [row["input_ids"] for row in rows] == [[1] * 6, [1] * 3]
    assert rows[0]["response_mask"] == [False, True, True, False, True, True]
