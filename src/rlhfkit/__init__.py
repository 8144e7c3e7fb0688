"""rlhfkit: train language models from human preferences, end to end.

`from rlhfkit import PPOTrainer, PPOConfig` is the notebook entry point; the
import is lazy so that `import rlhfkit` stays cheap.
"""

from typing import Any

__all__ = ["PPOConfig", "PPOTrainer"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from rlhfkit.recipes import ppo  # noqa: PLC0415 (lazy: `import rlhfkit` and the CLI must not load torch)

        return getattr(ppo, name)
    raise AttributeError(f"module 'rlhfkit' has no attribute {name!r}")
