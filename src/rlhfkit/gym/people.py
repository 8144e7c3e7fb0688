"""People as the labeller of `rlhfkit gym --set reward.kind=preferences reward.labeller=server`.

Christiano et al. (2017) showed their labellers two short clips of the agent side by side and asked
which was better. Here each update with labels due is one round on a running `rlhfkit label serve`,
driven through the language-model loop's admin API (`rlhfkit.loop.server`):

    1 replay   a copy of the environments as the update's rollout found them, stepped by the rollout's
               own actions, renders every frame a segment needs (`replay`, `render_segments`)
    2 upload   each segment as a looping GIF at the environment's frame rate, named by its SHA-256
    3 push     one task per pair: the question, two captions as the responses, the two GIFs as their
               media and the pair's index (`round_records`); the page shows the GIFs side by side
    4 wait     until every pair is judged; "A"/"B" -> P(first preferred) 1 or 0, a tie -> 0.5 (the
               paper's "equally preferable"), "both bad" says nothing (its "incomparable") and, like a
               skip, gives no label (`preferences_from`)

Where the rollout started is the trainer's resume point: the checkpoint `fit` would write before the
update. Replaying from it is exact (the environments' state, their random generators included, is
pickled), and a round that times out, or a server that goes away, saves it as a checkpoint before
the one-line error: `--resume` replays the same update, pushes the same round (already on the
server: nothing is added) and finds every judgement that arrived meanwhile.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import DependencyNotInstalled
from gymnasium.utils import EzPickle
from gymnasium.vector import SyncVectorEnv
from torch import Tensor

from rlhfkit.checkpoint import checkpoint_step, list_checkpoints, save_checkpoint
from rlhfkit.errors import UserError
from rlhfkit.gym.envs import EnvSpec, inspect_env, make_env, to_env_actions
from rlhfkit.gym.evaluate import write_gif
from rlhfkit.gym.preferences import ResumePoint, RewardConfig, SegmentPairs
from rlhfkit.loop.server import TOKEN_ENV, LabelServer, ServerLabeller, run_id

Record = dict[str, Any]


def replay_frame_rate(env_id: str) -> float:
    """The frame rate of `env_id`'s animations; UserError unless a copy of it replays exactly and renders RGB frames.

    Box2D and MuJoCo environments (EzPickle) pickle as their constructor arguments, not their state: a
    copy would start new episodes instead of the rollout's.
    """
    env = make_env(env_id)
    try:
        modes = env.metadata.get("render_modes", [])
        if isinstance(env.unwrapped, EzPickle):
            raise UserError(
                f"reward.labeller=server: env.id {env_id!r} cannot be copied mid-episode (it pickles as its "
                "arguments), so its segments cannot be replayed for people; use reward.labeller=synthetic"
            )
        if "rgb_array" not in modes:
            raise UserError(
                f"reward.labeller=server: env.id {env_id!r} does not render rgb_array frames (its render modes: "
                f"{modes}); people need to see its segments, use reward.labeller=synthetic"
            )
        return float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()


def replay(start_envs: bytes, actions: Tensor, action_space: spaces.Space, steps: int) -> Iterator[SyncVectorEnv]:
    """The rollout's environments before each of its first `steps` steps, rendering RGB frames.

    start_envs: the vector environment pickled as the rollout began; actions: the rollout's (N, T[, A]).
    The copy is stepped as the rollout stepped its environments (the same actions, the same same-step
    autoreset, the same random generators), so it passes through the very states the rollout saw.
    """
    envs: SyncVectorEnv = pickle.loads(start_envs)
    try:
        for env in envs.envs:
            env.unwrapped.render_mode = "rgb_array"
        for t in range(steps):
            yield envs
            envs.step(to_env_actions(actions[:, t].numpy(), action_space))
    finally:
        envs.close()


def render_segments(
    start_envs: bytes, actions: Tensor, action_space: spaces.Space, starts: Tensor, length: int
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(k, the `length` frames of segment k) for the segments (environment, start step) `starts`, as each completes.

    One replay renders each frame once, however many segments show it; a segment's frames are let go
    as soon as it is complete, so memory holds at most `length` steps of frames.
    """
    segments = [(k, n, t) for k, (n, t) in enumerate(starts.tolist())]
    frames: dict[int, list[np.ndarray]] = {}
    steps = max(t for _, _, t in segments) + length
    for t, envs in enumerate(replay(start_envs, actions, action_space, steps)):
        rendered: dict[int, np.ndarray] = {}
        for k, n, start in segments:
            if start <= t < start + length:
                if n not in rendered:
                    rendered[n] = render(envs, n)
                frames.setdefault(k, []).append(rendered[n])
                if t == start + length - 1:
                    yield k, frames.pop(k)


