"""The one place that knows where and how a run computes: device, precision, processes and RNG.

Every trainer (SFT, RM, DPO, PPO, Gym) gets its models, optimisers, batches and reward tensors
through a `Runtime`. It wraps Hugging Face Accelerate, so the same recipe runs in one CPU
process, on one GPU, and under `accelerate launch` with N processes (DDP over NCCL on GPUs,
gloo on CPUs) without a line of recipe code changing.

What it adds to Accelerate:
- `shard(items)`: this process's rows of a global batch (rank, rank + N, ...), so that every
  process draws the same global batch from the same seed and keeps its share;
- `gather(tensor)` pads (B, T) tensors across processes before gathering (responses differ in
  length per process);
- random streams of its own for each process (seed + process index, as Accelerate's
  `set_seed(device_specific=True)`: the same streams would sample the processes' prompts with the
  same draws), and `rng_states()` / `set_rng_states()`: Python, NumPy, torch CPU and every CUDA
  device of every process, so a resumed run continues each process's streams, on a GPU too;
- `autocast()`: the run's forward-pass precision on the run's device;
- MKL's code path for CPU matrix products, measured on first use (`runtime.kernels`);
- the process group is destroyed when the interpreter exits: a gloo group left to the interpreter's
  own teardown can abort a process that has finished its work (SIGABRT, "terminate called without
  an active exception"), which fails a launch that succeeded.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn

from rlhfkit.checkpoint import rng_state, seed_everything, set_rng_state
from rlhfkit.errors import UserError
from rlhfkit.runtime.kernels import choose_mkl_code_path
from rlhfkit.runtime.precision import autocast, resolve_precision

T = TypeVar("T")


class Runtime:
    """Device, precision, processes and RNG of one run.

    precision: "float32", "bfloat16" (autocast over fp32 weights; log-probs and losses stay fp32), or
    "auto" until `settle_precision` has measured the loaded model (fp32 until then).
    """

    def __init__(self, precision: str = "float32", seed: int | None = None):
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        if self.num_processes > 1:  # our group (vLLM's in-process world of one is vLLM's to destroy)
            atexit.register(self.accelerator.state.destroy_process_group)
        # before any model loads: MKL reads its code path at the first product. One process measures it.
        if self.is_main:
            choose_mkl_code_path()
        self.wait()
        choose_mkl_code_path()
        self.precision = precision
        if seed is not None:
            seed_everything(seed + self.process_index)

    # -- where --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def process_index(self) -> int:
        return self.accelerator.process_index

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files (metrics, checkpoints, final/, summary)."""
        return self.accelerator.is_main_process

    def settle_precision(self, model_config: Any, model: nn.Module) -> str:
        """Resolve `model.dtype=auto` on the loaded model (measured or cached) and record it in the config.

        Called once by each trainer right after its model loads, so config.yaml and every forward
        pass use the resolved value.
        """
        self.precision = resolve_precision(model_config.dtype, model, self.device)
        model_config.dtype = self.precision
        return self.precision

    def describe(self) -> dict[str, Any]:
        """What summary.json records of the runtime."""
        return {"device": str(self.device), "num_processes": self.num_processes, "precision": self.precision}

    # -- how ------------------------------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward-pass precision context: bf16 autocast on the run's device, or nothing for fp32."""
        return autocast(self.precision)

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Model on the device (wrapped for DDP with several processes) and its optimiser."""
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    def to_device(self, value: Any) -> Any:
        """A tensor, or a dict / list / tuple of them, on the run's device."""
        if isinstance(value, torch.Tensor):
            return value.to(self.device)
        if isinstance(value, dict):
            return {key: self.to_device(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.to_device(item) for item in value)
        return value

    def backward(self, loss: torch.Tensor, model: nn.Module | None = None, sync: bool = True) -> None:
        """Backward `loss`; with `sync=False` the gradients stay local to this process (no all-reduce).

        Gradient accumulation passes `sync=False` for all but an optimiser step's last micro-batch, so
        each process all-reduces exactly once per step: processes holding different numbers of
        micro-batches cannot wait on each other, and N-1 all-reduces per step are saved.
        """
        if sync or model is None or self.num_processes == 1:
            self.accelerator.backward(loss)
            return
        with self.accelerator.no_sync(model):
            self.accelerator.backward(loss)

    # -- processes --------------------------------------------------------------------------

    def shard(self, items: Sequence[T], for_gradients: bool = True) -> list[T]:
        """This process's rows of a global batch: rows rank, rank + N, rank + 2N, ...

        For a gradient step every process must hold at least one row (each takes part in the
        gradient all-reduce); an evaluation (`for_gradients=False`) may leave a process none.
        """
        if for_gradients and len(items) < self.num_processes:
            raise UserError(f"a batch of {len(items)} cannot be shared by {self.num_processes} processes")
        return list(items[self.process_index :: self.num_processes])

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """All processes' rows, in process order; (B, T) tensors are right-padded to the longest T first."""
        if self.num_processes == 1:
            return tensor
        if tensor.dim() > 1:
            tensor = self.accelerator.pad_across_processes(tensor, dim=1)
        return self.accelerator.gather(tensor)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over processes (every process gets it)."""
        return self.accelerator.reduce(tensor, "sum") if self.num_processes > 1 else tensor

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    # -- randomness ---------------------------------------------------------------------------

    def rng_states(self) -> list[dict[str, Any]]:
        """Every process's random streams, in process order. Every process must call it (it gathers)."""
        return gather_object([rng_state()])

    def set_rng_states(self, states: list[dict[str, Any]] | dict[str, Any]) -> None:
        """This process's streams from `rng_states()`.

        A checkpoint written before each process had its own streams holds one dict, which every
        process takes. In a run resumed on more processes than wrote the checkpoint, a process the
        checkpoint has no streams for keeps its own (seeded from seed + its index): taking a saved
        process's streams would make the two draw the same numbers.
        """
        if isinstance(states, dict):
            set_rng_state(states)
        elif self.process_index < len(states):
            set_rng_state(states[self.process_index])

    @contextlib.contextmanager
    def forked_rng(self, seed: int) -> Iterator[None]:
        """Run the block on its own seed and leave the run's random streams where they were.

        Evaluation samples inside it, so evaluating (or not) never shifts what training draws.
        """
        state = rng_state()
        seed_everything(seed)
        try:
            yield
        finally:
            set_rng_state(state)


def check_micro_batches(batch_size: int, micro_batch_size: int, num_processes: int) -> None:
    """Refuse a batch that would give processes unequal numbers of micro-batches.

    Every forward of a DDP model broadcasts its buffers and the synchronised backward all-reduces the
    gradients: a process with one micro-batch more than another would wait for it forever.
    """
    most, fewest = -(-batch_size // num_processes), batch_size // num_processes  # records per process
    if fewest == 0 or -(-most // micro_batch_size) != -(-fewest // micro_batch_size):
        raise UserError(
            f"train.batch_size {batch_size} over {num_processes} processes gives them {most} and {fewest} records, "
            f"in unequal numbers of micro-batches of {micro_batch_size}; use a batch_size divisible by "
            f"{num_processes} * train.micro_batch_size"
        )
