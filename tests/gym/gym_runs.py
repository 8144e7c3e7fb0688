"""What the Gym tests share: a run through the CLI, a run killed at a chosen call, metrics without wall times."""

from __future__ import annotations

from rlhfkit.cli import main


def run_gym(env_id: str, out, settings: list[str], *extra: str) -> int:
    """`rlhfkit gym --env ENV_ID --out OUT --set S ...` (each setting its own --set); the exit code."""
    argv = ["gym", "--env", env_id, "--out", str(out), *extra]
    for setting in settings:
        argv += ["--set", setting]
    return main(argv)


def interrupt_at_call(monkeypatch, owner, name: str, call: int) -> None:
    """`owner.name` (a function, or a method of the class `owner`) raises KeyboardInterrupt at its `call`-th call."""
    real, calls = getattr(owner, name), []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)


def without_timing(records: list[dict]) -> list[dict]:
    """Metrics records without their wall times, which differ between two runs of the same steps."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]
