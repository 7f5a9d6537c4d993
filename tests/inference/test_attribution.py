"""ModalityAttributor: ablation by hand, integrated-gradient completeness and convergence, cross-checks of the
all-vertex shortcut against per-vertex gradients through the model's public call, ROI summaries, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nforge_jax import NForgeModel
from nforge_jax.inference.attribution import ModalityAttributor
from nforge_jax.model import EncoderConfig, FmriEncoder

DIMS = (("text", 2, 16), ("audio", 1, 8), ("video", 1, 12))
CONFIG = EncoderConfig(feature_dims=DIMS, n_outputs=40, n_output_timesteps=5, hidden=96, depth=1, heads=3,
                       low_rank_head=16, n_subjects=2)
T = CONFIG.window_steps


@pytest.fixture(scope="module")
def encoder():
    return FmriEncoder(CONFIG, rngs=nnx.Rngs(1))


def features(seed=0, batch=None, modalities=("text", "audio", "video")):
    rng = np.random.default_rng(seed)
    lead = (T,) if batch is None else (batch, T)
    return {m: rng.standard_normal(lead + (l, d)).astype(np.float32) for m, l, d in DIMS if m in modalities}


def mean_prediction(encoder, feats, ids=None):
    """Independent route: the model's public call, averaged over output time and batch."""
    batch = {m: jnp.asarray(v)[None] if v.ndim == 3 else jnp.asarray(v) for m, v in feats.items()}
    return np.asarray(encoder(batch, ids)).mean((0, 1))


def zero_projectors(encoder):
    for m in encoder.config.modalities:
        for layer in encoder.projectors[m].layers:
            layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
            layer.bias[...] = jnp.zeros_like(layer.bias[...])


@pytest.mark.parametrize("baseline", ["zeros", "missing"])
def test_ablation_matches_hand_computation(encoder, baseline):
    f = features()
    out = ModalityAttributor(encoder, method="ablation", baseline=baseline).attribute(f)
    full = mean_prediction(encoder, f)
    np.testing.assert_allclose(out["prediction"], full, rtol=1e-5, atol=1e-5)
    for m in ("text", "audio", "video"):
        if baseline == "zeros":
            ablated = mean_prediction(encoder, {**f, m: np.zeros_like(f[m])})
        else:
            ablated = mean_prediction(encoder, {k: v for k, v in f.items() if k != m})
        assert out[m].shape == (40,)
        np.testing.assert_allclose(out[m], full - ablated, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out[f"{m}_abs"], np.abs(full - ablated), rtol=1e-4, atol=1e-5)
    norm = sum(out[f"{m}_normalised"] for m in ("text", "audio", "video"))
    np.testing.assert_allclose(norm, 1.0, rtol=1e-5)


def test_ablation_of_a_batch_with_subjects(encoder):
    f = features(seed=1, batch=2, modalities=("text", "video"))
    ids = np.array([0, 1])
    out = ModalityAttributor(encoder).attribute({**f, "subject_ids": ids})
    full = mean_prediction(encoder, f, jnp.asarray(ids))
    np.testing.assert_allclose(out["text"], full - mean_prediction(encoder, {**f, "text": 0 * f["text"]}, ids),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["audio"], 0.0)  # absent in the input: nothing to attribute
    np.testing.assert_array_equal(out["audio_normalised"], 0.0)


@pytest.mark.parametrize("baseline", ["zeros", "missing"])
def test_integrated_gradients_completeness_converges(encoder, baseline):
    f = features(seed=2)
    full = mean_prediction(encoder, f)
    if baseline == "zeros":
        base = mean_prediction(encoder, {m: np.zeros_like(v) for m, v in f.items()})
    else:  # all modalities absent == all projections zero
        silent = FmriEncoder(CONFIG, rngs=nnx.Rngs(1))  # same weights as the fixture
        zero_projectors(silent)
        base = mean_prediction(silent, f)
    scale = np.abs(full - base).max()
    gaps = {}
    for n in (2, 32, 64):
        out = ModalityAttributor(encoder, method="gradient", n_steps=n, baseline=baseline).attribute(f)
        np.testing.assert_allclose(out["prediction"], full, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["baseline_prediction"], base, rtol=1e-4, atol=1e-5)
        total = out["text"] + out["audio"] + out["video"]
        gaps[n] = np.abs(total - (full - base)).max() / scale
        np.testing.assert_allclose(np.abs(out["completeness_gap"]).max() / scale, gaps[n], rtol=1e-3, atol=1e-6)
    assert gaps[2] > 2 * gaps[32]
    assert gaps[64] < 2e-3, gaps


