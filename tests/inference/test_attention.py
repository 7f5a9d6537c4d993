"""AttentionExtractor and attention_to_roi_scores: the model's own maps, rollout by hand, ROI token weights
against a hand computation, and a planted model whose two ROIs read early and late moments; distinctness of
ROI profiles against random ROIs (above chance when ROIs read different moments, none when they read the same)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nforge_jax.inference.attention import (AttentionExtractor, attention_rollout, attention_to_roi_scores,
                                           jensen_shannon)
from nforge_jax.model import EncoderConfig, FmriEncoder, MlpSpec

DIMS = (("text", 2, 16), ("audio", 1, 8))
CONFIG = EncoderConfig(feature_dims=DIMS, n_outputs=30, n_output_timesteps=5, hidden=64, depth=2, heads=2,
                       low_rank_head=16, n_subjects=2)


def features(seed=0, batch=None, t=10):
    rng = np.random.default_rng(seed)
    lead = (t,) if batch is None else (batch, t)
    return {m: rng.standard_normal(lead + (l, d)).astype(np.float32) for m, l, d in DIMS}


def softmax_maps(rng, b, heads, t):
    s = rng.standard_normal((b, heads, t, t)) * 2
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_maps_are_the_models_own():
    encoder = FmriEncoder(CONFIG, rngs=nnx.Rngs(0))
    f = features(batch=2)
    maps = AttentionExtractor(encoder)(f)
    _, expected = encoder({m: jnp.asarray(v) for m, v in f.items()}, return_attention=True)
    assert len(maps) == 2
    for a, e in zip(maps, expected):
        assert a.shape == (2, 2, 10, 10)
        np.testing.assert_allclose(a, np.asarray(e), rtol=1e-5, atol=1e-6)


def test_rollout_and_profiles_by_hand():
    rng = np.random.default_rng(1)
    maps = [softmax_maps(rng, 2, 3, 6) for _ in range(3)]
    # Hand rollout, one window at a time, with plain loops.
    expected = []
    for b in range(2):
        r = np.eye(6)
        for a in maps:
            r = (0.3 * np.eye(6) + 0.7 * a[b].mean(0)) @ r
        expected.append(r)
    np.testing.assert_allclose(attention_rollout(maps, residual=0.3), np.stack(expected), rtol=1e-10)
    weights = {"a": rng.uniform(size=(2, 6)), "b": np.array([0, 0, 0, 0, 1.0, 0])}
    prof = attention_to_roi_scores(maps, {"a": [0], "b": [1]}, weights, residual=0.3)
    hand_a = np.mean([weights["a"][b] @ expected[b] / weights["a"][b].sum() for b in range(2)], axis=0)
    np.testing.assert_allclose(prof["a"], hand_a, rtol=1e-5)
    np.testing.assert_allclose(prof["b"], np.mean([expected[b][4] for b in range(2)], axis=0), rtol=1e-5)
    for p in prof.values():
        assert p.shape == (6,) and (p >= 0).all() and p.sum() == pytest.approx(1.0, abs=1e-5)
    stacked = attention_to_roi_scores(maps, {"b": [1]}, weights, residual=0.3, n_blocks=2)["b"]
    np.testing.assert_allclose(stacked, prof["b"][:3] + prof["b"][3:], rtol=1e-5)


def test_token_weights_equal_hand_contributions():
    encoder = FmriEncoder(CONFIG, rngs=nnx.Rngs(2))
    f = features(seed=3)
    rois = {"x": np.array([0, 4, 7]), "y": np.arange(10, 30)}
    got = AttentionExtractor(encoder, subject=1).roi_token_weights(f, rois)
    # By hand: y = mean_t,v (pool h) K W + b, so token q's share is c_q <h_q, K W_S 1/|S|>, c_q its pool weight.
    x = encoder.embed({m: jnp.asarray(v)[None] for m, v in f.items()})
    h = np.asarray(encoder.encoder(x)[0])[0]  # (T, hidden)
    c = np.full(10, 1 / 10)  # 2 steps per output row, 5 rows: each step weighs 1/10 in the time mean
    k = np.asarray(encoder.low_rank_head.kernel[...])
    w = np.asarray(encoder.predictor.weights[...])[1]
    for roi, idx in rois.items():
        g = k @ w[:, idx].mean(1)
        np.testing.assert_allclose(got[roi][0], np.abs(c * (h @ g)), rtol=1e-4, atol=1e-7)
    assert not np.allclose(got["x"] / got["x"].sum(), got["y"] / got["y"].sum(), atol=1e-3)


def planted_model(readout=None):
    """Text features only; early steps carry feature 0, late steps feature 1, all steps feature 2.
    Sublayers are silenced (zero output projections) so the final state of step q is its own normalised
    input. readout (64, V): default 4 vertices, ROI A's (0, 1) reading hidden dim 0 and ROI B's (2, 3) dim 1."""
    if readout is None:
        readout = np.zeros((64, 4), np.float32)
        readout[0, :2] = 1.0  # ROI A = vertices 0, 1
        readout[1, 2:] = 1.0  # ROI B = vertices 2, 3
    config = EncoderConfig(feature_dims=(("text", 1, 8), ("audio", 1, 8)), n_outputs=readout.shape[1],
                           n_output_timesteps=5, hidden=64, depth=1, heads=2, low_rank_head=None, n_subjects=0,
                           subject_bias=False, time_pos_embedding=False, projector=MlpSpec())
    enc = FmriEncoder(config, rngs=nnx.Rngs(4))
    proj = enc.projectors["text"].layers[0]  # 8 -> 32, the first half of the hidden vector
    proj.kernel[...] = jnp.eye(8, 32)
    proj.bias[...] = jnp.zeros(32)
    attn, ff = enc.encoder.sublayers[0].block, enc.encoder.sublayers[1].block
    attn.to_out.kernel[...] = jnp.zeros_like(attn.to_out.kernel[...])
    ff.w2.kernel[...] = jnp.zeros_like(ff.w2.kernel[...])
    ff.w2.bias[...] = jnp.zeros_like(ff.w2.bias[...])
    enc.predictor.weights[...] = jnp.asarray(readout, jnp.float32)[None]
    x = np.zeros((10, 1, 8), np.float32)
    x[:3, 0, 0] = 1.0
    x[7:, 0, 1] = 1.0
    x[:, 0, 2] = 0.5
    return enc, {"text": x}


def test_planted_rois_draw_on_different_moments():
    enc, f = planted_model()
    rois = {"A": np.array([0, 1]), "B": np.array([2, 3])}
    prof = AttentionExtractor(enc).roi_scores(f, rois)
    for p in prof.values():
        assert p.shape == (10,) and (p >= 0).all() and p.sum() == pytest.approx(1.0, abs=1e-5)
    early_a, early_b = prof["A"][:3].sum(), prof["B"][:3].sum()
    late_a, late_b = prof["A"][7:].sum(), prof["B"][7:].sum()
    # Half of each profile is the residual path on the ROI's own tokens, the rest spread by attention.
    assert early_a > 0.5 and late_b > 0.5
    assert early_a > early_b + 0.4 and late_b > late_a + 0.4
    assert int(np.argmax(prof["A"])) < 3 <= 7 <= int(np.argmax(prof["B"]))


def test_jensen_shannon_by_hand():
    assert jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert jensen_shannon(np.array([0.2, 0.8]), np.array([0.2, 0.8])) == pytest.approx(0.0, abs=1e-15)
    by_hand = 0.5 * (0.5 * np.log2(0.5 / 0.75) + 0.5 * np.log2(0.5 / 0.25)) + 0.5 * np.log2(1 / 0.75)
    assert jensen_shannon(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == pytest.approx(by_hand, rel=1e-12)


def test_rois_reading_different_moments_are_more_distinct_than_random_rois():
    readout = np.zeros((64, 40), np.float32)
    readout[0, :20] = 1.0  # vertices 0-19 read the early moments, 20-39 the late ones
    readout[1, 20:] = 1.0
    enc, f = planted_model(readout)
    rois = {"A": np.arange(5), "B": np.arange(20, 25)}
    out = AttentionExtractor(enc).roi_distinctness(f, rois, n_permutations=99, seed=1)
    # random ROIs of 5 vertices mix early and late readers: their profiles are closer to each other
    assert out["p"] <= 0.05 and out["z"] > 2, out
    assert out["divergence"] > 2 * out["null_mean"]
    assert out["null"].shape == (99,) and set(out["pairs"]) == {"A|B"}
    assert out["pairs"]["A|B"]["divergence"] == pytest.approx(out["divergence"])


def test_rois_reading_the_same_moments_are_not_distinct():
    rng = np.random.default_rng(2)
    readout = np.zeros((64, 40), np.float32)
    readout[0] = readout[1] = rng.uniform(0.5, 2.0, 40)  # every vertex: the same direction, its own scale
    enc, f = planted_model(readout)
    rois = {"A": np.arange(10, 15), "B": np.arange(20, 25), "C": np.array([17, 30])}
    out = AttentionExtractor(enc).roi_distinctness(f, rois, n_permutations=20, vertex_pool=np.arange(10, 40))
    assert out["divergence"] < 1e-9 and out["null_mean"] < 1e-9, out


@pytest.mark.parametrize("kw,needle", [
    (dict(roi_indices={"A": [0]}), "at least 2 ROIs"),
    (dict(n_permutations=0), "n_permutations"),
    (dict(roi_indices={"A": np.arange(5), "B": np.arange(1, 6)}, vertex_pool=np.arange(6)), "vertex_pool: 6 vertices"),
    (dict(vertex_pool=np.arange(10, 40)), r"roi_indices\['A'\]: 5 of its vertices \(e.g. 0\) are not in vertex_pool"),
    (dict(vertex_pool=np.array([0, 99])), r"roi_indices\['vertex_pool'\]"),
])
def test_bad_distinctness_arguments_are_named(kw, needle):
    enc, f = planted_model(np.ones((64, 40), np.float32))
    args = {"roi_indices": {"A": np.arange(5), "B": np.arange(20, 25)}, **kw}
    with pytest.raises(ValueError, match=needle):
        AttentionExtractor(enc).roi_distinctness(f, **args)


@pytest.mark.parametrize("call,needle", [
    (lambda m: attention_to_roi_scores(m, {"a": [0]}), "token_weights: required"),
    (lambda m: attention_to_roi_scores(m, {"a": [0]}, {"b": np.ones(6)}), "no entry for roi 'a'"),
    (lambda m: attention_to_roi_scores(m, {"a": [0]}, {"a": -np.ones(6)}), "non-negative"),
    (lambda m: attention_to_roi_scores(m, {"a": [0]}, {"a": np.ones(5)}), r"token_weights\['a'\]"),
    (lambda m: attention_to_roi_scores([np.ones((2, 6, 5))], {"a": [0]}, {"a": np.ones(6)}), r"attn_maps\[0\]"),
    (lambda m: attention_to_roi_scores([], {"a": [0]}, {"a": np.ones(6)}), "at least one layer"),
    (lambda m: attention_to_roi_scores(m, {"a": [0]}, {"a": np.ones(6)}, n_blocks=4), "n_blocks"),
])
def test_bad_arguments_are_named(call, needle):
    maps = [softmax_maps(np.random.default_rng(0), 1, 2, 6)]
    with pytest.raises(ValueError, match=needle):
        call(maps)


def test_bad_roi_is_named():
    with pytest.raises(ValueError, match=r"roi_indices\['v9'\]"):
        AttentionExtractor(FmriEncoder(CONFIG, rngs=nnx.Rngs(0))).roi_token_weights(features(), {"v9": [30]})
