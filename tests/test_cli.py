"""The CLI's global options and process set-up: --version, --help, --threads, OMP_WAIT_POLICY, --report-to, warnings."""

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from rlhfkit.cli import main, prepare_environment
from rlhfkit.errors import UserError
from rlhfkit.report_to import REPORT_TO_ENV

ROOT = Path(__file__).resolve().parents[1]

# A command module that reports how the CLI set up its process. It records whether torch was loaded
# before its own import, i.e. whether the CLI's variables could still reach OpenMP.
PROBE = textwrap.dedent(
    """
    import json, os, sys, warnings
    TORCH_LOADED_BEFORE = "torch" in sys.modules
    import torch

    def add_arguments(parser):
        pass

    def run(args):
        warnings.warn("`old_api` is deprecated and will be removed in v6", FutureWarning)
        warnings.warn("this call is deprecated", DeprecationWarning)
        warnings.warn("rlhfkit: the environment state does not pickle", UserWarning)
        variables = {name: os.environ.get(name) for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "RLHFKIT_REPORT_TO")}
        print(json.dumps({**variables, "torch_threads": torch.get_num_threads(), "torch_before": TORCH_LOADED_BEFORE}))
        return 0
    """
)
RUN_PROBE = "import sys; from rlhfkit import cli; cli.COMMANDS['probe'] = ('rlhfkit_probe', 'p'); sys.exit(cli.main())"


def run_probe(tmp_path: Path, *options: str, **environment: str) -> subprocess.CompletedProcess:
    (tmp_path / "rlhfkit_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "RLHFKIT_", "PYTHONWARNINGS"))}
    env.update(PYTHONPATH=str(tmp_path), **environment)
    return subprocess.run(
        [sys.executable, "-c", RUN_PROBE, *options], env=env, capture_output=True, text=True, check=True, cwd=tmp_path
    )


def test_version_comes_from_the_package_metadata(capsys):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"rlhfkit {version}\n"


def test_help_lists_the_global_options_without_loading_torch():
    code = "import sys; from rlhfkit.cli import main; main(['--help']); print('torch' in sys.modules)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.endswith("False\n")
    for option in ("--report-to LIST", "--threads N", "--debug", "--version"):
        assert f"\n  {option} " in shown


def test_the_gym_command_does_not_import_the_language_model_stack():
    """transformers and peft took several seconds of every `rlhfkit gym` start (RESULTS.md, session 7)."""
    code = "import sys, rlhfkit.recipes.gym; print(sorted({'transformers', 'peft'} & set(sys.modules)))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown == "[]\n"


def test_the_command_process_waits_passively_and_takes_threads_before_torch_loads(tmp_path):
    probe = run_probe(tmp_path, "probe", "--threads", "3")
    reported = json.loads(probe.stdout.splitlines()[-1])
    assert reported == {
        "OMP_WAIT_POLICY": "PASSIVE",
        "OMP_NUM_THREADS": "3",
        "RLHFKIT_REPORT_TO": None,
        "torch_threads": 3,
        "torch_before": False,
    }


def test_the_users_own_wait_policy_and_tracker_choice_are_kept(tmp_path):
    probe = run_probe(tmp_path, "--report-to=none", "probe", OMP_WAIT_POLICY="ACTIVE")
    reported = json.loads(probe.stdout.splitlines()[-1])
    assert (reported["OMP_WAIT_POLICY"], reported["OMP_NUM_THREADS"], reported["RLHFKIT_REPORT_TO"]) == (
        "ACTIVE",
        None,
        "none",
    )


def test_library_deprecation_notices_are_dropped_and_rlhfkit_warnings_kept(tmp_path):
    stderr = run_probe(tmp_path, "probe").stderr
    assert "UserWarning: rlhfkit: the environment state does not pickle" in stderr
    assert "deprecated" not in stderr


def test_prepare_environment_sets_only_what_the_user_left_open():
    environ = {}
    assert prepare_environment(environ, report_to="tensorboard", threads="2") == 2
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2", REPORT_TO_ENV: "tensorboard"}
    environ = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "4"}
    assert prepare_environment(environ, report_to=None, threads=None) is None
    assert environ == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "4"}


@pytest.mark.parametrize("threads", ["0", "-1", "two", ""])
def test_threads_must_be_a_positive_whole_number(threads):
    with pytest.raises(UserError, match=f"--threads {threads}: expected a whole number of threads, 1 or more"):
        prepare_environment({}, report_to=None, threads=threads)


def keep_environment(monkeypatch):
    """main() sets variables in this process: restore them after the test."""
    for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", REPORT_TO_ENV):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)


@pytest.mark.parametrize("package", ["wandb", "trackio", "mlflow"])
def test_a_tracker_that_is_not_installed_is_refused_before_anything_loads(package, tmp_path, monkeypatch, capsys):
    if __import__("importlib.util").util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    keep_environment(monkeypatch)
    out = tmp_path / "run"
    assert main(["sft", "--report-to", f"tensorboard,{package}", "--set", f"out={out}"]) == 2
    assert capsys.readouterr().err == (
        f"rlhfkit sft: error: --report-to tensorboard,{package}: {package} is not installed "
        f"(pip install {package}), or leave it out of --report-to\n"
    )
    assert not out.exists()


def test_the_environment_variable_is_checked_like_the_option(tmp_path, monkeypatch, capsys):
    keep_environment(monkeypatch)
    monkeypatch.setenv(REPORT_TO_ENV, "tensorbored")
    assert main(["sft", "--set", f"out={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.startswith(f"rlhfkit sft: error: {REPORT_TO_ENV} 'tensorbored': unknown tracker")


@pytest.mark.parametrize("argv", [["--threads"], ["sft", "--report-to"]])
def test_a_global_option_without_its_value_is_one_line(argv, capsys):
    assert main(argv) == 2
    assert capsys.readouterr().err == f"rlhfkit: error: {argv[-1]} needs a value (see rlhfkit --help)\n"
