"""The bad inputs of test_bad_inputs.py: damaged files built on the spot, and the commands they are fed to.

A case is (command, kind, name, build): `build(ctx)` writes whatever it needs under
`ctx.tmp` and returns the extra command-line arguments and the culprit that the one-line
error must name (a path, a `path:line`, a key). Each command starts from settings that
run in seconds on the tiny model, so a bad input that slipped through would still end
quickly (and the test would fail on its exit status, not time out).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@dataclasses.dataclass
class Context:
    tmp: Path
    tiny: str  # the tiny model directory (outside tmp)
    read_only: Path | None  # an existing directory nobody can write in, where the system allows one

    @property
    def out(self) -> Path:
        return self.tmp / "out"


Build = Callable[[Context], tuple[list[str], str]]


@dataclasses.dataclass(frozen=True)
class Case:
    command: str
    kind: str  # the column of the report's table
    name: str
    build: Build

    @property
    def id(self) -> str:
        return f"{self.command}-{self.kind}-{self.name}"


# ---------------------------------------------------------------------------
# Records and files
# ---------------------------------------------------------------------------

TOPICS = ("cat", "dog", "food", "movie", "book", "weather", "friend", "house")
GOOD = {
    "prompts": lambda t: {"prompt": f"tell me about the {t}"},
    "demonstrations": lambda t: {"prompt": f"tell me about the {t}", "response": "good day"},
    "comparisons": lambda t: {"prompt": f"tell me about the {t}", "chosen": "good great day", "rejected": "bad day"},
    "candidates": lambda t: {"prompt": f"tell me about the {t}", "responses": ["good day", "bad sad day"]},
}
# a record that is valid JSON but of a kind the key does not take
WRONG_KIND = {
    "prompts": {"text": "tell me about the cat"},
    "demonstrations": GOOD["comparisons"]("cat"),
    "comparisons": GOOD["demonstrations"]("cat"),
    "candidates": GOOD["comparisons"]("cat"),
}


def good_records(kind: str) -> list[dict]:
    return [GOOD[kind](topic) for topic in TOPICS]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, records: list[dict], extra_cells: int = 0) -> Path:
    header = list(records[0])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for record in records:
            cells = [json.dumps(v) if isinstance(v, list) else v for v in record.values()]
            writer.writerow(cells + ["extra"] * extra_cells)
    return path


def good_file(ctx: Context, kind: str) -> Path:
    return write_jsonl(ctx.tmp / f"good-{kind}.jsonl", good_records(kind))


def jsonl_text(kind: str) -> str:
    return "".join(json.dumps(r) + "\n" for r in good_records(kind))


# ---------------------------------------------------------------------------
# Damaged data files: name -> (kind of damage, writer(ctx, record kind) -> (path, culprit))
# ---------------------------------------------------------------------------


def _file(ctx: Context, name: str, data: bytes) -> Path:
    path = ctx.tmp / name
    path.write_bytes(data)
    return path


def _at(path: Path, line: int | None = None) -> tuple[Path, str]:
    return path, f"{path}:{line}" if line else str(path)


def _parquet(ctx: Context, kind: str, cut: float | None) -> tuple[Path, str]:
    path = ctx.tmp / "data.parquet"
    pq.write_table(pa.Table.from_pylist(good_records(kind)), path)
    if cut is not None:
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * cut)])
    return _at(path)


def _wrong_type(kind: str) -> dict:
    record = GOOD[kind]("cat")
    return {**record, "prompt": 5}


DATA_DAMAGE: dict[str, tuple[str, Callable[[Context, str], tuple[Path, str]]]] = {
    "missing-file": ("paths", lambda c, k: _at(c.tmp / "absent.jsonl")),
    "hub-dataset-offline": ("paths", lambda c, k: ("someorg/no-such-dataset", "someorg/no-such-dataset")),
    "directory": ("paths", lambda c, k: (_mkdir(c.tmp / "folder.jsonl"), "folder.jsonl")),
    "unsupported-suffix": ("paths", lambda c, k: _at(_file(c, "data.txt", jsonl_text(k).encode()))),
    "empty-file": ("corrupt", lambda c, k: _at(_file(c, "empty.jsonl", b""))),
    "blank-lines-only": ("corrupt", lambda c, k: _at(_file(c, "blank.jsonl", b"\n  \n\t\n"))),
    "non-utf8-jsonl": (
        "encoding",
        lambda c, k: _at(_file(c, "d.jsonl", jsonl_text(k).encode() + b'{"x": "caf\xe9"}\n'), 9),
    ),
    "non-utf8-json": ("encoding", lambda c, k: _at(_file(c, "d.json", b'[\n{"prompt": "caf\xe9"}\n]'), 2)),
    "non-utf8-csv": ("encoding", lambda c, k: _at(_file(c, "d.csv", b"prompt\ngood day\ncaf\xe9\n"), 3)),
    "utf16-jsonl": ("encoding", lambda c, k: _at(_file(c, "d16.jsonl", jsonl_text(k).encode("utf-16")), 1)),
    "latin1-jsonl": (
        "encoding",
        lambda c, k: _at(_file(c, "l1.jsonl", '{"prompt": "déjà vu"}\n'.encode("latin-1")), 1),
    ),
    "truncated-jsonl": ("corrupt", lambda c, k: _at(_file(c, "t.jsonl", jsonl_text(k).encode()[:-25]), 8)),
    "truncated-json": ("corrupt", lambda c, k: _at(_file(c, "t.json", json.dumps(good_records(k)).encode()[:-30]))),
    "truncated-parquet": ("corrupt", lambda c, k: _parquet(c, k, cut=0.6)),
    "garbage-parquet": ("corrupt", lambda c, k: _at(_file(c, "g.parquet", b"this is not parquet at all\n" * 10))),
    "malformed-json-line": ("corrupt", lambda c, k: _at(_file(c, "m.jsonl", b'{"prompt": "a",}\n'), 1)),
    "json-object-not-list": ("types", lambda c, k: _at(_file(c, "o.json", json.dumps(GOOD[k]("cat")).encode()))),
    "wrong-record-kind": ("types", lambda c, k: _at(write_jsonl(c.tmp / "w.jsonl", [WRONG_KIND[k]]), 1)),
    "wrong-field-type": ("types", lambda c, k: _at(write_jsonl(c.tmp / "n.jsonl", [_wrong_type(k)]), 1)),
    "null-field": ("types", lambda c, k: _at(write_jsonl(c.tmp / "z.jsonl", [{**GOOD[k]("cat"), "prompt": None}]), 1)),
    "empty-field": ("types", lambda c, k: _at(write_jsonl(c.tmp / "e.jsonl", [{**GOOD[k]("cat"), "prompt": " "}]), 1)),
    "record-not-object": ("types", lambda c, k: _at(write_jsonl(c.tmp / "l.jsonl", [["tell", "me"]]), 1)),
    "parquet-wrong-type": ("types", lambda c, k: _at(_parquet_ints(c, k), 1)),
    "csv-missing-column": ("types", lambda c, k: _at(_file(c, "c.csv", b"question\nwhat is it\n"), 2)),
    "csv-extra-cells": ("corrupt", lambda c, k: _at(write_csv(c.tmp / "x.csv", good_records(k), extra_cells=1), 2)),
    "deep-nesting": ("hostile", lambda c, k: _at(_file(c, "deep.jsonl", b"[" * 200_000 + b"\n"), 1)),
    "huge-line": ("hostile", lambda c, k: _at(_file(c, "huge.jsonl", b'{"prompt": "' + b"a" * 4_000_000 + b"\n"), 1)),
    "csv-huge-cell": ("hostile", lambda c, k: _at(_file(c, "h.csv", b'prompt\n"' + b"a" * 300_000 + b'"\n'))),
    "unpaired-surrogate": ("hostile", lambda c, k: _at(_surrogate(c, k), 1)),
}
# the keys a command reads besides its main data file get this subset
SECONDARY_DAMAGE = ("missing-file", "non-utf8-jsonl", "truncated-jsonl", "wrong-record-kind", "garbage-parquet")


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _parquet_ints(ctx: Context, kind: str) -> Path:
    path = ctx.tmp / "ints.parquet"
    pq.write_table(pa.Table.from_pylist([{**GOOD[kind](t), "prompt": i} for i, t in enumerate(TOPICS)]), path)
    return path


def _surrogate(ctx: Context, kind: str) -> Path:
    """JSON may spell half a UTF-16 pair (\\ud800), which is not text: tokenizers refuse it."""
    path = ctx.tmp / "s.jsonl"
    path.write_text(json.dumps(GOOD[kind]("cat")).replace("tell me", "tell \\ud800 me") + "\n", encoding="utf-8")
    return path


def data_case(command: str, key: str, record_kind: str, damage: str) -> Case:
    kind, write = DATA_DAMAGE[damage]

    def build(ctx: Context) -> tuple[list[str], str]:
        path, culprit = write(ctx, record_kind)
        return ["--set", f"{key}={path}"], culprit

    return Case(command, kind, f"{key}-{damage}", build)


# ---------------------------------------------------------------------------
# Models that cannot load
# ---------------------------------------------------------------------------


def _model_copy(ctx: Context, damage: Callable[[Path], None]) -> str:
    path = ctx.tmp / "model"
    shutil.copytree(ctx.tiny, path)
    damage(path)
    return str(path)


def _truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


MODEL_DAMAGE: dict[str, Callable[[Context], str]] = {
    "missing-directory": lambda c: str(c.tmp / "no-model"),
    "directory-without-config": lambda c: str(_mkdir(c.tmp / "empty-model")),
    "truncated-weights": lambda c: _model_copy(c, lambda p: _truncate(p / "model.safetensors")),
    "bad-config-json": lambda c: _model_copy(c, lambda p: (p / "config.json").write_text("{not json")),
    "truncated-tokenizer": lambda c: _model_copy(c, lambda p: _truncate(p / "tokenizer.json")),
    "file-not-model": lambda c: str(_file(c, "model.bin", b"\x00" * 64)),
    "hub-id-offline": lambda c: "someorg/no-such-model",
    "corrupt-gguf": lambda c: str(_file(c, "model.gguf", b"GGUF\x03\x00\x00\x00" + b"\x00" * 7)),
}


def model_case(command: str, key: str, damage: str, extra: tuple[str, ...] = ()) -> Case:
    def build(ctx: Context) -> tuple[list[str], str]:
        name = MODEL_DAMAGE[damage](ctx)
        return ["--set", f"{key}={name}", *extra], name

    return Case(command, "model", damage, build)


# ---------------------------------------------------------------------------
# Configuration, options and output paths
# ---------------------------------------------------------------------------


def _config(ctx: Context, data: bytes) -> tuple[list[str], str]:
    path = _file(ctx, "config.yaml", data)
    return ["--config", str(path)], str(path)


def config_cases(command: str, section: str) -> list[Case]:
    """Bad configuration files and --set values; `section` is one of the command's config sections."""
    cases = {
        "config-missing": lambda c: (["--config", str(c.tmp / "none.yaml")], "none.yaml"),
        "config-directory": lambda c: (["--config", str(_mkdir(c.tmp / "conf.yaml"))], "conf.yaml"),
        "config-non-utf8": lambda c: _with_line(_config(c, b"seed: 1\nout: caf\xe9\n"), 2),
        "config-utf16": lambda c: _with_line(_config(c, "seed: 1\n".encode("utf-16")), 1),
        "config-invalid-yaml": lambda c: _config(c, b"seed: [1, 2\nout: x\n"),
        "config-tab-indent": lambda c: _config(c, f"{section}:\n\tkey: 1\n".encode()),
        "config-nul-character": lambda c: _config(c, b"seed: 1\x00\n"),
        "config-deep-nesting": lambda c: _config(c, b"[" * 50_000),
        "config-top-level-list": lambda c: _config(c, b"- seed\n- 1\n"),
        "config-unknown-key": lambda c: (_config(c, b"no_such_key: 1\n")[0], "no_such_key"),
        "config-wrong-type": lambda c: (_config(c, b"seed: many\n")[0], "seed"),
        "config-scalar-section": lambda c: (_config(c, f"{section}: 5\n".encode())[0], section),
        "config-scalar-section-and-set": lambda c: (
            [*_config(c, f"{section}: 5\n".encode())[0], "--set", f"{section}.anything=1"],
            section,
        ),
        "set-without-equals": lambda c: (["--set", "seed"], "seed"),
        "set-unknown-key": lambda c: (["--set", f"{section}.no_such_key=1"], f"{section}.no_such_key"),
        "set-negative-seed": lambda c: (["--set", "seed=-1"], "seed"),
        "set-seed-too-large": lambda c: (["--set", f"seed={2**70}"], "seed"),
        "unknown-option": lambda c: (["--no-such-option"], "--no-such-option"),
    }
    return [Case(command, "config", name, build) for name, build in cases.items()]


