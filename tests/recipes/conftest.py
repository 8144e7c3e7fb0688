"""Fixtures of the recipe tests."""

import json

import pytest

from rlhfkit.cli import main
from rlhfkit.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random chat model a little wider than `tiny_model_dir` (hidden size 48): enough to learn a word list."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=48))


@pytest.fixture
def refused(tmp_path, capsys):
    """`refused(command, rows, arguments)`: the one-line error of `rlhfkit <command>` on `rows` as its data.train.

    `arguments(out, data)` gives the command's arguments; the run must exit 2 and write nothing to `out`.
    """

    def refuse(command: str, rows: list[dict], arguments) -> str:
        path = tmp_path / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out = tmp_path / "never"
        assert main([command, *arguments(out, f"data.train={path}")]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and not out.exists(), error
        return error

    return refuse
