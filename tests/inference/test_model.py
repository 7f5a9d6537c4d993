"""NForgeModel.from_pretrained (ours, a release dir, a hub id offline) and predict_features windowing."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from helpers import SMALL_DIMS, make_release, rel_err, to_torch_layout
from nforge_jax import NForgeModel
from nforge_jax.model import EncoderConfig, FmriEncoder
from nforge_jax.model.checkpoint import CheckpointError, save_encoder

CONFIG = EncoderConfig(feature_dims=(("text", 2, 16), ("audio", 1, 8)), n_outputs=30, n_output_timesteps=10,
                       hidden=64, depth=1, heads=2, low_rank_head=16, n_subjects=2)


@pytest.fixture
def saved(tmp_path):
    encoder = FmriEncoder(CONFIG, rngs=nnx.Rngs(0))
    save_encoder(encoder, tmp_path / "ckpt")
    return encoder, tmp_path / "ckpt"


def features(t, seed=0, dims=(("text", 2, 16), ("audio", 1, 8))):
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((t, n, d)).astype(np.float32) for m, n, d in dims}


def test_one_window_rows_are_the_model_output(saved):
    encoder, path = saved
    model = NForgeModel.from_pretrained(path)
    f = features(20)
    preds = model.predict_features(f)
    expected = np.asarray(encoder({m: jnp.asarray(v)[None] for m, v in f.items()}))[0]
    assert preds.shape == (10, 30)
    np.testing.assert_allclose(preds, expected, rtol=1e-5, atol=1e-5)
    preds_subject = model.predict_features(f, subject=1)
    expected = np.asarray(encoder({m: jnp.asarray(v)[None] for m, v in f.items()}, jnp.array([1])))[0]
    np.testing.assert_allclose(preds_subject, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t,batch", [(53, 2), (60, 8), (7, 4), (200, 3)])
def test_long_inputs_are_windowed_and_stitched(saved, t, batch):
    encoder, path = saved
    model = NForgeModel.from_pretrained(path, batch_size=batch)
    f = features(t, seed=t)
    preds = model.predict_features(f)
    # Independent expectation: zero-pad to whole windows, run each window alone, concatenate, trim.
    n_win = -(-t // 20)
    rows = []
    for w in range(n_win):
        chunk = {}
        for m, v in f.items():
            buf = np.zeros((20,) + v.shape[1:], np.float32)
            part = v[w * 20 : (w + 1) * 20]
            buf[: len(part)] = part
            chunk[m] = jnp.asarray(buf)[None]
        rows.append(np.asarray(encoder(chunk))[0])
    expected = np.concatenate(rows)[: -(-t // 2)]
    assert preds.shape == (-(-t // 2), 30)
    np.testing.assert_allclose(preds, expected, rtol=1e-5, atol=1e-5)


def test_missing_modality_allowed(saved):
    _, path = saved
    model = NForgeModel.from_pretrained(path)
    preds = model.predict_features({"audio": features(20)["audio"]})
    assert preds.shape == (10, 30) and np.isfinite(preds).all()


@pytest.mark.parametrize("bad,needle", [
    ({"text": np.zeros((20, 2, 15))}, r"features\['text'\]: expected shape \(T, 2, 16\)"),
    ({"smell": np.zeros((20, 2, 16))}, "unknown modality 'smell'"),
    ({"text": np.zeros((20, 2, 16)), "audio": np.zeros((19, 1, 8))}, "19 time steps"),
    ({}, "expected a dict"),
])
def test_bad_features_are_named(saved, bad, needle):
    _, path = saved
    with pytest.raises(ValueError, match=needle):
        NForgeModel.from_pretrained(path).predict_features(bad)


def test_bad_subject(saved):
    _, path = saved
    with pytest.raises(ValueError, match=r"subject: expected None .* \[0, 2\)"):
        NForgeModel.from_pretrained(path).predict_features(features(20), subject=5)


def test_release_directory_is_converted_once_and_matches_reference(tmp_path):
    ref = make_release(tmp_path / "tribev2")
    cache = tmp_path / "cache"
    model = NForgeModel.from_pretrained(tmp_path / "tribev2", cache_folder=cache)
    converted = list(cache.iterdir())
    assert len(converted) == 1
    stamp = (converted[0] / "config.json").stat().st_mtime_ns
    model = NForgeModel.from_pretrained(tmp_path / "tribev2", cache_folder=cache)  # reused, not redone
    assert [p.name for p in cache.iterdir()] == [converted[0].name]
    assert (converted[0] / "config.json").stat().st_mtime_ns == stamp
    rng = np.random.default_rng(0)
    f = {m: rng.standard_normal((20, n, d)).astype(np.float32) for m, (n, d) in SMALL_DIMS.items()}
    preds = model.predict_features(f)
    with torch.no_grad():
        expected = ref(to_torch_layout({m: v[None] for m, v in f.items()}))[0].numpy().T
    assert rel_err(preds, expected) <= 1e-5


def test_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as err:
        NForgeModel.from_pretrained("facebook/tribev2")
    msg = str(err.value)
    assert "config.yaml" in msg and "best.ckpt" in msg and "./tribev2" in msg


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither an nforge_jax checkpoint"):
        NForgeModel.from_pretrained(tmp_path / "empty")