def _with_line(built: tuple[list[str], str], line: int) -> tuple[list[str], str]:
    argv, culprit = built
    return argv, f"{culprit}:{line}"


def _fake_run(ctx: Context, finished_file: str) -> Path:
    """An earlier run in --out: a checkpoint, or the file a finished one-shot command leaves."""
    path = ctx.tmp / "earlier"
    target = path / finished_file
    target.parent.mkdir(parents=True)
    target.write_bytes(b"earlier")
    return path


def output_cases(command: str, finished_file: str, resumable: bool) -> list[Case]:
    cases: dict[str, Build] = {
        "out-is-a-file": lambda c: (["--out", str(_file(c, "taken", b"keep me"))], "taken"),
        "out-under-a-file": lambda c: (["--out", str(_file(c, "plain", b"keep me") / "run")], "plain"),
        "out-holds-an-earlier-run": lambda c: (["--out", str(_fake_run(c, finished_file))], "earlier"),
        "out-read-only-parent": lambda c: (["--out", str(_read_only(c) / "run")], str(_read_only(c))),
        "out-read-only-directory": lambda c: (["--out", str(_read_only(c))], str(_read_only(c))),
    }
    if resumable:
        cases["resume-without-a-run"] = lambda c: (["--resume", "--out", str(_mkdir(c.tmp / "fresh"))], "fresh")
    return [Case(command, "output", name, build) for name, build in cases.items()]


