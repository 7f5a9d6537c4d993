"""Offline model resolution: what to do when a model is not there."""

import pytest

from nforge_jax.extract.models import ModelNotAvailable, resolve_model


def test_uncached_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotAvailable, match=r"hf download someorg/somemodel"):
        resolve_model("someorg/somemodel", "text")
    (tmp_path / "d").mkdir()
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        resolve_model(tmp_path / "d", "audio")
