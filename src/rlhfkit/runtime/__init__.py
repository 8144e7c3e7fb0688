"""Where and how a run computes (`Runtime`), and the run skeleton every trainer fills in (`fit`)."""

from rlhfkit.runtime.core import Runtime, check_micro_batches
from rlhfkit.runtime.run import RunDirectory, Samples, StepOutput, Trainer, due, fit, run_config

__all__ = [
    "RunDirectory",
    "Runtime",
    "check_micro_batches",
    "Samples",
    "StepOutput",
    "Trainer",
    "due",
    "fit",
    "run_config",
]
