"""Record kinds, their validation, TRL's formats read as them, and the text of a record.

Every stage reads records of one kind (see DESIGN.md, "Data formats") from any source
`rlhfkit.data.readers` reads, or from records in memory (a list of dicts, a `datasets.Dataset`)
given to the Python API. Validation happens before any heavy work and names the file and line
(1-based; the row for CSV, Parquet and datasets), or `records[i]` in memory, and the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from rlhfkit.data.readers import read_located, without_absent_cells
from rlhfkit.data.readers import read_rows as read_rows  # re-exported: the labelling app reads candidates with it
from rlhfkit.errors import UserError

Record = dict[str, Any]


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
    return _turns(record.get("messages"), "messages", where)


def _turns(messages: Any, key: str, where: str) -> list[dict[str, str]]:
    """`messages` checked as a non-empty list of {"role": str, "content": str} (the field `key` of a record)."""
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: field {key!r} must be a non-empty list of {{role, content}}")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise UserError(f'{where}: {key}[{i}] must be {{"role": str, "content": str}}')
        _check_encodable(message["content"], where, f"{key}[{i}].content")
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


# ---------------------------------------------------------------------------
# TRL's formats
# ---------------------------------------------------------------------------
#
# TRL (huggingface.co/docs/trl/dataset_formats) writes text as strings ("standard") or as lists of
# {"role", "content"} messages ("conversational"). On load they become rlhfkit's records:
#
#   prompt-only            prompt (a list)                      -> messages
#   prompt-completion      prompt + completion                  -> prompt + response, or messages
#                                                                  ending with the completion's turns
#   preference             prompt + chosen + rejected (each a   -> prompt or messages + chosen + rejected
#                          string or one assistant turn)           (strings)
#   implicit prompt        chosen + rejected: whole conversations sharing every turn but the last
#                                                               -> messages (the shared turns) + chosen + rejected
#   language modeling      messages                             -> (already rlhfkit's)


def from_trl(record: Record, where: str) -> Record:
    """`record` as an rlhfkit record (the table above); records in rlhfkit's own form come back as they are."""
    if "completion" in record:
        return _from_prompt_completion(dict(record), where)
    if isinstance(record.get("chosen"), list) or isinstance(record.get("rejected"), list):
        return _from_conversational_preference(dict(record), where)
    if isinstance(record.get("prompt"), list):
        record = dict(record)
        record["messages"] = _prompt_turns(record, where)
        return record
    return record


def _prompt_turns(record: Record, where: str) -> list[dict[str, str]] | None:
    """The prompt's turns, taken out of 'prompt' (a string is one user turn) or read from 'messages'; None if neither.

    A prompt ends with the turn the answer replies to, never with an assistant turn.
    """
    if "prompt" in record and "messages" in record:
        raise UserError(f"{where}: gives both 'prompt' and 'messages'; keep one")
    if "prompt" not in record:
        return _turns(record["messages"], "messages", where) if "messages" in record else None
    prompt = record.pop("prompt")
    if isinstance(prompt, list):
        turns = _turns(prompt, "prompt", where)
    else:
        turns = [{"role": "user", "content": _text({"prompt": prompt}, "prompt", where)}]
    if turns[-1]["role"] == "assistant":
        raise UserError(f"{where}: field 'prompt' ends with an assistant turn; a prompt ends with the turn answered")
    return turns


