"""Data sources and formats: TRL's standard and conversational records, save_to_disk directories, data folders,
records in memory; each converted to rlhfkit's records, and each mistake named by file:line (records[i]) and field."""

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhfkit.cli import main
from rlhfkit.data import format_prompt, load_records
from rlhfkit.data.preferences import preference_kind
from rlhfkit.errors import UserError
from rlhfkit.models import load_tokenizer

USER = {"role": "user", "content": "tell me about the cat"}
GOOD = {"role": "assistant", "content": "the cat is good"}
BAD = {"role": "assistant", "content": "the cat is bad"}
TOPICS = "cat dog food movie book weather friend house".split()


def jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def one(record, kind):
    return load_records([record], kind)[0]


# ---------------------------------------------------------------------------
# TRL's formats, converted
# ---------------------------------------------------------------------------


def test_conversational_prompt_only_becomes_messages_and_formats_like_a_string_prompt(tiny_model_dir):
    record = one({"prompt": [USER], "id": 7}, "prompts")
    assert record == {"messages": [USER], "id": 7}
    tokenizer = load_tokenizer(tiny_model_dir)
    assert format_prompt(tokenizer, record) == format_prompt(tokenizer, {"prompt": USER["content"]})


def test_prompt_completion_becomes_a_demonstration():
    assert one({"prompt": "hi", "completion": "hello"}, "demonstrations") == {"prompt": "hi", "response": "hello"}
    assert one({"prompt": [USER], "completion": [GOOD]}, "demonstrations") == {"messages": [USER, GOOD]}
    # the prompts of a prompt-completion file, for PPO
    assert one({"prompt": [USER], "completion": [GOOD]}, "prompts") == {"messages": [USER, GOOD]}


def test_conversational_preference_with_explicit_and_implicit_prompt():
    expected = {"messages": [USER], "chosen": GOOD["content"], "rejected": BAD["content"], "margin": 2.0}
    explicit = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD], "margin": 2.0}
    implicit = {"chosen": [USER, GOOD], "rejected": [USER, BAD], "margin": 2.0}
    assert one(explicit, "comparisons") == expected
    assert one(implicit, "comparisons") == expected
    standard = {"prompt": USER["content"], "chosen": GOOD["content"], "rejected": BAD["content"]}
    assert one(standard, "comparisons") == standard  # rlhfkit's own form is left as it is


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"chosen": [USER, GOOD], "rejected": [{"role": "user", "content": "other"}, BAD]}, "share every turn"),
        ({"prompt": [USER], "chosen": [USER, GOOD], "rejected": [BAD]}, "field 'chosen' must be the one assistant"),
        ({"prompt": [USER], "chosen": [GOOD], "rejected": [USER]}, "field 'rejected' must end with an assistant"),
        ({"prompt": [USER], "chosen": [{"role": "assistant"}], "rejected": [BAD]}, "chosen[0] must be"),
        ({"prompt": [GOOD], "chosen": "a", "rejected": "b"}, "field 'prompt' ends with an assistant turn"),
        ({"prompt": "hi", "completion": "yes", "label": True}, "unpaired preference"),
        ({"completion": "yes"}, "field 'completion' needs a 'prompt'"),
        ({"prompt": "hi", "completion": "", "x": 1}, "field 'completion' is empty"),
        ({"prompt": "hi", "messages": [USER], "chosen": [GOOD], "rejected": [BAD]}, "both 'prompt' and 'messages'"),
    ],
)
def test_malformed_trl_records_name_the_record_and_field(record, message, tmp_path):
    path = jsonl(tmp_path / "data.jsonl", [record])
    with pytest.raises(UserError, match="^" + str(path).replace("\\", "\\\\") + ":1: .*") as error:
        load_records(path, "comparisons" if "chosen" in record else "demonstrations")
    assert message in str(error.value)