def test_all_vertex_shortcut_equals_per_vertex_gradients(encoder):
    """IG per vertex by brute force: jax.grad of one vertex's prediction through encoder(...) on the path."""
    f = features(seed=3)
    n = 8
    out = ModalityAttributor(encoder, method="gradient", n_steps=n).attribute(f)
    alphas = (np.arange(n) + 0.5) / n
    x = {m: jnp.asarray(v)[None] for m, v in f.items()}
    for v in (0, 17, 39):
        def vertex(feats):
            return encoder(feats)[0, :, v].mean()

        grads = [jax.grad(vertex)({m: a * x[m] for m in x}) for a in alphas]
        for m in x:
            ig = float(sum((x[m] * g[m]).sum() for g in grads) / n)
            np.testing.assert_allclose(out[m][v], ig, rtol=2e-3, atol=2e-5)


def test_timesteps_sum_to_the_vertex_scores(encoder):
    f = features(seed=4)
    rois = {"a": np.array([1, 5, 9]), "b": np.arange(20, 40)}
    att = ModalityAttributor(encoder, method="gradient", n_steps=6, roi_indices=rois)
    per_vertex = att.attribute(f)
    steps = att.attribute_timesteps(f, "a")
    for m in ("text", "audio", "video"):
        assert steps[m].shape == (T,)
        assert steps[f"{m}_features"].shape == f[m].shape
        np.testing.assert_allclose(steps[f"{m}_features"].sum((1, 2)), steps[m], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(steps[m].sum(), per_vertex[m][rois["a"]].mean(), rtol=2e-3, atol=2e-5)
    full, base = mean_prediction(encoder, f), mean_prediction(encoder, {m: 0 * v for m, v in f.items()})
    np.testing.assert_allclose(steps["total"], (full - base)[rois["a"]].mean(), rtol=1e-4, atol=1e-5)
    missing = ModalityAttributor(encoder, method="gradient", n_steps=32, baseline="missing").attribute_timesteps(f, [3])
    assert missing["text"].shape == (T,) and "text_features" not in missing
    assert abs(missing["completeness_gap"]) < 5e-3 * max(abs(missing["total"]), 1e-3)
    batch = att.attribute_timesteps(features(seed=5, batch=2), np.array([3, 4]))
    assert batch["audio"].shape == (2, T)


def test_roi_summaries(encoder):
    rois = {"early": np.array([0, 1, 2]), "late": np.array([38, 39])}
    out = ModalityAttributor(encoder, roi_indices=rois).attribute(features(seed=6))
    for m in ("text", "audio", "video"):
        assert set(out[f"{m}_roi"]) == {"early", "late"}
        assert out[f"{m}_roi"]["early"] == pytest.approx((out[m][0] + out[m][1] + out[m][2]) / 3, rel=1e-5)
        assert out[f"{m}_roi_abs"]["late"] == pytest.approx((abs(out[m][38]) + abs(out[m][39])) / 2, rel=1e-5)


@pytest.mark.parametrize("method", ["ablation", "gradient"])
def test_zeroed_text_projector_gets_no_text_attribution(method):
    encoder = FmriEncoder(CONFIG, rngs=nnx.Rngs(2))
    layer = encoder.projectors["text"].layers[0]
    layer.kernel[...] = jnp.zeros_like(layer.kernel[...])
    model = NForgeModel(encoder, device="cpu")  # NForgeModel works as well as a bare encoder
    out = ModalityAttributor(model, method=method, n_steps=4).attribute(features(seed=7))
    assert np.abs(out["text"]).max() < 1e-6
    assert np.abs(out["audio"]).max() > 1e-3 and np.abs(out["video"]).max() > 1e-3


@pytest.mark.parametrize("kw,needle", [
    (dict(method="shap"), "method"), (dict(baseline="noise"), "baseline"), (dict(n_steps=0), "n_steps"),
    (dict(roi_indices={"v1": np.array([0, 40])}), r"roi_indices\['v1'\]"),
    (dict(roi_indices={"v1": np.array([], int)}), r"roi_indices\['v1'\]"), (dict(subject=5), "subject"),
])
def test_bad_arguments_are_named(encoder, kw, needle):
    with pytest.raises(ValueError, match=needle):
        ModalityAttributor(encoder, **kw)


@pytest.mark.parametrize("inputs,needle", [
    ({"smell": np.zeros((T, 1, 8))}, "unknown modality 'smell'"),
    ({"audio": np.zeros((T, 1, 7))}, r"inputs\['audio'\]"),
    ({"audio": np.zeros((T, 1, 8)), "text": np.zeros((T + 1, 2, 16))}, r"inputs\['text'\]"),
])
def test_bad_inputs_are_named(encoder, inputs, needle):
    with pytest.raises(ValueError, match=needle):
        ModalityAttributor(encoder).attribute(inputs)
    with pytest.raises(ValueError, match="unknown roi"):
        ModalityAttributor(encoder).attribute_timesteps(features(), "v1")