def _read_only(ctx: Context) -> Path:
    if ctx.read_only is None:
        raise LookupError("no read-only directory on this system")
    return ctx.read_only


# ---------------------------------------------------------------------------
# User code and the constitution file
# ---------------------------------------------------------------------------

_modules = itertools.count()


def _user_module(ctx: Context, source: str) -> str:
    """A module in ctx.tmp (which the test puts on sys.path), under a name never imported before."""
    name = f"user_judge_{next(_modules)}"
    (ctx.tmp / f"{name}.py").write_text(source)
    return name


def user_code_cases(command: str) -> list[Case]:
    """reward.kind=function with a function that cannot be imported, or that raises on its first call."""
    raises = "def score(prompts, responses, records):\n    raise RuntimeError('the judge is down')\n"
    cases: dict[str, Build] = {
        "module-missing": lambda c: ("no_such_module_xyz:score", "no_such_module_xyz"),
        "function-missing": lambda c: ("json:no_such_function", "no_such_function"),
        "not-callable": lambda c: ("json:__name__", "json:__name__"),
        "syntax-error": lambda c: ((name := _user_module(c, "def score(:\n")) + ":score", name),
        "raises": lambda c: (_user_module(c, raises) + ":score", "the judge is down"),
    }

    def case(name: str, target: Build) -> Case:
        def build(ctx: Context) -> tuple[list[str], str]:
            function, culprit = target(ctx)
            return ["--set", "reward.kind=function", f"reward.function={function}"], culprit

        return Case(command, "user-code", name, build)

    return [case(name, target) for name, target in cases.items()]


