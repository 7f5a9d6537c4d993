"""FmriEncoder behaviour that the parity tests do not cover: config errors, pooling, dropout, dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from nforge_jax.model import ConfigError, EncoderConfig, FmriEncoder
from nforge_jax.model.encoder import adaptive_pool_matrix

DIMS = (("text", 2, 16), ("audio", 1, 8), ("video", 2, 12))


def small(**kw):
    base = dict(feature_dims=DIMS, n_outputs=30, n_output_timesteps=10, hidden=96, depth=1, heads=3,
                low_rank_head=16, n_subjects=2)
    base.update(kw)
    return FmriEncoder(EncoderConfig(**base), rngs=nnx.Rngs(0))


def feats(b=2, t=20, seed=0):
    rng = np.random.default_rng(seed)
    return {m: jnp.asarray(rng.standard_normal((b, t, n, d)), jnp.float32) for m, n, d in DIMS}


@pytest.mark.parametrize("n_in,n_out", [(200, 100), (173, 100), (19, 7), (5, 5), (7, 3)])
def test_pool_matrix_matches_torch_adaptive_avg_pool(n_in, n_out):
    x = np.random.default_rng(0).standard_normal((3, n_in)).astype(np.float32)
    expected = torch.nn.AdaptiveAvgPool1d(n_out)(torch.from_numpy(x)[None])[0].numpy()
    np.testing.assert_allclose(x @ adaptive_pool_matrix(n_in, n_out).T, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw,field", [
    (dict(hidden=100), "divisible"), (dict(heads=5, hidden=90), "head dimension"),
    (dict(combination="concat"), "combination"), (dict(dtype="float64"), "dtype"),
    (dict(n_subjects=0, subject_dropout=None), "no rows"), (dict(modality_dropout=1.5), "modality_dropout"),
    (dict(feature_dims=(("text", 2, 16), ("text", 1, 4))), "unique"),
])
def test_config_errors_name_the_field(kw, field):
    base = dict(feature_dims=DIMS, hidden=96, heads=3)
    base.update(kw)
    with pytest.raises(ConfigError, match=field):
        EncoderConfig(**base)


def test_config_round_trips_through_dict():
    c = EncoderConfig(feature_dims=DIMS, hidden=96, heads=3)
    assert EncoderConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown model config field"):
        EncoderConfig.from_dict({**c.to_dict(), "hiddne": 3})


def test_missing_modality_equals_explicit_zero_projection():
    m = small()
    f = feats()
    out_missing = m({k: v for k, v in f.items() if k != "audio"})
    # Absent = zero *projection* (no bias), which differs from zero *features* (bias added).
    out_zero_features = m({**f, "audio": jnp.zeros_like(f["audio"])})
    assert not np.allclose(out_missing, out_zero_features)
    m.projectors["audio"].layers[0].bias[...] = jnp.zeros_like(m.projectors["audio"].layers[0].bias[...])
    np.testing.assert_allclose(m({**f, "audio": jnp.zeros_like(f["audio"])}), out_missing, rtol=1e-6, atol=1e-6)


def test_bad_feature_shapes_are_named():
    m = small()
    f = feats()
    with pytest.raises(ValueError, match=r"features\['audio'\]"):
        m({**f, "audio": f["audio"][..., :3]})
    with pytest.raises(ValueError, match="unknown modality"):
        m({**f, "smell": f["audio"]})


def test_training_randomness_only_with_rng():
    m = small(modality_dropout=0.5, dropout=0.1, subject_dropout=0.5)
    f = feats(b=8)
    ids = jnp.zeros((8,), jnp.int32)
    eval_a, eval_b = m(f, ids), m(f, ids)
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a = m(f, ids, rng=jax.random.key(1))
    train_b = m(f, ids, rng=jax.random.key(1))
    train_c = m(f, ids, rng=jax.random.key(2))
    np.testing.assert_array_equal(train_a, train_b)
    assert not np.allclose(train_a, train_c)
    assert not np.allclose(train_a, eval_a)


def test_subject_dropout_substitutes_the_shared_row():
    m = small(subject_dropout=0.999999)  # (nearly) every sample uses the shared row in training
    f = feats(b=4)
    trained = m(f, jnp.array([0, 1, 0, 1]), rng=jax.random.key(0))
    average = m(f)
    np.testing.assert_allclose(trained, average, rtol=1e-5, atol=1e-5)


def test_attention_maps_are_distributions():
    m = small(depth=2)
    out, maps = m(feats(), return_attention=True)
    assert len(maps) == 2
    for a in maps:
        assert a.shape == (2, 3, 20, 20)
        np.testing.assert_allclose(np.asarray(a).sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out, m(feats()))


def test_bfloat16_compute_is_close_to_float32():
    m32 = small()
    m16 = small(dtype="bfloat16")
    out32, out16 = m32(feats()), m16(feats())
    assert out16.dtype == jnp.bfloat16
    r = np.corrcoef(np.asarray(out32, np.float32).ravel(), np.asarray(out16, np.float32).ravel())[0, 1]
    assert r > 0.99


def test_latent_then_readout_equals_forward():
    m = small()
    f = feats()
    z = m.latent(f)
    w, b = m.predictor.weights[...], m.predictor.bias[...]
    manual = z @ w[2] + b[2]  # average row = n_subjects
    np.testing.assert_allclose(m(f), manual, rtol=1e-5, atol=1e-5)
