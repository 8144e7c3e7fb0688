"""Which experiment trackers a run reports to: `--report-to` on the command line, or RLHFKIT_REPORT_TO.

Checked by the CLI before any model loads, so a tracker whose package is missing costs the user
one line and no wasted minutes. This module imports nothing heavy (the CLI reads it before torch);
the trackers themselves are Accelerate's and are opened by `rlhfkit.tracking.Tracker`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from rlhfkit.errors import UserError

REPORT_TO_ENV = "RLHFKIT_REPORT_TO"
DEFAULT_REPORT_TO = "tensorboard"
NO_TRACKER = "none"  # metrics.jsonl and samples.jsonl only

# tracker name -> the package it needs (pip install <package>)
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}


def parse_report_to(text: str, source: str = "--report-to") -> tuple[str, ...]:
    """The tracker names in a comma-separated list ("none" for no tracker), each one installed.

    `source` names where the list came from (the option or the environment variable) in the error.
    """
    names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    if names == [NO_TRACKER]:
        return ()
    unknown = [name for name in names if name not in TRACKER_PACKAGES]
    if unknown or not names:
        choices = ", ".join([*TRACKER_PACKAGES, NO_TRACKER])
        raise UserError(f"{source} {text!r}: unknown tracker {', '.join(unknown) or '(empty)'}; choose from {choices}")
    missing = [TRACKER_PACKAGES[name] for name in names if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None]
    if missing:
        needs = "; ".join(f"{package} is not installed (pip install {package})" for package in missing)
        raise UserError(f"{source} {text}: {needs}, or leave it out of {source}")
    return tuple(names)


def requested_trackers(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The trackers RLHFKIT_REPORT_TO names (the CLI sets it from --report-to); TensorBoard when unset."""
    return parse_report_to(environ.get(REPORT_TO_ENV, DEFAULT_REPORT_TO), REPORT_TO_ENV)
