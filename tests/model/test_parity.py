"""nforge_jax outputs vs an independent PyTorch reference built on x-transformers 1.27.20.

Each test: random-init reference -> saved in the TRIBE v2 release format -> converted -> same inputs ->
outputs equal to <= 1e-5 relative (float32).
"""

import numpy as np
import pytest

from helpers import SMALL_DIMS, make_release, random_features, rel_err, run_both
from nforge_jax.convert.tribev2 import convert_tribev2
from nforge_jax.model.checkpoint import load_encoder

TOL = 1e-5


def converted(tmp_path, **kw):
    ref = make_release(tmp_path / "release", **kw)
    convert_tribev2(tmp_path / "release", tmp_path / "ckpt")
    model, _ = load_encoder(tmp_path / "ckpt")
    return ref, model


@pytest.mark.parametrize("n_subjects", [1, 4])
def test_small_config_average_and_each_subject(tmp_path, n_subjects):
    ref, model = converted(tmp_path, n_subjects=n_subjects)
    feats = random_features(SMALL_DIMS, 3, 20, seed=1)
    r, j = run_both(ref, model, feats)  # average (shared) subject row
    assert j.shape == (3, 10, 40)
    assert rel_err(j, r) <= TOL
    subjects = np.arange(3) % n_subjects
    r, j = run_both(ref, model, feats, subjects)
    assert rel_err(j, r) <= TOL


@pytest.mark.parametrize("aggregation", ["cat", "sum", "stack"])
def test_combination_modes(tmp_path, aggregation):
    ref, model = converted(tmp_path, extractor_aggregation=aggregation)
    feats = random_features(SMALL_DIMS, 2, 20, seed=2)
    r, j = run_both(ref, model, feats, [0, 2])
    assert rel_err(j, r) <= TOL


def test_missing_modality_is_zeros(tmp_path):
    ref, model = converted(tmp_path)
    feats = random_features(SMALL_DIMS, 2, 20, seed=3)
    del feats["audio"]
    r, j = run_both(ref, model, feats)
    assert rel_err(j, r) <= TOL


def test_mlp_projector_combiner_and_mean_layers(tmp_path):
    combiner = {"name": "Mlp", "input_size": None, "hidden_sizes": [64], "norm_layer": "layer",
                "activation_layer": "gelu", "bias": True, "dropout": 0.0}
    ref, model = converted(tmp_path, projector_hidden=[48], combiner=combiner, layer_aggregation="mean",
                           feature_dims={"text": (3, 24), "audio": (2, 16), "video": (2, 20)})
    feats = random_features({"text": (3, 24), "audio": (2, 16), "video": (2, 20)}, 2, 20, seed=4)
    r, j = run_both(ref, model, feats)
    assert rel_err(j, r) <= TOL


def test_uneven_adaptive_pool_bins(tmp_path):
    ref, model = converted(tmp_path)
    feats = random_features(SMALL_DIMS, 1, 23, seed=5)  # 23 steps -> 10 bins of unequal, overlapping size
    r, j = run_both(ref, model, feats)
    assert rel_err(j, r) <= TOL


def test_attention_maps(tmp_path):
    ref, model = converted(tmp_path, depth=3)
    feats = random_features(SMALL_DIMS, 2, 20, seed=6)
    (r, r_att), (j, j_att) = run_both(ref, model, feats, attention=True)
    assert rel_err(j, r) <= TOL
    assert len(j_att) == len(r_att) == 3
    for a, b in zip(j_att, r_att):
        assert a.shape == (2, 3, 20, 20)
        assert np.abs(a - b).max() <= TOL


def test_head_dim_with_partial_rotation(tmp_path):
    # head_dim 48 -> rotary rotates max(24, 32) = 32 of 48 dims per head.
    ref, model = converted(tmp_path, hidden=96, heads=2)
    feats = random_features(SMALL_DIMS, 2, 20, seed=7)
    r, j = run_both(ref, model, feats)
    assert rel_err(j, r) <= TOL


@pytest.mark.slow
def test_released_size(tmp_path):
    """hidden 1152, 8 layers, low rank 2048, 20,484 vertices, the released single shared row."""
    dims = {"text": (2, 3072), "audio": (2, 1024), "video": (2, 1408)}
    ref = make_release(tmp_path / "release", feature_dims=dims, n_outputs=20484, n_output_timesteps=100,
                       hidden=1152, depth=8, heads=8, low_rank_head=2048, n_subjects=0)
    convert_tribev2(tmp_path / "release", tmp_path / "ckpt")
    model, _ = load_encoder(tmp_path / "ckpt")
    assert model.predictor.weights[...].shape == (1, 2048, 20484)
    feats = random_features(dims, 1, 200, seed=8)
    r, j = run_both(ref, model, feats)
    assert j.shape == (1, 100, 20484)
    assert rel_err(j, r) <= TOL
