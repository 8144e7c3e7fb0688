"""What a run shows: metrics.jsonl, samples.jsonl, TensorBoard events, a progress bar, plots.

One `Tracker` per run. Lines are flushed as they are written, so a run that
dies leaves whole lines behind, never a half-written one. On resume the
tracker drops records at or after the resumed step, so the files read as
one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _truncate_jsonl(path: Path, keep_before_step: int) -> None:
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) < keep_before_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


class Tracker:
    """Writes the run's metrics and samples; `start_step` > 0 means a resumed run."""

    def __init__(
        self, out_dir: str | Path, total_steps: int, description: str, start_step: int = 0, tensorboard: bool = True
    ):
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
        self._writer = None
        if tensorboard:
            self._writer = SummaryWriter(
                log_dir=str(self.out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None
            )
        self.progress = tqdm(total=total_steps, initial=start_step, desc=description, dynamic_ncols=True, unit="step")
        self.started = time.time()

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {"step": step, **{key: _jsonable(value) for key, value in metrics.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, step)
        self.progress.update(step - self.progress.n)
        shown = {
            k.split("/")[-1]: record[k]
            for k in ("reward/score_mean", "kl/mean", "loss", "train/loss", "charts/episodic_return")
            if k in record
        }
        if shown:
            self.progress.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if isinstance(v, (int, float))})

    def log_samples(self, step: int, prompts: Sequence[str], responses: Sequence[str], scores: Iterable[float]) -> None:
        for prompt, response, score in zip(prompts, responses, scores):
            record = {"step": step, "prompt": prompt, "response": response, "score": _jsonable(float(score))}
            self._samples.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._samples.flush()

    def close(self) -> None:
        self.progress.close()
        self._metrics.close()
        self._samples.close()
        if self._writer is not None:
            self._writer.close()


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
