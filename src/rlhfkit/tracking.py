"""What a run shows: metrics.jsonl, samples.jsonl, experiment trackers, a progress bar, plots.

One `Tracker` per run. Lines are flushed as they are written, so a run that
dies leaves whole lines behind, never a half-written one. On resume the
tracker drops records at or after the resumed step, so the files read as
one uninterrupted run.

Beside the JSONL files the run reports to Accelerate's trackers (TensorBoard by default; W&B,
Trackio, MLflow with `--report-to`, see `rlhfkit.report_to`): every metric as a scalar, the
samples of each logged step as a table, and the resolved configuration as hyperparameters with
dotted keys (`train.steps`), so runs compare side by side in the tool the user already has.

The progress bar counts steps; a trainer whose step takes minutes (a PPO iteration) names its
phases with `phase("generate", 1, 3)` so the bar says what it is doing and its ETA moves inside
the step, each phase weighted by the time it took in the previous step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker
from tqdm.auto import tqdm

from rlhfkit.report_to import parse_report_to, requested_trackers

PROJECT = "rlhfkit"  # the W&B and Trackio project, the MLflow experiment
SAMPLE_COLUMNS = ["step", "prompt", "response", "score"]
SHOWN_METRICS = ("reward/score_mean", "kl/mean", "loss", "train/loss", "charts/episodic_return")
# the step count lives in the description, so that a bar inside a step (fractional n) still reads "3/20"
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_clock = time.monotonic
_open_trackers: list[Tracker] = []  # the tracker of the run under way, for `phase`


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _truncate_jsonl(path: Path, keep_before_step: int) -> None:
    """Keep the records before `keep_before_step`, rewritten atomically.

    A run killed in the middle of a write can leave a partial last line: it is dropped, never parsed.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) < keep_before_step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def flatten_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str | None]:
    """{"train": {"steps": 3}} -> {"train.steps": 3}: trackers take flat scalars; lists become JSON text."""
    flat: dict[str, bool | int | float | str | None] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, name + "."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value, ensure_ascii=False, default=str)
        else:
            flat[name] = str(value)
    return flat


def markdown_table(rows: Sequence[Sequence[Any]], columns: Sequence[str] = SAMPLE_COLUMNS) -> str:
    """A GitHub-flavoured markdown table (what TensorBoard's text tab renders); cells on one line each."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


# --- Accelerate's trackers: how each is opened and how it shows samples -------------------------------------------


def _open_tensorboard(out: Path, start_step: int) -> GeneralTracker:
    """Events in out/tensorboard; a resumed run purges the events after its checkpoint, as the JSONL files are cut."""
    return TensorBoardTracker("tensorboard", out, purge_step=start_step + 1 if start_step else None)


def _open_wandb(out: Path, start_step: int) -> GeneralTracker:
    """Offline with WANDB_MODE=offline (files under out/wandb, `wandb sync` uploads them later)."""
    return WandBTracker(PROJECT, name=out.name, dir=str(out))


def _open_trackio(out: Path, start_step: int) -> GeneralTracker:
    """Trackio keeps its runs locally (a dashboard with `trackio show`) unless told of a Space."""
    return TrackioTracker(PROJECT, name=out.name)


def _open_mlflow(out: Path, start_step: int) -> GeneralTracker:
    """Into MLFLOW_TRACKING_URI (MLflow's local store when unset)."""
    return MLflowTracker(experiment_name=PROJECT, run_name=out.name)


def _samples_as_text(tracker: GeneralTracker, step: int, rows: list[list[Any]]) -> None:
    tracker.log({"samples": markdown_table(rows)}, step=step)  # a str value is TensorBoard's add_text


def _samples_as_wandb_table(tracker: GeneralTracker, step: int, rows: list[list[Any]]) -> None:
    tracker.log_table("samples", columns=SAMPLE_COLUMNS, data=rows, step=step)


def _samples_as_trackio_table(tracker: GeneralTracker, step: int, rows: list[list[Any]]) -> None:
    import trackio  # noqa: PLC0415 (optional dependency, present when --report-to names it)

    tracker.log({"samples": trackio.Table(columns=SAMPLE_COLUMNS, data=rows)}, step=step)


def _samples_as_mlflow_text(tracker: GeneralTracker, step: int, rows: list[list[Any]]) -> None:
    import mlflow  # noqa: PLC0415 (optional dependency, present when --report-to names it)

    mlflow.log_text(markdown_table(rows), f"samples/step-{step:06d}.md")


SampleWriter = Callable[[GeneralTracker, int, list[list[Any]]], None]
TRACKERS: dict[str, tuple[Callable[[Path, int], GeneralTracker], SampleWriter]] = {
    "tensorboard": (_open_tensorboard, _samples_as_text),
    "wandb": (_open_wandb, _samples_as_wandb_table),
    "trackio": (_open_trackio, _samples_as_trackio_table),
    "mlflow": (_open_mlflow, _samples_as_mlflow_text),
}


class StepProgress:
    """The progress bar: whole steps, and inside a step the phase under way.

    A phase's share of a step is the share of time it took in the previous step (equal shares in
    the first), so the bar and its ETA move while a long step runs instead of sitting at 0/N.
    """

    def __init__(self, total_steps: int, start_step: int, description: str):
        self.description, self.total, self.done = description, total_steps, start_step
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc=self._title(),
            dynamic_ncols=True,
            unit="step",
            smoothing=0,  # the ETA from the run's average pace: phases differ too much for a moving average
            bar_format=BAR_FORMAT,
        )
        self.previous_durations: list[float] = []  # seconds of each phase of the last step that had phases
        self.durations: list[float] = []  # this step's finished phases
        self.phase_started: float | None = None

    def _title(self, phase: str = "") -> str:
        return f"{self.description} {self.done}/{self.total}" + (f" · {phase}" if phase else "")

    def _finish_phase(self) -> None:
        if self.phase_started is not None:
            self.durations.append(_clock() - self.phase_started)
            self.phase_started = None

    def share_before(self, index: int, count: int) -> float:
        """The fraction of a step done when phase `index` (1-based) of `count` starts."""
        last = self.previous_durations
        if len(last) == count and sum(last) > 0:
            return sum(last[: index - 1]) / sum(last)
        return (index - 1) / count

    def phase(self, name: str, index: int, count: int) -> None:
        self._finish_phase()
        self.phase_started = _clock()
        self.bar.update(self.done + self.share_before(index, count) - self.bar.n)
        self.bar.set_description_str(self._title(f"{name} ({index}/{count})"))

    def step_done(self, step: int, shown: Mapping[str, float]) -> None:
        self._finish_phase()
        if self.durations:
            self.previous_durations, self.durations = self.durations, []
        self.done = step
        self.bar.update(step - self.bar.n)
        self.bar.set_description_str(self._title(), refresh=not shown)
        if shown:
            self.bar.set_postfix({key: f"{value:.3g}" for key, value in shown.items()})

    def close(self) -> None:
        self.bar.close()


