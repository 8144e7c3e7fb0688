import pytest

from rlhfkit.runtime.precision import cache_root


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """$RLHFKIT_CACHE for the whole test session: a directory of its own, not the user's ~/.cache/rlhfkit.

    Tests probe the precision and the generation engine of tiny random models; their results must not
    land in the user's precision.json and generation_engine.json. The models already converted in the
    user's cache (the embedded model's safetensors) are linked in, so no test converts them again.
    A test that sets RLHFKIT_CACHE itself (monkeypatch.setenv) still gets its own.
    """
    user_cache, cache = cache_root(), tmp_path_factory.mktemp("rlhfkit-cache")
    for entry in sorted(user_cache.iterdir()) if user_cache.is_dir() else []:
        if entry.is_dir():
            (cache / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLHFKIT_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama chat model with a word-level tokenizer, built once per test session."""
    from rlhfkit.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-model")))
