"""MKL's code path by measurement (runtime/kernels.py): the choice, its cache, the user's own value, the probe."""

import json
import subprocess
import sys

import pytest

from rlhfkit.runtime import kernels


@pytest.fixture(autouse=True)
def cpu_machine(monkeypatch):
    """Every test but the GPU one runs as on a machine without a GPU, where the probe measures."""
    monkeypatch.setattr(kernels.torch.cuda, "is_available", lambda: False)


def test_time_ratio_is_the_geometric_mean_of_the_per_shape_ratios():
    assert kernels.time_ratio([1.0, 4.0], [2.0, 2.0]) == pytest.approx(1.0)  # sqrt(0.5 * 2)
    assert kernels.time_ratio([1.0, 1.0], [2.0, 8.0]) == pytest.approx(0.25)  # sqrt(0.5 * 0.125)


@pytest.mark.parametrize("candidate_share, expected", [(0.5, "AVX2"), (0.95, None)])
def test_avx2_is_set_only_where_it_measured_clearly_faster_and_the_answer_is_cached(
    tmp_path, monkeypatch, candidate_share, expected
):
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "mkl_is_used", lambda: True)
    measured = []

    def fake_measure(environ):
        measured.append(dict(environ))
        return {"default": [2.0, 4.0], "AVX2": [2.0 * candidate_share, 4.0 * candidate_share]}

    monkeypatch.setattr(kernels, "measure", fake_measure)
    environ: dict[str, str] = {}
    assert kernels.choose_mkl_code_path(environ) == expected
    assert environ.get("MKL_CBWR") == expected and len(measured) == 1
    cached = json.loads((tmp_path / "mkl_code_path.json").read_text())
    assert [entry["MKL_CBWR"] for entry in cached.values()] == [expected]
    fresh: dict[str, str] = {}
    assert kernels.choose_mkl_code_path(fresh) == expected and len(measured) == 1  # read back, not measured again


def test_a_value_the_user_set_is_kept_and_nothing_is_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "mkl_is_used", lambda: True)
    monkeypatch.setattr(kernels, "measure", lambda environ: pytest.fail("measured although the user chose"))
    environ = {"MKL_CBWR": "COMPATIBLE"}
    assert kernels.choose_mkl_code_path(environ) == "COMPATIBLE" and environ == {"MKL_CBWR": "COMPATIBLE"}
    assert not (tmp_path / "mkl_code_path.json").exists()


def test_the_child_process_times_every_shape():
    child = subprocess.run([sys.executable, "-P", kernels.__file__], capture_output=True, text=True, check=True)
    seconds = json.loads(child.stdout)
    assert len(seconds) == len(kernels.SHAPES) and all(s > 0 for s in seconds)


def test_a_damaged_cache_file_is_measured_again_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "mkl_is_used", lambda: True)
    monkeypatch.setattr(kernels, "measure", lambda environ: {"default": [2.0], "AVX2": [1.0]})
    (tmp_path / "mkl_code_path.json").write_bytes(b"\xff{not json")
    environ: dict[str, str] = {}
    assert kernels.choose_mkl_code_path(environ) == "AVX2"
    assert json.loads((tmp_path / "mkl_code_path.json").read_text())  # rewritten whole


@pytest.mark.parametrize(
    "returncode, stdout, stderr",
    [(-11, "", "Fatal Python error: Segmentation fault"), (0, "not json", ""), (0, "[1.0]", "")],
)
def test_a_failing_timing_child_is_one_warning_and_mkls_own_path_not_a_crash(
    tmp_path, monkeypatch, capsys, returncode, stdout, stderr
):
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "mkl_is_used", lambda: True)
    failed = subprocess.CompletedProcess([], returncode, stdout=stdout, stderr=stderr)
    monkeypatch.setattr(kernels.subprocess, "run", lambda *args, **kwargs: failed)
    environ: dict[str, str] = {}
    assert kernels.choose_mkl_code_path(environ) is None and environ == {}
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("rlhfkit: warning: MKL code path probe failed") and len(warning.splitlines()) == 1
    assert f"exit status {returncode}" in warning and (stderr or "no error output") in warning
    assert not (tmp_path / "mkl_code_path.json").exists()  # measured again next time


def test_nothing_is_measured_where_a_gpu_runs_the_models(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHFKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "mkl_is_used", lambda: True)
    monkeypatch.setattr(kernels.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(kernels, "measure", lambda environ: pytest.fail("measured on a GPU machine"))
    environ: dict[str, str] = {}
    assert kernels.choose_mkl_code_path(environ) is None and environ == {}