def phase(name: str, index: int, count: int) -> None:
    """Tell the run's progress bar that phase `index` of `count` of the current step starts (no run: nothing).

    A trainer calls it at the start of each phase, e.g. PPO: generate 1/3, score 2/3, update 3/3.
    """
    if _open_trackers:
        _open_trackers[-1].progress.phase(name, index, count)


class Tracker:
    """Writes the run's metrics and samples; `start_step` > 0 means a resumed run.

    `report_to` names Accelerate's trackers (None: RLHFKIT_REPORT_TO, else TensorBoard);
    `hyperparameters` is the resolved configuration, reported once with flattened keys.
    """

    def __init__(
        self,
        out_dir: str | Path,
        total_steps: int,
        description: str,
        start_step: int = 0,
        report_to: Sequence[str] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
    ):
        names = requested_trackers() if report_to is None else parse_report_to(",".join(report_to) or "none")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.samples_path = self.out_dir / "samples.jsonl"
        if start_step > 0:
            _truncate_jsonl(self.metrics_path, start_step + 1)
            _truncate_jsonl(self.samples_path, start_step + 1)
        else:
            for path in (self.metrics_path, self.samples_path):
                path.unlink(missing_ok=True)
        self._metrics = self.metrics_path.open("a")
        self._samples = self.samples_path.open("a")
        self.trackers: list[tuple[GeneralTracker, SampleWriter]] = []
        if names:
            PartialState()  # Accelerate's trackers log through its process state (a Runtime has started it already)
        for name in names:
            open_tracker, write_samples = TRACKERS[name]
            tracker = open_tracker(self.out_dir, start_step)
            tracker.start()
            self.trackers.append((tracker, write_samples))
            if hyperparameters:
                tracker.store_init_configuration(flatten_config(hyperparameters))
        self.progress = StepProgress(total_steps, start_step, description)
        self.started = time.time()
        _open_trackers.append(self)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{key: _jsonable(value) for key, value in metrics.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        for tracker, _ in self.trackers:
            tracker.log(scalars, step=step)
        self.progress.step_done(step, {key: scalars[key] for key in SHOWN_METRICS if key in scalars})

    def log_samples(self, step: int, prompts: Sequence[str], responses: Sequence[str], scores: Iterable[float]) -> None:
        rows = [
            [step, prompt, response, _jsonable(float(score))]
            for prompt, response, score in zip(prompts, responses, scores)
        ]
        for row in rows:
            record = dict(zip(SAMPLE_COLUMNS, row))
            self._samples.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._samples.flush()
        for tracker, write_samples in self.trackers:
            write_samples(tracker, step, rows)

    def close(self) -> None:
        if self in _open_trackers:
            _open_trackers.remove(self)
        self.progress.close()
        self._metrics.close()
        self._samples.close()
        for tracker, _ in self.trackers:
            tracker.finish()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write beside the target, then rename over it: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5.5, 3.6), squeeze: bool = True):
    """(figure, axes) on matplotlib's object API: no pyplot, so no GUI backend and no global figure state."""
    from matplotlib.figure import Figure  # noqa: PLC0415 (lazy: ~26 MB of memory that only a plot needs)

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols, squeeze=squeeze)


def plot_metrics(metrics_path: str | Path, keys: Sequence[str], out_png: str | Path, title: str = "") -> Path:
    """One panel per metric key against step; keys missing from the file are skipped."""

    records = read_jsonl(metrics_path)
    keys = [k for k in keys if any(r.get(k) is not None for r in records)]
    fig, axes = new_figure(1, max(len(keys), 1), figsize=(4.2 * max(len(keys), 1), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=100)
    return out_png
