"""The test session's $RLHFKIT_CACHE (tests/conftest.py): what tests cache lands there, the user's models stay found."""

import json
from pathlib import Path

import pytest

from rlhfkit.config import EMBEDDED_MODEL
from rlhfkit.models import loading
from rlhfkit.models.tiny import build_tiny_model
from rlhfkit.runtime import precision

USER_CACHE = Path.home() / ".cache" / "rlhfkit"


def test_a_precision_probe_of_a_tiny_model_is_cached_in_the_session_directory(session_cache, tmp_path, monkeypatch):
    assert precision.cache_root() == session_cache != USER_CACHE
    user_file = USER_CACHE / "precision.json"
    before = user_file.read_bytes() if user_file.is_file() else None
    monkeypatch.setattr(precision, "probe", lambda model: {"float32": 1.0, "bfloat16": 2.0})  # no timing in tests
    model = loading.load_causal_lm(str(build_tiny_model(tmp_path / "tiny", hidden_size=16, num_layers=1)))
    assert precision.resolve_precision("auto", model, model.device) == "float32"
    assert precision.machine_key(model) in json.loads((session_cache / "precision.json").read_text())
    assert (user_file.read_bytes() if user_file.is_file() else None) == before


def test_the_embedded_model_converted_in_the_users_cache_is_found_without_converting(session_cache, monkeypatch):
    linked = session_cache / EMBEDDED_MODEL.split(":", 1)[1]
    if not linked.is_symlink():
        pytest.skip("the user's cache holds no converted embedded model")
    monkeypatch.setattr(loading, "_convert_gguf", lambda gguf, target: pytest.fail(f"converted {gguf} again"))
    assert loading.resolve_model_path(EMBEDDED_MODEL) == str(linked)
    assert (linked / "config.json").is_file() and linked.resolve().parent != session_cache
