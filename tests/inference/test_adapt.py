"""SubjectAdapter and its ridge: equality with himalaya's RidgeCV and with the closed form computed in numpy,
a planted new subject recovered near its noise ceiling, nearest-neighbour choice, injection that leaves every
old subject bit-identical and makes the new id work in predict/streaming/attribution, alignment, the CLI
function, and errors naming the argument."""

import numpy as np
import pytest
from flax import nnx
from himalaya.backend import set_backend
from himalaya.ridge import RidgeCV

from nforge_jax.data.store import FeatureStore
from nforge_jax.inference.adapt import (DEFAULT_ALPHAS, LatentRidge, SubjectAdapter, align_fmri,
                                        calibration_latents, kfold_splits, run_adapt, run_latent)
from nforge_jax.inference.attribution import ModalityAttributor
from nforge_jax.inference.model import NForgeModel
from nforge_jax.inference.streaming import StreamingPredictor
from nforge_jax.model import EncoderConfig, FmriEncoder

set_backend("numpy")

DIMS = (("text", 2, 12), ("audio", 1, 8))
CONFIG = EncoderConfig(feature_dims=DIMS, n_outputs=60, n_output_timesteps=5, hidden=64, depth=1, heads=2,
                       low_rank_head=12, n_subjects=2)
WINDOW = CONFIG.window_steps  # 10 feature steps -> 5 rows


def make_model(config=CONFIG, seed=0):
    return NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(seed)), device="cpu")


def features(n_steps, seed=0, dims=DIMS):
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((n_steps, l, d)).astype(np.float32) for m, l, d in dims}


def ridge_data(seed=0, n=240, k=10, v=40):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * np.linspace(0.3, 2.0, k) + 0.7
    w = rng.standard_normal((k, v)) * rng.uniform(0.0, 0.5, v)
    y = z @ w + rng.standard_normal((n, v)) * rng.uniform(0.3, 1.5, v) + rng.standard_normal(v)
    return z, y


# ------------------------------------------------------------------------------------------------------------
# Ridge against independent references
@pytest.mark.parametrize("cv", ["kfold", "splits"])
def test_ridge_cv_equals_himalaya(cv):
    z, y = ridge_data()
    z_test, y_test = ridge_data(seed=1)
    if cv == "kfold":
        ours_cv, their_cv = 5, 5
    else:  # interleaved folds given explicitly, the same list to both
        idx = np.arange(len(z))
        ours_cv = [(idx[idx % 4 != f], idx[idx % 4 == f]) for f in range(4)]
        their_cv = ours_cv
    ours = LatentRidge(DEFAULT_ALPHAS, cv=ours_cv).fit(z, y)
    ref = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=True, cv=their_cv).fit(z, y)
    # The grid is wide enough that the choice varies over vertices (the test would be weak otherwise).
    assert len(np.unique(ours.best_alphas_)) >= 4
    np.testing.assert_allclose(ours.best_alphas_, ref.best_alphas_, rtol=1e-5)
    np.testing.assert_allclose(ours.cv_scores_, ref.cv_scores_, atol=1e-4)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-4)
    np.testing.assert_allclose(ours.predict(z_test), ref.predict(z_test), atol=1e-4)
    np.testing.assert_allclose(ours.score(z_test, y_test), ref.score(z_test, y_test), atol=1e-4)


def test_kfold_splits_are_contiguous_blocks():
    splits = kfold_splits(11, 3)
    assert [list(v) for _, v in splits] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert list(splits[1][0]) == [0, 1, 2, 3, 8, 9, 10]