def _answer_turns(value: Any, key: str, where: str) -> list[dict[str, str]]:
    """A completion's turns (a string is one assistant turn), ending with the assistant's."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": _text({key: value}, key, where)}]
    turns = _turns(value, key, where)
    if turns[-1]["role"] != "assistant":
        raise UserError(f"{where}: field {key!r} must end with an assistant turn, not {turns[-1]['role']!r}")
    return turns


def _from_prompt_completion(record: Record, where: str) -> Record:
    if "response" in record:
        raise UserError(f"{where}: gives both 'completion' and 'response'; keep one")
    if isinstance(record.get("label"), bool):
        raise UserError(
            f"{where}: prompt + completion + a true/false 'label' is an unpaired preference (TRL's KTO format), "
            "which rlhfkit does not train on; give 'chosen' and 'rejected' answers to the same prompt"
        )
    completion = record.pop("completion")
    if "prompt" not in record:
        raise UserError(f"{where}: field 'completion' needs a 'prompt' before it")
    if isinstance(record["prompt"], str) and isinstance(completion, str):
        return {**record, "response": _text({"completion": completion}, "completion", where)}
    turns = _prompt_turns(record, where)
    return {**record, "messages": turns + _answer_turns(completion, "completion", where)}


def _from_conversational_preference(record: Record, where: str) -> Record:
    """An explicit prompt with one assistant turn per side, or two conversations sharing the prompt's turns."""
    chosen = _answer_turns(record.pop("chosen", None), "chosen", where)
    rejected = _answer_turns(record.pop("rejected", None), "rejected", where)
    prompt = _prompt_turns(record, where)
    if prompt is not None:
        for key, turns in (("chosen", chosen), ("rejected", rejected)):
            if len(turns) != 1:
                raise UserError(
                    f"{where}: field {key!r} must be the one assistant turn that answers the prompt, "
                    f"not {len(turns)} turns"
                )
    elif len(chosen) < 2 or chosen[:-1] != rejected[:-1]:
        raise UserError(
            f"{where}: without a 'prompt', 'chosen' and 'rejected' must be whole conversations that share every "
            "turn but their last (the prompt), as in TRL's implicit-prompt preference format"
        )
    messages = prompt if prompt is not None else chosen[:-1]
    return {**record, "messages": messages, "chosen": chosen[-1]["content"], "rejected": rejected[-1]["content"]}


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_records(source: str | Path | Iterable[Record], kind: str, limit: int | None = None) -> list[Record]:
    """Records of `kind`, TRL's formats converted; a UserError names the file:line (records[i]) and the field.

    `source` is any source `rlhfkit.data.readers` reads, or records in memory (a list of dicts, a
    `datasets.Dataset`) from the Python API: one validation for every way into a trainer.
    """
    if kind not in VALIDATORS:
        raise ValueError(f"unknown record kind {kind!r}")
    name, rows = _located_rows(source)
    if not rows:
        raise UserError(f"{name}: holds no records (expected {kind})")
    records: list[Record] = []
    first_kind: str | None = None
    for where, raw in rows:
        if not isinstance(raw, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        record = from_trl(raw, where)
        found = detect_kind(record)
        if not _compatible(kind, found):
            raise UserError(
                f"{where}: this looks like a {found.split('_')[0]} record, but {kind} records are expected here"
            )
        if first_kind is None:
            first_kind = found
        elif found != first_kind and kind != "prompts":
            raise UserError(f"{where}: mixed record kinds in one source ({first_kind} earlier, {found} here)")
        VALIDATORS[kind](record, where)
        records.append(dict(record))
        if limit is not None and len(records) >= limit:
            break
    return records


def _located_rows(source: str | Path | Iterable[Record]) -> tuple[str, list[tuple[str, Any]]]:
    """(name, [(where, raw record)]) of a data source, or of records in memory (`records[i]`, from 0)."""
    if isinstance(source, (str, Path)):
        return read_located(source)
    if isinstance(source, Mapping):
        raise UserError(
            f"records: got a {type(source).__name__} of {list(source)}; pass one split's records, e.g. records['train']"
        )
    try:
        rows = list(source)
    except TypeError:
        raise UserError(f"records must be a data file's name or a list of dicts, got {type(source).__name__}") from None
    columnar = hasattr(source, "column_names")  # a datasets.Dataset fills the columns a record lacks with None
    return "records", [(f"records[{i}]", without_absent_cells(row) if columnar else row) for i, row in enumerate(rows)]


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