def render(envs: SyncVectorEnv, index: int) -> np.ndarray:
    """Sub-environment `index`'s current state as an (H, W, 3) frame; UserError where it cannot render here."""
    try:
        return envs.envs[index].unwrapped.render()
    except DependencyNotInstalled as error:
        raise UserError(f"reward.labeller=server: the environment cannot render here: {error}") from None


def caption(start: Tensor, length: int) -> str:
    """A segment's text on the page (the GIF's alt text) and in the exported comparisons."""
    environment, step = start.tolist()
    return f"environment {environment}, steps {step}-{step + length - 1}"


def round_records(question: str, pairs: SegmentPairs, digests: list[str], length: int) -> list[Record]:
    """The round's tasks: pair k's two captions as responses, its two GIFs (digests 2k, 2k + 1) as their media."""
    return [
        {
            "prompt": question,
            "responses": [caption(pairs.first[k], length), caption(pairs.second[k], length)],
            "media": digests[2 * k : 2 * k + 2],
            "pair": k,
        }
        for k in range(len(pairs))
    ]


def preferences_from(comparisons: list[Record], records: list[Record]) -> tuple[Tensor, Tensor]:
    """(pair indices, P(first preferred)) of the round's comparison records, in the order they came.

    "A"/"B" give the chosen response; a tie comes with `label` 0.5 (its chosen/rejected in the
    record's order). A record that does not match its pair's two captions is not this round's and is left out.
    """
    picked, prob_first = [], []
    for comparison in comparisons:
        pair = comparison.get("meta", {}).get("extra", {}).get("pair")
        if not isinstance(pair, int) or not 0 <= pair < len(records):
            continue
        first, second = records[pair]["responses"]
        if {comparison["chosen"], comparison["rejected"]} != {first, second}:
            continue
        picked.append(pair)
        prob_first.append(comparison.get("label", 1.0 if comparison["chosen"] == first else 0.0))
    return torch.tensor(picked, dtype=torch.long), torch.tensor(prob_first, dtype=torch.float32)


def keep_resume_point(out: Path, start: ResumePoint) -> None:
    """Save `start` as the run's checkpoint of its step (unless `fit` wrote that one): --resume replays from it."""
    tensors, state = start
    if all(checkpoint_step(path) != state["step"] for path in list_checkpoints(out)):
        save_checkpoint(out, state["step"], tensors, state)


class ServerPeople:
    """`PreferenceReward`'s people: a round on the labelling server for each update with labels due."""

    def __init__(self, server: LabelServer, config: RewardConfig, spec: EnvSpec, out: Path, fps: float):
        self.server, self.config, self.spec, self.out, self.fps = server, config, spec, out, fps
        self.question = config.question or f"Which clip does better at {spec.env_id}?"

    def label(self, update: int, pairs: SegmentPairs, actions: Tensor, start: ResumePoint) -> tuple[Tensor, Tensor]:
        """Round `update`: the pairs as animations, people's judgements back (see the module docstring)."""
        try:
            records = round_records(self.question, pairs, self.upload(pairs, actions, start), self.config.segment_steps)
            waiting = ServerLabeller(
                self.server,
                len(records),
                self.config.label_timeout,
                self.config.poll_seconds,
                keep_ties=True,
                command="gym",
                timeout_key="reward.label_timeout",
                continue_with="run the same command with --resume",
            )
            comparisons = waiting.label(update, records)
        except (UserError, KeyboardInterrupt):
            keep_resume_point(self.out, start)
            raise
        return preferences_from(comparisons, records)

    def upload(self, pairs: SegmentPairs, actions: Tensor, start: ResumePoint) -> list[str]:
        """Every segment of `pairs` (first and second of pair 0, then of pair 1, ...) as a GIF on the server."""
        starts = torch.stack([pairs.first, pairs.second], 1).flatten(0, 1)  # (2K, 2)
        digests = [""] * len(starts)
        start_envs = start[1]["runner"]["envs"]
        with tempfile.TemporaryDirectory() as folder:
            segments = render_segments(start_envs, actions, self.spec.action_space, starts, self.config.segment_steps)
            for k, frames in segments:
                gif = write_gif(frames, Path(folder, f"{k}.gif"), self.fps).read_bytes()
                digests[k] = hashlib.sha256(gif).hexdigest()
                self.server.upload(digests[k], gif)
        return digests


def connect_people(config: RewardConfig, env_id: str, out: Path, token: str | None) -> ServerPeople | None:
    """With reward.labeller=server, the labelling server for the run in `out`, checked before anything is written.

    The token: `token` (--token) or $RLHFKIT_LABEL_TOKEN, an admin's, as for `rlhfkit loop --server`.
    """
    if config.kind != "preferences" or config.labeller != "server":
        return None
    fps = replay_frame_rate(env_id)
    server = LabelServer(config.server, token or os.environ.get(TOKEN_ENV, ""), run_id(out))
    server.check()
    return ServerPeople(server, config, inspect_env(env_id), out, fps)
