"""ModalityAttributor: ablation by hand, integrated-gradient completeness and convergence, cross-checks of the
all-vertex shortcut against per-vertex gradients through the model's public call, ROI summaries, errors;
time-resolved decomposition and variance shares: completeness, R² from the model's own predictions, himalaya's
split R², a planted toy whose modalities drive separate vertex sets, a synthetic store."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nforge_jax import NForgeModel
from nforge_jax.inference.attribution import ModalityAttributor, VarianceSplit, store_variance_shares
from nforge_jax.inference.predictor import Predictor
from nforge_jax.model import EncoderConfig, FmriEncoder, MlpSpec

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


def test_a_call_may_ask_for_the_average_subject_of_an_attributor_made_for_another(encoder):
    f = features(seed=3)
    for_one = ModalityAttributor(encoder, subject=1)
    average, one = mean_prediction(encoder, f), mean_prediction(encoder, f, jnp.asarray([1]))
    assert np.abs(average - one).max() > 1e-3  # the two heads differ, so the check below can fail
    np.testing.assert_allclose(for_one.attribute(f)["prediction"], one, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(for_one.attribute(f, subject="average")["prediction"], average, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(for_one.attribute(f, subject=None)["prediction"], one, rtol=1e-5, atol=1e-5)


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


# Time-resolved decomposition and variance shares ---------------------------------------------------------------
MODS = ("text", "audio", "video")


def timeline(seed=0, n_steps=2 * T + 7, modalities=MODS):
    """A timeline of 2 whole windows and a partial one, slowly varying (as stimulus features are)."""
    rng = np.random.default_rng(seed)
    out = {}
    for m, l, d in DIMS:
        if m in modalities:
            x = np.cumsum(rng.standard_normal((n_steps, l, d)), axis=0) / 3
            out[m] = (x + rng.standard_normal((n_steps, l, d))).astype(np.float32)
    return out


def centred(a):
    return a - a.mean(0)


@pytest.fixture(scope="module")
def att(encoder):
    """One attributor (one compilation per input shape) for the tests of the time-resolved path."""
    return ModalityAttributor(encoder, n_steps=6)


@pytest.mark.parametrize("baseline", ["zeros", "missing"])
def test_decomposition_is_complete_and_converges(encoder, att, baseline):
    f = timeline(seed=8)
    core = Predictor(encoder)
    full = core.predict(f, None, 4)
    if baseline == "zeros":
        base = core.predict({m: 0 * v for m, v in f.items()}, None, 4)
    else:  # every modality absent: no input at all but the time embedding, as with zeroed projectors
        silent = FmriEncoder(CONFIG, rngs=nnx.Rngs(1))
        zero_projectors(silent)
        base = Predictor(silent).predict(f, None, 4)
    scale = np.abs(full - base).max()
    gaps = {}
    for n in (2, 6):
        same = n == att.n_steps and baseline == att.baseline
        out = (att if same else ModalityAttributor(encoder, n_steps=n, baseline=baseline)).decompose(f)
        assert out["prediction"].shape == full.shape == (-(-len(f["text"]) // 2), 40)
        np.testing.assert_allclose(out["prediction"], full, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["baseline"], base, rtol=1e-4, atol=1e-5)
        total = sum(out[m] for m in MODS)
        gaps[n] = np.abs(total - (full - base)).max() / scale
        np.testing.assert_allclose(np.abs(out["completeness_gap"]).max() / scale, gaps[n], rtol=1e-2, atol=1e-6)
    assert gaps[2] > 10 * gaps[6] and gaps[6] < 1e-3, gaps


def test_time_mean_of_the_decomposition_is_the_time_mean_attribution(encoder, att):
    f = features(seed=9)  # one whole window: its rows' mean is the quantity `attribute` explains
    per_row = att.decompose(f)
    mean = ModalityAttributor(encoder, method="gradient", n_steps=32).attribute(f)
    for m in MODS:
        np.testing.assert_allclose(per_row[m].mean(0), mean[m], rtol=1e-3, atol=2e-5)


def test_absent_modality_has_no_part_and_no_share(att):
    f = timeline(seed=10, modalities=("text", "video"))
    assert np.abs(att.decompose(f)["audio"]).max() == 0.0
    shares = att.variance_shares(f)
    np.testing.assert_array_equal(shares["audio"], 0.0)


def test_shares_sum_to_one_and_to_the_models_r2(encoder, att):
    f = timeline(seed=11)
    pred = Predictor(encoder).predict(f, 1, 4)  # training subject 1's read-out
    rng = np.random.default_rng(0)
    y = 0.5 * pred + rng.standard_normal(pred.shape).astype(np.float32) + 3.0  # an offset the centring removes
    own = att.variance_shares(f, subject=1)
    assert own["measure"] == "variance" and own["n_rows"] == len(pred)
    np.testing.assert_allclose(own["total"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(sum(own[m] for m in MODS) + own["baseline"], 1.0, rtol=1e-5)
    split = att.variance_shares(f, fmri=y, subject=1)
    r2 = 1 - ((centred(y) - centred(pred)) ** 2).sum(0) / (centred(y) ** 2).sum(0)
    np.testing.assert_allclose(split["total"], r2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sum(split[m] for m in MODS) + split["baseline"], r2, rtol=1e-4, atol=1e-5)
    keep = np.arange(len(pred)) % 3 > 0
    part = att.variance_shares(f, fmri=y, subject=1, rows=keep)
    r2_part = 1 - ((centred(y[keep]) - centred(pred[keep])) ** 2).sum(0) / (centred(y[keep]) ** 2).sum(0)
    np.testing.assert_allclose(part["total"], r2_part, rtol=1e-4, atol=1e-5)


def test_split_equals_himalaya_on_the_models_parts(att):
    from himalaya.scoring import r2_score_split

    f = timeline(seed=12)
    parts = att.decompose(f)
    y = np.random.default_rng(1).standard_normal(parts["prediction"].shape)
    baseline = parts["prediction"] - sum(parts[m] for m in MODS)
    stacked = np.stack([baseline] + [parts[m] for m in MODS]).astype(np.float64)
    expected = r2_score_split(centred(y), stacked - stacked.mean(1, keepdims=True))
    got = att.variance_shares(f, fmri=y)
    for k, name in enumerate(("baseline",) + MODS):
        np.testing.assert_allclose(got[name], expected[k], rtol=1e-3, atol=1e-5)


def test_split_equals_himalaya_for_an_exact_linear_decomposition(monkeypatch):
    """Latent parts that add up exactly (a linear model), two timelines pooled, in several chunks."""
    from himalaya.scoring import r2_score_split

    monkeypatch.setattr(VarianceSplit, "_CHUNK_VALUES", 4 * 4 * 6)  # 4 parts x 6 vertices: 4 rows per chunk
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 6))
    split, pooled_y, pooled_parts = VarianceSplit(MODS, 6), [], []
    for n_rows in (13, 9):
        ig = rng.standard_normal((n_rows, 3, 5))
        z_b = rng.standard_normal((n_rows, 5)) + 1.0
        latents = np.concatenate([(z_b + ig.sum(1))[:, None], z_b[:, None], ig], axis=1)  # z(x), z(b), IG
        y = rng.standard_normal((n_rows, 6)) + 2.0
        split.add(list(MODS), latents, w, target=y)
        parts = np.stack([z_b @ w] + [ig[:, k] @ w for k in range(3)])
        pooled_parts.append(parts - parts.mean(1, keepdims=True))
        pooled_y.append(centred(y))
    got = split.result()
    expected = r2_score_split(np.concatenate(pooled_y), np.concatenate(pooled_parts, axis=1))
    for k, name in enumerate(("baseline",) + MODS):
        np.testing.assert_allclose(got[name], expected[k], rtol=1e-6)  # float32 results
    assert got["completeness_gap"] < 1e-12 and got["n_rows"] == 22


def planted_encoder():
    """Each modality's features land in its own block of the hidden state (a constant projector bias keeps the
    final ScaleNorm nearly linear); sublayers are silenced; vertex set S_m reads only block m."""
    dims = tuple((m, 1, 4) for m in MODS)
    config = EncoderConfig(feature_dims=dims, n_outputs=30, n_output_timesteps=5, hidden=96, depth=1, heads=3,
                           low_rank_head=None, n_subjects=0, subject_bias=False, time_pos_embedding=False,
                           projector=MlpSpec())
    enc = FmriEncoder(config, rngs=nnx.Rngs(5))
    for m in MODS:
        proj = enc.projectors[m].layers[0]  # 4 -> 32
        proj.kernel[...] = jnp.eye(4, 32)
        proj.bias[...] = jnp.asarray([0.0] * 4 + [3.0] * 4 + [0.0] * 24, jnp.float32)
    attn, ff = enc.encoder.sublayers[0].block, enc.encoder.sublayers[1].block
    attn.to_out.kernel[...] = jnp.zeros_like(attn.to_out.kernel[...])
    ff.w2.kernel[...] = jnp.zeros_like(ff.w2.kernel[...])
    ff.w2.bias[...] = jnp.zeros_like(ff.w2.bias[...])
    rng = np.random.default_rng(3)
    w = np.zeros((1, 96, 30), np.float32)
    for k in range(3):
        w[0, 32 * k: 32 * k + 4, 10 * k: 10 * k + 10] = rng.standard_normal((4, 10))
    enc.predictor.weights[...] = jnp.asarray(w)
    return enc


def test_dominant_share_recovers_the_planted_map():
    enc = planted_encoder()
    rng = np.random.default_rng(4)
    f = {m: np.cumsum(rng.standard_normal((60, 1, 4)), 0).astype(np.float32) / 4 for m in MODS}
    att = ModalityAttributor(enc, n_steps=8)
    own = att.variance_shares(f)
    pred = att.decompose(f)["prediction"]
    measured = att.variance_shares(f, fmri=pred + 0.3 * rng.standard_normal(pred.shape))
    planted = np.repeat(np.arange(3), 10)
    for shares in (own, measured):
        stack = np.stack([shares[m] for m in MODS])
        np.testing.assert_array_equal(stack.argmax(0), planted)
        assert (stack[planted, np.arange(30)] > 0.8 * shares["total"]).all()


def test_store_shares_are_the_r2_of_the_aligned_predictions(tmp_path):
    from nforge_jax.data.splits import make_subjects_index
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.data.synthetic import make_synthetic_store
    from nforge_jax.data.timebase import align_targets

    dims = {"text": (1, 8), "audio": (1, 4), "video": (1, 6)}
    make_synthetic_store(tmp_path / "s", n_subjects=2, n_timelines=1, duration_s=30, feature_dims=dims,
                         latent_dims={m: 2 for m in dims}, seed=3)
    store = FeatureStore.open(tmp_path / "s")
    config = EncoderConfig(feature_dims=tuple((m, *d) for m, d in dims.items()), n_outputs=20484,
                           n_output_timesteps=5, hidden=96, depth=1, heads=3, low_rank_head=8, n_subjects=2)
    enc = FmriEncoder(config, rngs=nnx.Rngs(6))
    index = make_subjects_index(store)
    names = store.timelines
    got = store_variance_shares(enc, store, names, subject=index, n_steps=4)
    core, ys, preds = Predictor(enc), [], []
    for name in names:
        meta = store.meta(name)
        feats = {m: np.asarray(store.features(name, m), np.float32) for m in dims}
        pred = core.predict(feats, index[f"Synthetic/{meta['subject']}"], 4)
        y, keep = align_targets(np.asarray(store.fmri(name)), len(pred), offset_s=meta["offset_s"])
        ys.append(centred(y[keep]))
        preds.append(centred(pred[keep]))
    y, pred = np.concatenate(ys), np.concatenate(preds)
    r2 = 1 - ((y - pred) ** 2).sum(0) / (y ** 2).sum(0)
    assert got["n_rows"] == len(y) < 2 * 30  # the last 5 s have no BOLD sample 5 s later
    np.testing.assert_allclose(got["total"], r2, rtol=1e-3, atol=1e-5)
    own = store_variance_shares(enc, store, names[:1], subject=0, fmri=False, n_steps=4)
    np.testing.assert_allclose(own["total"], 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="no entry for 'Synthetic/sub-0"):
        store_variance_shares(enc, store, names, subject={"Synthetic/x": 0})
    with pytest.raises(ValueError, match="timelines"):
        store_variance_shares(enc, store, ["nope"])


@pytest.mark.parametrize("call,needle", [
    (lambda a, f: a.variance_shares(f, fmri=np.zeros((3, 40))), r"fmri: expected \(19, 40\)"),
    (lambda a, f: a.variance_shares(f, fmri=np.full((19, 40), np.nan)), "fmri: row 0"),
    (lambda a, f: a.variance_shares(f, rows=np.ones(19)), "rows: expected a boolean mask"),
    (lambda a, f: a.variance_shares(f, rows=np.arange(19) == 0), "at least 2"),
    (lambda a, f: a.variance_shares({**f, "audio": f["audio"][:-1]}), r"features\['audio'\]"),
    (lambda a, f: a.decompose(f, subject=7), "subject"),
    (lambda a, f: a.decompose(f, batch_size=0), "batch_size"),
])
def test_bad_timeline_inputs_are_named(att, call, needle):
    with pytest.raises(ValueError, match=needle):  # refused before any computation
        call(att, timeline(n_steps=37))