def constitution_cases() -> list[Case]:
    files: dict[str, Callable[[Context], Path]] = {
        "missing": lambda c: c.tmp / "none.yaml",
        "directory": lambda c: _mkdir(c.tmp / "principles.yaml"),
        "non-utf8": lambda c: _file(c, "p.yaml", b"principles:\n  - name: caf\xe9\n"),
        "invalid-yaml": lambda c: _file(c, "p.yaml", b"principles: [\n"),
        "not-a-mapping": lambda c: _file(c, "p.yaml", b"- just\n- a list\n"),
        "principle-without-fields": lambda c: _file(c, "p.yaml", b"principles:\n  - name: only\n"),
    }

    def case(name: str, write: Callable[[Context], Path]) -> Case:
        def build(ctx: Context) -> tuple[list[str], str]:
            path = write(ctx)
            return ["--set", f"critique.constitution={path}"], path.name

        return Case("constitution", "config", f"constitution-{name}", build)

    return [case(name, write) for name, write in files.items()]


# ---------------------------------------------------------------------------
# rlhfkit loop: its labellers, the monitor, and settings that only the loop has
# ---------------------------------------------------------------------------


def _closed_port() -> int:
    """A local port nothing listens on (bound for a moment, then closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loop_cases() -> list[Case]:
    """The labelling server unreachable, misnamed or without a token, and the loop's own settings out of range."""
    cases: dict[str, Build] = {
        "server-unreachable": lambda c: (
            ["--server", (url := f"http://127.0.0.1:{_closed_port()}"), "--token", "t"],
            f"cannot reach the labelling server at {url}",
        ),
        "server-not-a-url": lambda c: (["--server", "not-a-url", "--token", "t"], "not-a-url"),
        "server-without-token": lambda c: (["--server", "http://127.0.0.1:1"], "--token"),
        "server-and-ai-judge": lambda c: (["--judge", "ai", "--server", "http://127.0.0.1:1"], "--judge ai"),
        "source-server-without-url": lambda c: (["--set", "labels.source=server"], "labels.source=server"),
        "selection-unknown": lambda c: (["--set", "loop.selection=best"], "loop.selection"),
        "zero-rounds": lambda c: (["--set", "loop.rounds=0"], "loop.rounds"),
        "candidates-below-labels": lambda c: (["--set", "loop.candidates_per_round=1"], "loop.candidates_per_round"),
        "negative-noise": lambda c: (["--set", "labels.noise=-1"], "labels.noise"),
        "verifiable-judge": lambda c: (["--set", "judge.kind=verifiable"], "judge.kind=verifiable"),
        "rouge-judge-without-references": lambda c: (["--set", "judge.kind=rouge"], "reference"),
        "monitor-gold-unknown": lambda c: (["--set", "monitor.gold=oracle"], "monitor.gold"),
        "monitor-patience-zero": lambda c: (["--set", "monitor.patience=0"], "monitor.patience"),
        "rm-pooling-unknown": lambda c: (["--set", "rm.pooling=middle"], "rm.pooling"),
    }
    return [Case("loop", "config", name, build) for name, build in cases.items()]