def test_preference_kind_reads_the_converted_first_record(tmp_path):
    path = jsonl(tmp_path / "trl.jsonl", [{"chosen": [USER, GOOD], "rejected": [USER, BAD]}])
    assert preference_kind(str(path)) == "comparisons"
    with pytest.raises(UserError, match=r"trl2.jsonl:1: a reward model trains on .* this is a demonstrations"):
        preference_kind(str(jsonl(tmp_path / "trl2.jsonl", [{"prompt": "hi", "completion": "yes"}])))


# ---------------------------------------------------------------------------
# Records in memory (the Python API)
# ---------------------------------------------------------------------------


def test_records_in_memory_are_validated_naming_the_index_and_field():
    with pytest.raises(UserError, match=r"^records\[1\]: field 'prompt' must be a string, got int$"):
        load_records([{"prompt": "hi"}, {"prompt": 5}], "prompts")
    with pytest.raises(UserError, match=r"^records\[0\]: needs a 'prompt' string or a 'messages' list$"):
        load_records([{"text": "hi"}], "prompts")
    with pytest.raises(UserError, match=r"^records\[0\]: expected a JSON object, got str$"):
        load_records(["hi"], "prompts")


def test_a_datasets_dataset_in_memory_is_validated_and_its_absent_cells_dropped():
    rows = [
        {"prompt": "a", "chosen": "x", "rejected": "y", "margin": 1.0},
        {"prompt": "b", "chosen": "x", "rejected": "y"},
    ]
    dataset = datasets.Dataset.from_list(rows)
    assert load_records(dataset, "comparisons") == rows  # the second row's margin column (None) is absent
    with pytest.raises(UserError, match=r"^records\[1\]: field 'rejected' must be a string, got nothing$"):
        load_records(datasets.Dataset.from_list([rows[0], {"prompt": "b", "chosen": "x"}]), "comparisons")
    with pytest.raises(UserError, match=r"pass one split's records, e.g. records\['train'\]"):
        load_records(datasets.DatasetDict({"train": dataset}), "comparisons")


# ---------------------------------------------------------------------------
# save_to_disk directories and data folders
# ---------------------------------------------------------------------------


def test_a_save_to_disk_dataset_is_read_with_its_rows_named(tmp_path):
    rows = [{"prompt": [USER], "completion": [GOOD]}, {"prompt": "hi", "completion": "hello"}]
    datasets.Dataset.from_list(rows[:1] * 2).save_to_disk(str(tmp_path / "conversational"))
    assert load_records(tmp_path / "conversational", "demonstrations") == [{"messages": [USER, GOOD]}] * 2
    bad = datasets.Dataset.from_list([{"prompt": "hi", "completion": "yes"}, {"prompt": "", "completion": "yes"}])
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(UserError, match=f"^{tmp_path / 'bad'}:2: field 'prompt' is empty$"):
        load_records(tmp_path / "bad", "demonstrations")


def test_a_save_to_disk_dataset_dict_gives_train_or_the_split_named(tmp_path):
    splits = {name: datasets.Dataset.from_list([{"prompt": f"{name} {i}"} for i in range(n)]) for name, n in
              (("train", 3), ("test", 2))}  # fmt: skip
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "dict"))
    assert [r["prompt"] for r in load_records(tmp_path / "dict", "prompts")] == ["train 0", "train 1", "train 2"]
    assert [r["prompt"] for r in load_records(f"{tmp_path / 'dict'}:test", "prompts")] == ["test 0", "test 1"]
    with pytest.raises(UserError, match=r"has no split 'dev'; its splits are \['train', 'test'\]"):
        load_records(f"{tmp_path / 'dict'}:dev", "prompts")


def test_a_folder_of_jsonl_and_parquet_files_is_read_in_name_order_with_file_and_line(tmp_path):
    folder = tmp_path / "folder"
    (folder / "shards").mkdir(parents=True)
    jsonl(folder / "part-0.jsonl", [{"prompt": "one"}, {"prompt": "two"}])
    pq.write_table(pa.Table.from_pylist([{"prompt": "three"}]), folder / "shards" / "part-1.parquet")
    (folder / "README.md").write_text("not data")
    assert [r["prompt"] for r in load_records(folder, "prompts")] == ["one", "two", "three"]
    jsonl(folder / "part-2.jsonl", [{"prompt": "four"}, {"prompt": 4}])
    with pytest.raises(UserError, match=f"^{folder / 'part-2.jsonl'}:2: field 'prompt' must be a string"):
        load_records(folder, "prompts")


