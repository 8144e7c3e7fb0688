"""The CLI's error boundary, text decoding, output-path and seed checks, each on its own."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import rlhfkit.recipes.generate as generate_recipe
from rlhfkit.checkpoint import check_output_directory, seed_everything
from rlhfkit.cli import main
from rlhfkit.config import check_seed, load_config
from rlhfkit.data import load_records
from rlhfkit.errors import UserError, decode_utf8

# ---------------------------------------------------------------------------
# One line, exit 2 for the user's mistakes; a summary, exit 1 and --debug for ours
# ---------------------------------------------------------------------------


def fail_with(monkeypatch, error: BaseException) -> None:
    def run(args):
        raise error

    monkeypatch.setattr(generate_recipe, "run", run)


def test_an_internal_error_is_a_one_line_summary_and_exit_1(monkeypatch, capsys):
    fail_with(monkeypatch, RuntimeError("the cache is inconsistent\nsecond line"))
    assert main(["generate"]) == 1
    assert capsys.readouterr().err == (
        "rlhfkit generate: internal error: RuntimeError: the cache is inconsistent second line "
        "(rerun with --debug for the traceback)\n"
    )


@pytest.mark.parametrize("argv", [["--debug", "generate"], ["generate", "--debug"]])
def test_debug_before_or_after_the_command_prints_the_traceback(monkeypatch, capsys, argv):
    fail_with(monkeypatch, RuntimeError("the cache is inconsistent"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.endswith("rlhfkit generate: internal error: RuntimeError: the cache is inconsistent\n")


@pytest.mark.parametrize(
    "error, message",
    [
        (
            FileNotFoundError(2, "No such file or directory", "/data/in.jsonl"),
            "/data/in.jsonl: no such file or directory",
        ),
        (PermissionError(13, "Permission denied", "/srv/out"), "/srv/out: permission denied"),
        (IsADirectoryError(21, "Is a directory", "/data"), "/data: is a directory, not a file"),
        (NotADirectoryError(20, "Not a directory", "/a/file/x"), "/a/file/x: a part of the path is a file"),
        (OSError(28, "No space left on device", "/srv/out/final"), "/srv/out/final: no space left on the device"),
        (UserError("data.jsonl:3: field 'prompt' is empty\n(and a second line)"), "field 'prompt' is empty (and a"),
    ],
)
def test_expected_failures_are_one_line_naming_the_path_and_exit_2(monkeypatch, capsys, error, message):
    fail_with(monkeypatch, error)
    assert main(["generate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rlhfkit generate: error: ") and message in err


def test_an_os_error_without_a_path_is_ours(monkeypatch, capsys):
    fail_with(monkeypatch, ConnectionResetError(104, "Connection reset by peer"))
    assert main(["generate"]) == 1
    assert "internal error: ConnectionResetError" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "module", "advice"),
    [
        ("sft", "rlhfkit.recipes.sft", "the last checkpoint is intact, rerun with --resume"),
        ("loop", "rlhfkit.recipes.loop", "rerun the same command"),  # no --resume: a rerun continues the loop
        ("generate", "rlhfkit.recipes.generate", "rerun the same command"),
    ],
)
def test_ctrl_c_says_how_this_command_continues(monkeypatch, capsys, command, module, advice):
    monkeypatch.setattr(f"{module}.run", lambda args: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main([command]) == 130
    assert capsys.readouterr().err == f"rlhfkit {command}: interrupted; {advice}\n"


def test_unknown_command_and_unknown_option_are_one_line(capsys):
    assert main(["trian"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as exit:
        main(["generate", "--sett", "seed=1"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --sett" in err


def test_a_hub_id_without_network_is_one_line_in_a_real_process(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "rlhfkit",
        "generate",
        "--set",
        "model.name=someorg/no-such-model",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("rlhfkit: warning")]
    assert len(lines) == 1 and lines[0].startswith("rlhfkit generate: error: model.name someorg/no-such-model: ")
    assert not out.exists()


# ---------------------------------------------------------------------------
# Text: UTF-8, with or without a byte-order mark; anything else names line and byte
# ---------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_undecodable_bytes_name_line_and_byte_offset():
    # line 1 is 9 bytes with its newline; the bad byte follows the 7 bytes '{"b": "' of line 2: offset 16
    with pytest.raises(UserError, match=r"^in.jsonl:2: not UTF-8 text \(byte 0xff at byte offset 16\)"):
        decode_utf8(b'{"a": 1}\n{"b": "\xff"}\n', "in.jsonl")
    assert decode_utf8(BOM + "naïve\n".encode(), "x") == "naïve\n"


@pytest.mark.parametrize(
    "name, data",
    [
        ("p.jsonl", BOM + b'{"prompt": "caf\xc3\xa9 day"}\n{"prompt": "good"}\n'),
        ("p.json", BOM + b'[{"prompt": "caf\xc3\xa9 day"}, {"prompt": "good"}]'),
        ("p.csv", BOM + b"prompt\ncaf\xc3\xa9 day\ngood\n"),
    ],
)
def test_a_byte_order_mark_is_accepted(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    assert load_records(path, "prompts") == [{"prompt": "café day"}, {"prompt": "good"}]


@dataclasses.dataclass
class Tiny:
    seed: int = 0
    name: str = ""


def test_a_config_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(BOM + "seed: 3\nname: café\n".encode())
    assert load_config(Tiny, path) == Tiny(seed=3, name="café")


def test_the_label_command_reads_a_candidates_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "candidates.jsonl"
    record = {"prompt": "tell me about the cat", "responses": ["good great day", "bad sad day"]}
    path.write_bytes(BOM + (json.dumps(record) + "\n").encode())
    out = tmp_path / "out"
    assert main(["label", "--judge", "sentiment", "--set", f"data.train={path}", "dtype=float32", f"out={out}"]) == 0
    labelled = [json.loads(line) for line in (out / "comparisons.jsonl").read_text().splitlines()]
    assert [(r["chosen"], r["rejected"]) for r in labelled] == [("good great day", "bad sad day")]


# ---------------------------------------------------------------------------
# Output directories and seeds
# ---------------------------------------------------------------------------


def test_output_directory_check_accepts_a_new_path_and_writes_nothing(tmp_path):
    check_output_directory(tmp_path / "a" / "b")
    check_output_directory(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_output_directory_check_refuses_a_file_and_a_path_through_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match=r"f is a file, not a directory"):
        check_output_directory(tmp_path / "f")
    with pytest.raises(UserError, match=r"f is a file, not a directory"):
        check_output_directory(tmp_path / "f" / "run")


def test_output_directory_check_refuses_a_directory_it_cannot_write(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
    try:
        if os.geteuid() == 0 and not immutable:
            pytest.skip("root ignores file modes and chattr is unavailable")
        for out in (locked, locked / "run"):
            with pytest.raises(UserError, match=re.escape(f"--out {out}: cannot write there")):
                check_output_directory(out)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("seed", [-1, 2**70, True, "3"])
def test_a_seed_numpy_or_torch_cannot_take_is_refused_naming_seed(seed):
    with pytest.raises(UserError, match="^seed must be an integer in 0..4294967295"):
        seed_everything(seed)


def test_configured_seeds_stay_in_numpys_range_and_derived_ones_wrap_for_numpy():
    assert check_seed(2**32 - 1) == 2**32 - 1
    with pytest.raises(UserError, match="seed must be"):
        check_seed(2**32)
    seed_everything(2**32 + 5)  # a configured seed plus a step
    wrapped = np.random.get_state()[1].copy()
    np.random.seed(5)
    assert np.array_equal(wrapped, np.random.get_state()[1])
