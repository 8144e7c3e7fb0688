"""Tracking: Accelerate's trackers (scalars, samples tables, hyperparameters), --report-to, the progress bar."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from rlhfkit import tracking
from rlhfkit.cli import main
from rlhfkit.errors import UserError
from rlhfkit.report_to import REPORT_TO_ENV, parse_report_to
from rlhfkit.runtime import Runtime
from rlhfkit.runtime.run import RunDirectory, Samples, fit
from rlhfkit.tracking import Tracker, flatten_config, markdown_table, read_jsonl

OPTIONAL_TRACKERS = ["wandb", "trackio", "mlflow"]


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


# ---------------------------------------------------------------------------------------------------------------------
# pure helpers
# ---------------------------------------------------------------------------------------------------------------------


def test_config_is_flattened_to_dotted_scalar_keys():
    config = {"seed": 3, "out": "", "train": {"steps": 2, "lr": 1e-5, "stop": ["\n", "END"]}, "model": {"lora": None}}
    assert flatten_config(config) == {
        "seed": 3,
        "out": "",
        "train.steps": 2,
        "train.lr": 1e-5,
        "train.stop": '["\\n", "END"]',
        "model.lora": None,
    }


def test_samples_table_is_markdown_with_cells_kept_on_one_line():
    table = markdown_table([[1, "a | b", "line one\nline two", 0.123456], [1, "p", "r", None]])
    assert table == (
        "| step | prompt | response | score |\n"
        "|---|---|---|---|\n"
        "| 1 | a \\| b | line one<br>line two | 0.1235 |\n"
        "| 1 | p | r |  |"
    )


def test_report_to_names_known_trackers_and_none():
    assert parse_report_to("tensorboard") == ("tensorboard",)
    assert parse_report_to(" TensorBoard , tensorboard") == ("tensorboard",)
    assert parse_report_to("none") == ()
    with pytest.raises(UserError, match=r"unknown tracker tensorbord; choose from tensorboard, wandb, trackio, mlflow"):
        parse_report_to("tensorbord")


@pytest.mark.parametrize("name", [name for name in OPTIONAL_TRACKERS if not installed(name)])
def test_a_missing_tracker_package_is_one_line_naming_how_to_install_it(name):
    with pytest.raises(UserError) as raised:
        parse_report_to(f"tensorboard,{name}")
    assert str(raised.value) == (
        f"--report-to tensorboard,{name}: {name} is not installed (pip install {name}), or leave it out of --report-to"
    )


# ---------------------------------------------------------------------------------------------------------------------
# TensorBoard through the run skeleton
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ToyConfig:
    steps: int = 3
    train: dict = dataclasses.field(default_factory=lambda: {"lr": 0.5, "batch_size": 2})


class ToyTrainer:
    """One scalar parameter walked towards 0; each step has the three phases of a PPO iteration."""

    command = "toy"
    eval_every = 0
    checkpoint_every = 0
    plot_keys = ("kl/mean",)

    def __init__(self):
        self.config = ToyConfig()
        self.runtime = Runtime()
        self.step, self.total_steps = 0, self.config.steps
        self.weight = torch.tensor(4.0)
        self.titles: list[str] = []

    def train_step(self):
        for index, name in enumerate(("generate", "score", "update"), start=1):
            tracking.phase(name, index, 3)
            self.titles.append(tracking._open_trackers[-1].progress.bar.desc)
        self.weight = self.weight * self.config.train["lr"]
        self.step += 1
        samples = Samples([f"prompt {self.step}"], [f"answer | {self.step}"], [float(self.weight)])
        return {"kl/mean": float(self.weight), "policy/loss": 1.0}, samples

    def evaluate(self):
        return {"eval/weight": float(self.weight)}, None

    def checkpoint_state(self):
        return {"toy": {"weight": self.weight}}, {}

    def load_checkpoint_state(self, tensors, state):
        self.weight = tensors["toy"]["weight"]

    def save_final(self, directory: Path):
        (directory / "weight.json").write_text(json.dumps(float(self.weight)))

    def summary(self, out, history):
        return {}


def read_events(directory: Path) -> EventAccumulator:
    events = EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    return events


def logged_hyperparameters(tensorboard_dir: Path) -> dict:
    """The hparams session of the run (Accelerate writes it into a sub-run of the TensorBoard directory)."""
    for sub_run in sorted(path for path in tensorboard_dir.iterdir() if path.is_dir()):
        content = read_events(sub_run).PluginTagToContent("hparams")
        if "_hparams_/session_start_info" in content:
            data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
            return {
                key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                for key, value in data.session_start_info.hparams.items()
            }
    return {}


def test_tensorboard_holds_scalars_a_samples_table_per_step_and_the_config(tmp_path, monkeypatch):
    monkeypatch.delenv(REPORT_TO_ENV, raising=False)
    trainer = ToyTrainer()
    fit(trainer, RunDirectory.resolve(str(tmp_path / "run"), "toy", resume=False))

    events = read_events(tmp_path / "run" / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("kl/mean")] == [(1, 2.0), (2, 1.0), (3, 0.5)]
    assert [e.step for e in events.Scalars("eval/weight")] == [0, 3]
    texts = {
        e.step: tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in events.Tensors("samples/text_summary")
    }
    assert texts[2] == "| step | prompt | response | score |\n|---|---|---|---|\n| 2 | prompt 2 | answer \\| 2 | 1 |"
    assert sorted(texts) == [1, 2, 3]
    assert logged_hyperparameters(tmp_path / "run" / "tensorboard") == {
        "steps": 3.0,
        "train.lr": 0.5,
        "train.batch_size": 2.0,
    }
    # the JSON Lines files are as they were
    assert [r["response"] for r in read_jsonl(tmp_path / "run" / "samples.jsonl")] == [
        "answer | 1",
        "answer | 2",
        "answer | 3",
    ]


def test_rlhfkit_sft_reports_its_config_and_answers_to_tensorboard(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(REPORT_TO_ENV, "")  # restored after the test: main() sets it from --report-to
    demonstrations = tmp_path / "demos.jsonl"
    demonstrations.write_text("".join(json.dumps({"prompt": f"say {w}", "response": w}) + "\n" for w in "abcdefgh"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "say a"}) + "\n")
    out = tmp_path / "run"
    argv = ["sft", "--report-to", "tensorboard", "--set", f"model.name={tiny_model_dir}", "model.dtype=float32"]
    argv += [f"data.train={demonstrations}", f"data.prompts={prompts}", "train.steps=2", "train.batch_size=2"]
    argv += ["train.eval_samples=1", "generation.max_new_tokens=3", f"out={out}"]
    assert main(argv) == 0

    hyperparameters = logged_hyperparameters(out / "tensorboard")
    assert (hyperparameters["model.name"], hyperparameters["train.steps"]) == (tiny_model_dir, 2.0)
    events = read_events(out / "tensorboard")
    tables = {
        e.step: tensor_util.make_ndarray(e.tensor_proto).item().decode() for e in events.Tensors("samples/text_summary")
    }
    (answer,) = [r for r in read_jsonl(out / "samples.jsonl") if r["step"] == 2]
    assert sorted(tables) == [0, 2]
    shown = answer["response"].replace("|", "\\|").replace("\n", "<br>")
    assert tables[2].splitlines()[2] == f"| 2 | say a | {shown} |  |"


def test_report_to_none_writes_only_the_json_lines(tmp_path, monkeypatch):
    monkeypatch.setenv(REPORT_TO_ENV, "none")
    fit(ToyTrainer(), RunDirectory.resolve(str(tmp_path / "run"), "toy", resume=False))
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------------------------------
# the progress bar
# ---------------------------------------------------------------------------------------------------------------------


def test_the_postfix_names_metrics_by_their_full_key(tmp_path):
    tracker = Tracker(tmp_path, 4, "rlhfkit toy", report_to=[])
    tracker.log(1, {"kl/mean": 0.25, "reward/score_mean": 1.5, "policy/loss": 9.0})
    assert tracker.progress.bar.postfix == "reward/score_mean=1.5, kl/mean=0.25"
    tracker.close()


def test_phases_move_the_bar_inside_a_step_by_the_time_each_took_before(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(tracking, "_clock", lambda: now[0])
    tracker = Tracker(tmp_path, 10, "rlhfkit ppo", report_to=[])
    bar = tracker.progress.bar

    def run_phases(seconds):  # one step: each phase starts, then takes its seconds
        positions = []
        for index, (name, duration) in enumerate(zip(("generate", "score", "update"), seconds), start=1):
            tracking.phase(name, index, 3)
            positions.append(bar.n)
            now[0] += duration
        return positions

    assert run_phases([1.0, 2.0, 7.0]) == [0, pytest.approx(1 / 3), pytest.approx(2 / 3)]  # first step: equal shares
    assert bar.desc == "rlhfkit ppo 0/10 · update (3/3)"
    tracker.log(1, {"loss": 1.0})
    assert (bar.n, bar.desc) == (1, "rlhfkit ppo 1/10")
    # the second step: generate took 10% of the first, score 20%
    assert run_phases([1.0, 1.0, 1.0]) == [1, pytest.approx(1.1), pytest.approx(1.3)]
    tracker.log(2, {"loss": 1.0})
    assert run_phases([0.0, 0.0, 0.0]) == [2, pytest.approx(2 + 1 / 3), pytest.approx(2 + 2 / 3)]
    tracker.close()
    tracking.phase("generate", 1, 3)  # no run under way: nothing to tell, no error


def test_a_trainer_reports_its_phases_through_fit(tmp_path, monkeypatch):
    monkeypatch.setenv(REPORT_TO_ENV, "none")
    trainer = ToyTrainer()
    fit(trainer, RunDirectory.resolve(str(tmp_path / "run"), "toy", resume=False))
    assert trainer.titles[:4] == [
        "rlhfkit toy 0/3 · generate (1/3)",
        "rlhfkit toy 0/3 · score (2/3)",
        "rlhfkit toy 0/3 · update (3/3)",
        "rlhfkit toy 1/3 · generate (1/3)",
    ]
    assert tracking._open_trackers == []


# ---------------------------------------------------------------------------------------------------------------------
# optional trackers, offline, where installed
# ---------------------------------------------------------------------------------------------------------------------


def log_two_steps(out: Path, name: str) -> Tracker:
    """Two steps of metrics and samples into the tracker `name`; returned closed."""
    tracker = Tracker(out, 2, "rlhfkit toy", report_to=[name], hyperparameters={"train": {"steps": 2}})
    for step in (1, 2):
        tracker.log(step, {"kl/mean": 0.5 * step})
        tracker.log_samples(step, ["a prompt"], [f"response {step}"], [float(step)])
    tracker.close()
    return tracker


@pytest.mark.skipif(not installed("wandb"), reason="wandb is not installed")
def test_wandb_offline_run_holds_config_and_samples_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    ((wandb_tracker, _),) = log_two_steps(tmp_path, "wandb").trackers
    assert (wandb_tracker.run.offline, wandb_tracker.run.config["train.steps"]) == (True, 2)
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert any(run_dir.glob("run-*.wandb"))  # what `wandb sync` uploads
    tables = sorted((run_dir / "files" / "media" / "table").glob("samples_*.table.json"))
    assert [json.loads(path.read_text())["data"][0][2] for path in tables] == ["response 1", "response 2"]


@pytest.mark.skipif(not installed("mlflow"), reason="mlflow is not installed")
def test_mlflow_local_store_holds_params_metrics_and_samples(tmp_path, monkeypatch):
    import mlflow  # noqa: PLC0415 (optional)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the plain-files store: no database package needed
    log_two_steps(tmp_path / "run", "mlflow")
    (run,) = mlflow.search_runs(experiment_names=["rlhfkit"], output_format="list")
    assert run.data.params == {"train.steps": "2"}
    assert run.data.metrics == {"kl/mean": 1.0}
    text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/samples/step-000002.md")
    assert "| 2 | a prompt | response 2 | 2 |" in text


@pytest.mark.skipif(not installed("trackio"), reason="trackio is not installed")
def test_trackio_local_run_holds_config_metrics_and_samples_table(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is first imported
    log_two_steps(tmp_path / "run", "trackio")
    from trackio.sqlite_storage import SQLiteStorage  # noqa: PLC0415 (optional)

    logs = SQLiteStorage.get_logs("rlhfkit", "run")
    assert [(log["step"], log["kl/mean"]) for log in logs if "kl/mean" in log] == [(1, 0.5), (2, 1.0)]
    tables = [log["samples"]["_value"] for log in logs if "samples" in log]
    assert [rows[0]["response"] for rows in tables] == ["response 1", "response 2"]
    assert SQLiteStorage.get_run_config("rlhfkit", "run")["train.steps"] == 2


def test_a_partial_last_metrics_line_from_a_kill_is_dropped_on_resume(tmp_path):
    from rlhfkit.tracking import _truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    _truncate_jsonl(path, keep_before_step=3)
    assert path.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n'