def test_a_folder_named_by_split_gives_train_or_the_split_named(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"prompt": "a"}])
    jsonl(tmp_path / "test.jsonl", [{"prompt": "b"}])
    assert load_records(tmp_path, "prompts") == [{"prompt": "a"}]
    assert load_records(f"{tmp_path}:test", "prompts") == [{"prompt": "b"}]
    with pytest.raises(UserError, match=r"has no 'validation' files; its files are named for the splits"):
        load_records(f"{tmp_path}:validation", "prompts")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"^{empty}: is a directory with no .jsonl"):
        load_records(empty, "prompts")


# ---------------------------------------------------------------------------
# Through the CLI on the tiny model
# ---------------------------------------------------------------------------


def sets(tiny, out, *extra):
    common = [f"model.name={tiny}", "model.dtype=float32", "train.steps=2", "train.batch_size=2", f"out={out}"]
    return [item for s in (*common, *extra) for item in ("--set", s)]


def conversation(topic, answer):
    return [{"role": "user", "content": f"tell me about the {topic}"}, {"role": "assistant", "content": answer}]


def test_sft_trains_on_conversational_prompt_completion_from_a_save_to_disk_directory(tiny_model_dir, tmp_path):
    rows = [{"prompt": conversation(t, "")[:1], "completion": conversation(t, "good day")[1:]} for t in TOPICS]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "demos"))
    out = tmp_path / "sft"
    extra = (f"data.train={tmp_path / 'demos'}", "train.eval_samples=0", "data.eval_fraction=0.25")
    assert main(["sft", *sets(tiny_model_dir, out, *extra)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_records"] == 6 and summary["eval_records"] == 2


def test_rm_trains_on_implicit_prompt_preferences_in_a_data_folder(tiny_model_dir, tmp_path):
    folder = tmp_path / "prefs"
    folder.mkdir()
    rows = [{"chosen": conversation(t, "good"), "rejected": conversation(t, "bad")} for t in TOPICS]
    jsonl(folder / "a.jsonl", rows[:4])
    pq.write_table(pa.Table.from_pylist(rows[4:]), folder / "b.parquet")
    out = tmp_path / "rm"
    extra = (f"data.train={folder}", "data.eval_fraction=0.25", "normalize.enabled=false")
    assert main(["rm", *sets(tiny_model_dir, out, *extra)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "comparisons" and summary["train_records"] == 6 and summary["eval_records"] == 2


def test_dpo_trains_on_explicit_conversational_preferences(tiny_model_dir, tmp_path):
    rows = [{"prompt": conversation(t, "")[:1], "chosen": [GOOD], "rejected": [BAD]} for t in TOPICS]
    path = jsonl(tmp_path / "prefs.jsonl", rows)
    out = tmp_path / "dpo"
    extra = (f"data.train={path}", "train.kl_prompts=0", "data.eval_fraction=0.25")
    assert main(["dpo", *sets(tiny_model_dir, out, *extra)]) == 0
    assert json.loads((out / "summary.json").read_text())["train_pairs"] == 6


def test_a_bad_trl_record_is_one_line_naming_file_line_and_field_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    rows = [{"prompt": conversation(t, "")[:1], "chosen": [GOOD], "rejected": [BAD]} for t in TOPICS]
    rows[3]["rejected"] = [USER]
    path = jsonl(tmp_path / "prefs.jsonl", rows)
    out = tmp_path / "dpo"
    assert main(["dpo", *sets(tiny_model_dir, out, f"data.train={path}")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{path}:4: field 'rejected' must end with an assistant turn" in err and len(err.splitlines()) == 1
    assert not out.exists()