@pytest.mark.parametrize("alpha", [0.0, 3.0, 250.0])
def test_fixed_alpha_equals_numpy_closed_form(alpha):
    z, y = ridge_data(seed=2)
    zc, yc = z - z.mean(0), y - y.mean(0)
    w = np.linalg.solve(zc.T @ zc + alpha * np.eye(z.shape[1]), zc.T @ yc)
    b = y.mean(0) - z.mean(0) @ w
    ours = LatentRidge(alpha).fit(z, y)
    scale = np.abs(w).max()
    np.testing.assert_allclose(ours.coef_, w, atol=1e-4 * scale)
    np.testing.assert_allclose(ours.intercept_, b, atol=1e-4 * max(1.0, np.abs(b).max()))
    np.testing.assert_array_equal(ours.best_alphas_, alpha)
    z_test, y_test = ridge_data(seed=3)
    pred = z_test @ w + b
    np.testing.assert_allclose(ours.predict(z_test), pred, atol=1e-4)
    r2 = 1 - ((y_test - pred) ** 2).sum(0) / ((y_test - y_test.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(ours.score(z_test, y_test), r2, atol=1e-4)
    r = [np.corrcoef(pred[:, v], y_test[:, v])[0, 1] for v in range(y.shape[1])]
    np.testing.assert_allclose(ours.correlation(z_test, y_test), r, atol=1e-4)


# ------------------------------------------------------------------------------------------------------------
# A planted new subject
def planted_subject(model, seed=5, noise=0.5, n_runs=3, n_steps=400):
    """Runs whose fMRI is latent @ W_true + b_true + noise (aligned rows), and the truth."""
    rng = np.random.default_rng(seed)
    r, v = model.config.bottleneck, model.config.n_outputs
    w_true = rng.standard_normal((r, v)).astype(np.float32)
    b_true = rng.standard_normal(v).astype(np.float32)
    runs, clean = [], []
    for i in range(n_runs):
        feats = features(n_steps, seed=100 * seed + i)
        z = run_latent(model, feats)
        s = z @ w_true + b_true
        y = s + noise * s.std(0) * rng.standard_normal(s.shape)
        runs.append({"features": feats, "fmri": y.astype(np.float32)})
        clean.append(s)
    return runs, clean, w_true, b_true


def test_run_latent_is_what_predict_features_reads_out():
    model = make_model()
    for n_steps in (WINDOW, 37):  # one window, and a ragged length with a padded tail
        f = features(n_steps, seed=n_steps)
        z = run_latent(model, f)
        w = np.asarray(model.encoder.predictor.weights[...])
        b = np.asarray(model.encoder.predictor.bias[...])
        for subject, row in ((None, 2), (1, 1)):
            pred = model.predict_features(f, subject=subject)
            assert z.shape == (pred.shape[0], CONFIG.bottleneck)
            np.testing.assert_allclose(z @ w[row] + b[row], pred, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("regularization", ["cv", 1.0])
def test_planted_subject_recovered_near_ceiling(regularization):
    model = make_model()
    runs, _, w_true, b_true = planted_subject(model)
    # Held-out run of the same subject (same W_true, b_true), new stimulus and noise.
    f_test = features(400, seed=999)
    z_test = run_latent(model, f_test)
    clean = z_test @ w_true + b_true
    y_test = clean + 0.5 * clean.std(0) * np.random.default_rng(7).standard_normal(clean.shape)
    test_runs = [{"features": f_test, "fmri": y_test.astype(np.float32)}]
    adapter = SubjectAdapter.from_ridge(model, runs, regularization=regularization)
    assert adapter.weights.shape == (CONFIG.bottleneck, CONFIG.n_outputs) and adapter.n_samples == 3 * 200
    r = adapter.score(model, test_runs)
    ceiling = np.array([np.corrcoef(clean[:, v], y_test[:, v])[0, 1] for v in range(CONFIG.n_outputs)])
    assert np.mean(r) > np.mean(ceiling) - 0.02
    assert (r > ceiling - 0.06).all()
    # The head itself is close to the truth where the latent is informative: predictions match the clean signal.
    corr_clean = [np.corrcoef(adapter.predict_latent(z_test)[:, v], clean[:, v])[0, 1] for v in range(60)]
    assert np.min(corr_clean) > 0.97
    if regularization == "cv":
        assert adapter.ridge.best_alphas_.shape == (CONFIG.n_outputs,)


@pytest.mark.parametrize("row", [1, 2])  # training subject 1, and the shared average row (index n_subjects)
def test_nearest_neighbor_picks_the_generating_row(row):
    model = make_model()
    w = np.asarray(model.encoder.predictor.weights[...])
    b = np.asarray(model.encoder.predictor.bias[...])
    rng = np.random.default_rng(row)
    runs = []
    for i in range(2):
        f = features(60, seed=10 + i)
        s = run_latent(model, f) @ w[row] + b[row]
        runs.append({"features": f, "fmri": (s + 0.3 * s.std(0) * rng.standard_normal(s.shape)).astype(np.float32)})
    adapter = SubjectAdapter.from_nearest_neighbor(model, runs)
    assert set(adapter.row_scores) == {0, 1, 2}
    assert adapter.source_row == row
    assert adapter.row_scores[row] > max(v for k, v in adapter.row_scores.items() if k != row)
    np.testing.assert_array_equal(adapter.weights, w[row])
    np.testing.assert_array_equal(adapter.bias, b[row])


# ------------------------------------------------------------------------------------------------------------
# Injection
def test_injection_keeps_old_subjects_and_adds_a_working_one(tmp_path):
    model = make_model()
    f = features(3 * WINDOW + 4, seed=3)
    before = {s: model.predict_features(f, subject=s) for s in (None, 0, 1)}
    runs, _, _, _ = planted_subject(model, n_runs=2, n_steps=200)
    adapter = SubjectAdapter.from_ridge(model, runs, regularization="cv")
    expected_new = adapter.predict_features(model, f)
    new_id = adapter.inject_into_model(model)
    assert new_id == 2
    assert model.config.n_subjects == 3 and model.encoder.predictor.weights.shape == (4, 12, 60)
    for s, pred in before.items():
        np.testing.assert_array_equal(model.predict_features(f, subject=s), pred)  # bit-identical
    np.testing.assert_allclose(model.predict_features(f, subject=new_id), expected_new, rtol=1e-4, atol=1e-4)
    assert model.metadata["adapted_subjects"][-1]["id"] == 2
    # A second subject goes after the first; the average row is still last and still the default.
    second = SubjectAdapter(adapter.weights * 0.5, adapter.bias)
    assert second.inject_into_model(model) == 3
    np.testing.assert_array_equal(model.predict_features(f), before[None])
    np.testing.assert_allclose(model.predict_features(f, subject=2), expected_new, rtol=1e-4, atol=1e-4)

    # Streaming with the new id: a window_trs = n_output_timesteps stream ends on predict_features' last row.
    window = features(WINDOW, seed=4)
    stream = StreamingPredictor.from_nforge_model(model, window_trs=CONFIG.n_output_timesteps, subject=new_id)
    out = None
    for t in range(CONFIG.n_output_timesteps):
        out = stream.push_frame({m: v[2 * t : 2 * t + 2] for m, v in window.items()})
    np.testing.assert_allclose(out, model.predict_features(window, subject=new_id)[-1], rtol=1e-4, atol=1e-4)
    # Attribution with the new id: the attributed prediction is the window's mean prediction for that subject.
    attributed = ModalityAttributor(model, method="ablation", subject=new_id).attribute(window)
    np.testing.assert_allclose(attributed["prediction"], model.predict_features(window, subject=new_id).mean(0),
                               rtol=1e-4, atol=1e-4)

    # Saved and reloaded, the new subject is still there.
    path = model.save(tmp_path / "adapted")
    loaded = NForgeModel.from_pretrained(path, device="cpu")
    assert loaded.config.n_subjects == 4
    np.testing.assert_allclose(loaded.predict_features(f, subject=new_id), expected_new, rtol=1e-4, atol=1e-4)


def test_injection_into_a_bare_encoder_without_bias_or_average_row():
    config = EncoderConfig(feature_dims=DIMS, n_outputs=60, n_output_timesteps=5, hidden=64, depth=1, heads=2,
                           low_rank_head=12, n_subjects=2, subject_dropout=None, subject_bias=False)
    encoder = FmriEncoder(config, rngs=nnx.Rngs(2))
    f = features(WINDOW, seed=6)
    batch = {m: v[None] for m, v in f.items()}
    before = [np.asarray(encoder(batch, np.array([s]))) for s in (0, 1)]
    rng = np.random.default_rng(0)
    adapter = SubjectAdapter(rng.standard_normal((12, 60)), rng.standard_normal(60))
    new_id = adapter.inject_into_model(encoder)
    assert new_id == 2 and encoder.config.n_subjects == 3 and encoder.config.subject_bias
    for s in (0, 1):
        np.testing.assert_array_equal(np.asarray(encoder(batch, np.array([s]))), before[s])
    z = np.asarray(encoder.latent(batch))[0]
    np.testing.assert_allclose(np.asarray(encoder(batch, np.array([new_id])))[0], z @ adapter.weights + adapter.bias,
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------------------
# Alignment and the CLI function
def test_align_fmri_applies_the_offset():
    fmri = np.arange(12, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)  # row value = sample index
    targets, mask = align_fmri(fmri, 9, offset_s=5.0)
    np.testing.assert_array_equal(targets[:7, 0], np.arange(5, 12))
    np.testing.assert_array_equal(mask, [True] * 7 + [False] * 2)
    np.testing.assert_array_equal(targets[7:], 0.0)
    targets, mask = align_fmri(fmri, 4, offset_s=5.0, fmri_start_s=7.0)  # recording began 7 s in
    np.testing.assert_array_equal(mask, [False, False, True, True])
    np.testing.assert_array_equal(targets[2:, 0], [0, 1])


def test_calibration_mask_drops_rows():
    model = make_model()
    f = features(2 * WINDOW, seed=8)
    y = np.random.default_rng(0).standard_normal((10, 60)).astype(np.float32)
    mask = np.arange(10) < 7
    y[~mask] = np.nan
    z, yy = calibration_latents(model, {"features": f, "fmri": y, "mask": mask})
    np.testing.assert_array_equal(z, run_latent(model, f)[:7])
    np.testing.assert_array_equal(yy, y[:7])


def test_run_adapt_writes_an_adapted_checkpoint(tmp_path):
    model = make_model()
    model.save(tmp_path / "base")
    runs, _, _, _ = planted_subject(model, n_runs=2, n_steps=120)
    store = FeatureStore.create(tmp_path / "store")
    rng = np.random.default_rng(1)
    for i, run in enumerate(runs):
        # Recorded fMRI: 5 s of lead-in pad, so recorded sample j + 5 belongs to prediction row j.
        recorded = np.concatenate([rng.standard_normal((5, 60)).astype(np.float32), run["fmri"]])
        store.write_timeline(f"New:run={i}", features=run["features"], fmri=recorded,
                             meta={"study": "New", "subject": "s1", "tr_s": 1.0})
    # float16 storage of the features changes the latent slightly; the fit must still be excellent.
    summary = run_adapt(tmp_path / "base", tmp_path / "store", ["New:run=0", "New:run=1"], tmp_path / "out",
                        regularization="cv", log=lambda *_: None)
    assert summary["id"] == 2 and summary["n_samples"] == 120
    adapted = NForgeModel.from_pretrained(tmp_path / "out", device="cpu")
    assert adapted.config.n_subjects == 3
    feats16 = {m: v.astype(np.float16).astype(np.float32) for m, v in runs[0]["features"].items()}
    r = [np.corrcoef(adapted.predict_features(feats16, subject=2)[:, v], runs[0]["fmri"][:, v])[0, 1]
         for v in range(60)]
    assert np.mean(r) > 0.8
    with pytest.raises(FileExistsError, match="out"):
        run_adapt(tmp_path / "base", tmp_path / "store", ["New:run=0"], tmp_path / "out", log=lambda *_: None)
    with pytest.raises(ValueError, match="timelines"):
        run_adapt(tmp_path / "base", tmp_path / "store", ["Nope"], tmp_path / "out2", log=lambda *_: None)


# ------------------------------------------------------------------------------------------------------------
# Errors
def test_errors_name_the_argument():
    model = make_model()
    z, y = ridge_data()
    with pytest.raises(ValueError, match=r"^Y: expected 240 rows"):
        LatentRidge(1.0).fit(z, y[:-1])
    with pytest.raises(ValueError, match=r"^Z: expected a 2-D array"):
        LatentRidge(1.0).fit(z[:, 0], y)
    with pytest.raises(ValueError, match=r"^Z: expected 10 columns"):
        LatentRidge(1.0).fit(z, y).predict(z[:, :5])
    with pytest.raises(ValueError, match=r"^alphas"):
        LatentRidge([1.0, -2.0])
    with pytest.raises(ValueError, match=r"^cv"):
        LatentRidge(DEFAULT_ALPHAS, cv=1).fit(z, y)
    with pytest.raises(ValueError, match=r"^Y: contains NaN"):
        LatentRidge(1.0).fit(z, np.where(y > 2, np.nan, y))
    f = features(WINDOW)
    with pytest.raises(ValueError, match=r"calibration\[0\]\['fmri'\]: expected shape \(5, 60\)"):
        SubjectAdapter.from_ridge(model, {"features": f, "fmri": np.zeros((6, 60))})
    with pytest.raises(ValueError, match=r"calibration\[1\]\['features'\]\['audio'\]|calibration\[1\]\['features'\]"):
        SubjectAdapter.from_ridge(model, [{"features": f, "fmri": np.zeros((5, 60))},
                                          {"features": {**f, "audio": np.zeros((WINDOW, 1, 9))},
                                           "fmri": np.zeros((5, 60))}])
    with pytest.raises(ValueError, match=r"calibration\[0\]: expected a dict with keys 'features' and 'fmri'"):
        SubjectAdapter.from_ridge(model, {"feats": f})
    with pytest.raises(ValueError, match=r"calibration\[0\]\['mask'\]"):
        SubjectAdapter.from_ridge(model, {"features": f, "fmri": np.zeros((5, 60)), "mask": np.ones(4, bool)})
    with pytest.raises(ValueError, match=r"^regularization"):
        SubjectAdapter.from_ridge(model, {"features": f, "fmri": np.zeros((5, 60))}, regularization="auto")
    with pytest.raises(ValueError, match=r"^model: its read-out maps 12 latent dims to 60"):
        SubjectAdapter(np.zeros((12, 59)), np.zeros(59)).inject_into_model(model)
    with pytest.raises(ValueError, match=r"^bias"):
        SubjectAdapter(np.zeros((12, 60)), np.zeros(59))
    with pytest.raises(ValueError, match=r"^model: expected an NForgeModel or an FmriEncoder"):
        SubjectAdapter(np.zeros((12, 60)), np.zeros(60)).inject_into_model("model")
    with pytest.raises(ValueError, match=r"^fmri_hz"):
        align_fmri(np.zeros((10, 3)), 5, fmri_hz=0.5)
