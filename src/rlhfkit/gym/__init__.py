"""Classic PPO on Gymnasium environments; `rlhfkit.gym.load(path)` gives a trained policy to act with."""

from rlhfkit.gym.trained import TrainedPolicy, load

__all__ = ["TrainedPolicy", "load"]
