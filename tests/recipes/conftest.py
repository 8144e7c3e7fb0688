"""Fixtures of the recipe tests."""

import pytest

from rlhfkit.models.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny random chat model a little wider than `tiny_model_dir` (hidden size 48): enough to learn a word list."""
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=48))
