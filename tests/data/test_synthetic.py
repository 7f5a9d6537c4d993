"""Synthetic data with a planted encoding: shapes, determinism, the analytic noise ceiling, the maps."""

import numpy as np
import pytest

from nforge_jax.data import fsaverage as fs
from nforge_jax.data import synthetic as syn
from nforge_jax.data.store import FeatureStore

V = 20484


@pytest.fixture(scope="module")
def small():
    truth, runs = syn.generate_synthetic(n_subjects=2, n_timelines=2, duration_s=60, seed=3)
    return truth, list(runs)


@pytest.fixture(scope="module")
def long_run():
    truth, runs = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=600, seed=5)
    return truth, next(runs)


def pearson_columns(a, b):
    a = a - a.mean(0)
    b = b - b.mean(0)
    return (a * b).sum(0) / np.sqrt((a * a).sum(0) * (b * b).sum(0))


def test_shapes_and_dtypes(small):
    truth, runs = small
    assert [r.name for r in runs] == [f"Synthetic:stimulus=stim-0{i},subject=sub-0{s}" for i in (1, 2) for s in (1, 2)]
    for run in runs:
        assert {m: f.shape for m, f in run.features.items()} == {
            "text": (120, 2, 64), "audio": (120, 2, 32), "video": (120, 2, 48)}
        assert all(f.dtype == np.float32 and np.isfinite(f).all() for f in run.features.values())
        assert run.fmri.shape == (60, V) and run.fmri.dtype == np.float32
        assert run.signal.shape == (60, V) and run.signal.dtype == np.float32
        np.testing.assert_allclose(run.fmri.mean(0), 0, atol=1e-4)  # z-scored per run
        np.testing.assert_allclose(run.fmri.std(0), 1, atol=1e-3)
        assert run.meta["offset_s"] == 5.0 and run.meta["fmri_hz"] == 1.0 and run.meta["feature_hz"] == 2.0
    assert truth.modality_weights.shape == (3, V) and truth.noise_ceiling.shape == (V,)
    np.testing.assert_allclose(truth.modality_weights.sum(0), 1, rtol=1e-5)
    assert truth.hrf.shape == (64,) and truth.readouts.shape == (2, 12, V)
    assert truth.cortex_mask.sum() == V - 868 - 874
    assert (truth.noise_ceiling[~truth.cortex_mask] == 0).all()
    c = truth.noise_ceiling[truth.cortex_mask]
    assert 0.3 < c.min() and c.max() < 0.97 and 0.45 < np.median(c) < 0.7
    # Same stimulus -> same features for both subjects; different noise and readout -> different fMRI.
    np.testing.assert_array_equal(runs[0].features["video"], runs[1].features["video"])
    assert not np.allclose(runs[0].fmri, runs[1].fmri)
    assert not np.allclose(runs[0].features["video"], runs[2].features["video"])


def test_feature_structure(small):
    _, runs = small
    f = runs[0].features
    # text: word events, so some 2 Hz bins (pauses) are exactly zero, most are not.
    silent = (f["text"] == 0).all(axis=(1, 2)).mean()
    assert 0.02 < silent < 0.6
    # video: cuts are rare jumps; within a shot consecutive frames are close.
    jumps = np.linalg.norm(np.diff(f["video"][:, 1], axis=0), axis=1)
    assert np.median(jumps) < 0.5 * np.percentile(jumps, 95)
    # audio: temporally smooth (lag-1 autocorrelation of the deeper layer is high).
    a = f["audio"][:, 1] - f["audio"][:, 1].mean(0)
    assert (a[1:] * a[:-1]).sum() / (a * a).sum() > 0.6


def test_deterministic_and_independent_of_dataset_size(small):
    truth, runs = small
    truth2, runs2 = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=60, seed=3)
    first = next(runs2)
    np.testing.assert_array_equal(first.fmri, runs[0].fmri)
    for m in syn.MODALITIES:
        np.testing.assert_array_equal(first.features[m], runs[0].features[m])
    np.testing.assert_array_equal(truth2.modality_weights, truth.modality_weights)
    _, other = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=60, seed=4)
    assert not np.allclose(next(other).features["text"], first.features["text"])


def test_hrf_is_glover_and_peaks_five_seconds_after(small):
    from nilearn.glm.first_level import glover_hrf as nilearn_glover

    # nilearn evaluates the same double gamma shifted by one sample (loc=dt) on a 10 ms grid.
    ref = nilearn_glover(0.5, oversampling=50, time_length=32.0)
    dt = 0.01
    ts = np.linspace(0, 32.0, len(ref))
    np.testing.assert_allclose(syn.glover_hrf(ts - dt), ref, atol=1e-6)
    truth, _ = small
    assert np.argmax(truth.hrf) * syn.HRF_DT == 5.0
    # An isolated video frame at t = 20 s moves the latent BOLD most at fMRI sample 25 (5 s later).
    feats = {m: np.zeros((120, L, D), np.float32) for m, (L, D) in syn.DEFAULT_FEATURE_DIMS.items()}
    feats["video"][40] = 1.0
    lat = truth.latents(feats)
    assert lat.shape == (60, 12)
    assert np.abs(lat[:20]).max() == 0
    assert np.argmax(np.abs(lat[:, 8:]).sum(1)) == 25


def test_noise_ceiling_matches_empirical_correlation(long_run):
    truth, run = long_run
    r = pearson_columns(run.signal.astype(np.float64), run.fmri.astype(np.float64))
    c = truth.noise_ceiling.astype(np.float64)
    m = truth.cortex_mask
    n = run.fmri.shape[0]
    # Sampling sd of r is about (1 - c^2)/sqrt(n), a little more with AR(1) noise.
    sd = (1 - c[m] ** 2) / np.sqrt(n)
    assert abs(np.mean(r[m] - c[m])) < 0.01
    assert np.sqrt(np.mean((r[m] - c[m]) ** 2)) < 2.0 * np.sqrt(np.mean(sd**2))
    for lo, hi in ((0.3, 0.5), (0.5, 0.7), (0.7, 1.0)):
        sel = m & (c >= lo) & (c < hi)
        assert sel.sum() > 500
        assert abs(r[sel].mean() - c[sel].mean()) < 0.02
    assert abs(r[~m].mean()) < 0.02  # the medial wall is noise only
    # The target splits into the signal and a residual whose power ratio is the planted SNR.
    y, s = run.fmri.astype(np.float64), run.signal.astype(np.float64)
    beta = (y * s).mean(0) / (s * s).mean(0)
    resid = y - beta * s
    emp_snr = beta[m] ** 2 * (s[:, m] ** 2).mean(0) / (resid[:, m] ** 2).mean(0)
    assert abs(np.median(np.log(emp_snr / truth.snr[m]))) < 0.05
    # The signal and the perfect prediction are the same thing.
    np.testing.assert_allclose(truth.noiseless_bold(run.features, 0), run.signal, atol=1e-5)


def test_noise_level_moves_the_ceiling():
    t1, _ = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=20, noise=1.0, seed=2)
    t2, runs = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=20, noise=0.5, seed=2)
    m = t1.cortex_mask
    np.testing.assert_allclose(t2.snr[m], 4 * t1.snr[m], rtol=1e-5)
    assert (t2.noise_ceiling[m] > t1.noise_ceiling[m]).all()
    t0, runs0 = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=20, noise=0.0, seed=2)
    run = next(runs0)
    assert (t0.noise_ceiling[m] == 1).all()
    np.testing.assert_allclose(run.fmri[:, m], run.signal[:, m], atol=1e-4)


def test_modality_map_is_smooth(small):
    truth, _ = small
    a = fs.mesh_adjacency()
    deg = np.asarray(a.sum(1)).ravel()
    rng = np.random.default_rng(0)
    for w in truth.modality_weights:
        nb_mean = (a @ w) / deg
        assert np.corrcoef(w, nb_mean)[0, 1] > 0.95
        shuffled = rng.permutation(w)
        assert np.corrcoef(shuffled, (a @ shuffled) / deg)[0, 1] < 0.1  # the check can fail


def test_modality_map_matches_documented_regions(small):
    truth, _ = small
    w = truth.modality_weights  # rows: text, audio, video
    expected = {"V1": 2, "MT": 2, "FFC": 2, "A1": 1, "PBelt": 1, "44": 0, "45": 0, "STSdp": 0}
    for area, row in expected.items():
        for hemi in ("L_", "R_"):
            mean = w[:, fs.hcp_roi_indices(hemi + area)].mean(1)
            assert mean.argmax() == row and mean[row] > 0.6, (hemi + area, mean)
    # Away from the anchors (e.g. motor cortex) no modality dominates.
    mean = w[:, fs.hcp_roi_indices("4")].mean(1)
    assert mean.max() < 0.6
    # The anchors also carry the best signal.
    c = truth.noise_ceiling
    assert c[fs.hcp_roi_indices("V1")].mean() > c[fs.hcp_roi_indices("4")].mean() + 0.15


def test_subjects_share_most_of_their_readout(small):
    truth, _ = small
    r0, r1 = truth.readouts[0].ravel(), truth.readouts[1].ravel()
    corr = np.corrcoef(r0, r1)[0, 1]
    assert 0.8 < corr < 0.99  # subject_variability=0.1


def test_random_map_needs_no_atlas(monkeypatch):
    def no_atlas(*a, **k):
        raise fs.AtlasNotFoundError("no atlas")

    monkeypatch.setattr(fs, "get_hcp_labels", no_atlas)
    with pytest.raises(fs.AtlasNotFoundError):
        syn.generate_synthetic(duration_s=20, n_subjects=1, n_timelines=1)
    truth, runs = syn.generate_synthetic(duration_s=20, n_subjects=1, n_timelines=1, modality_map="random")
    assert truth.cortex_mask.all() and next(runs).fmri.shape == (20, V)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"duration_s": 5}, "duration_s: expected"),
        ({"duration_s": 30.5}, "duration_s: expected whole seconds"),
        ({"feature_dims": {"txt": (2, 8)}}, r"feature_dims: unknown modalities \['txt'\]"),
        ({"feature_dims": {"text": (2,)}}, r"feature_dims\['text'\]: expected \(n_layers, dim\)"),
        ({"latent_dims": {"audio": 0}}, r"latent_dims\['audio'\]: expected an int in 1..64"),
        ({"noise": -1.0}, "noise: expected"),
        ({"n_subjects": 0}, "n_subjects: expected an int >= 1"),
        ({"modality_map": "yeo"}, "modality_map: expected 'atlas' or 'random'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        syn.generate_synthetic(**kwargs)


def test_make_synthetic_store(tmp_path):
    path = tmp_path / "store"
    dims = {"text": (2, 16), "audio": (1, 8), "video": (2, 12)}
    truth = syn.make_synthetic_store(path, n_subjects=2, n_timelines=2, duration_s=40, feature_dims=dims,
                                     latent_dims={"text": 3, "audio": 2, "video": 3}, seed=11)
    _, runs = syn.generate_synthetic(n_subjects=2, n_timelines=2, duration_s=40, feature_dims=dims,
                                     latent_dims={"text": 3, "audio": 2, "video": 3}, seed=11)
    store = FeatureStore.open(path)
    assert store.verify() == []
    assert store.timelines == sorted(t["name"] for t in truth.timelines)
    for run in runs:
        np.testing.assert_array_equal(np.asarray(store.fmri(run.name)), run.fmri)
        for m in syn.MODALITIES:
            stored = np.asarray(store.features(run.name, m))
            assert stored.dtype == np.float16 and stored.shape == (80, *dims[m])
            np.testing.assert_allclose(stored, run.features[m], rtol=1e-3, atol=1e-3)
        meta = store.manifest(run.name)["meta"]
        assert (meta["study"], meta["subject"], meta["offset_s"], meta["tr_s"]) == ("Synthetic", run.subject, 5.0, 1.0)
        assert meta["stimulus"] == f"stim-0{run.stimulus + 1}"
    loaded = syn.SyntheticTruth.load(path)
    for k in ("modality_weights", "noise_ceiling", "snr", "cortex_mask", "hrf", "readouts"):
        np.testing.assert_array_equal(getattr(loaded, k), getattr(truth, k))
    assert loaded.timelines == truth.timelines and loaded.config == truth.config
    # The perfect prediction from the stored (float16) features tracks the stored target at the ceiling.
    name = truth.timelines[3]["name"]
    feats = {m: np.asarray(store.features(name, m), np.float32) for m in syn.MODALITIES}
    pred = loaded.noiseless_bold(feats, "sub-02")
    r = pearson_columns(pred.astype(np.float64), np.asarray(store.fmri(name), np.float64))
    m = truth.cortex_mask
    assert abs(r[m].mean() - truth.noise_ceiling[m].mean()) < 0.05
    with pytest.raises(Exception, match="not empty|already"):
        syn.make_synthetic_store(path, n_subjects=1, n_timelines=1, duration_s=20)


def test_truth_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"x\.npz: missing arrays"):
        syn.SyntheticTruth.load(p)


def test_store_windows_pair_features_with_bold_five_seconds_later(tmp_path):
    from nforge_jax.data import splits, windows

    path = tmp_path / "store"
    truth = syn.make_synthetic_store(path, n_subjects=1, n_timelines=1, duration_s=120, noise=0.0, seed=1)
    store = FeatureStore.open(path)
    name = store.timelines[0]
    src = windows.WindowSource(store, [name], subjects_index=splits.make_subjects_index(store))
    target = src[0]["fmri"][:, truth.cortex_mask]
    feats = {m: np.asarray(store.features(name, m), np.float32) for m in syn.MODALITIES}
    bold = truth.noiseless_bold(feats, 0)[:, truth.cortex_mask]
    r = {lag: pearson_columns(bold[lag : lag + 100].astype(np.float64), target.astype(np.float64)).mean()
         for lag in (3, 5, 7)}
    assert r[5] > 0.999 and r[3] < 0.95 and r[7] < 0.95


def test_repeats_share_signal_with_independent_noise():
    base_truth, base_runs = syn.generate_synthetic(n_subjects=1, n_timelines=2, duration_s=60, seed=3)
    truth, runs = syn.generate_synthetic(n_subjects=1, n_timelines=2, duration_s=60, seed=3, repeats={1: 3})
    base_runs, runs = list(base_runs), list(runs)
    assert [r.name for r in runs] == ["Synthetic:stimulus=stim-01,subject=sub-01",
                                      "Synthetic:repeat=1,stimulus=stim-02,subject=sub-01",
                                      "Synthetic:repeat=2,stimulus=stim-02,subject=sub-01",
                                      "Synthetic:repeat=3,stimulus=stim-02,subject=sub-01"]
    assert [r.meta.get("repeat") for r in runs] == [None, 1, 2, 3]
    assert [t.get("repeat") for t in truth.timelines] == [None, 1, 2, 3]
    # the single presentation is unchanged, and repeat 1 is the run a single presentation would be
    np.testing.assert_array_equal(runs[0].fmri, base_runs[0].fmri)
    assert runs[0].meta == base_runs[0].meta and "repeats" not in base_truth.config
    np.testing.assert_array_equal(runs[1].fmri, base_runs[1].fmri)
    for run in runs[2:]:
        np.testing.assert_array_equal(run.signal, runs[1].signal)
        for m in run.features:
            np.testing.assert_array_equal(run.features[m], runs[1].features[m])
    m = truth.cortex_mask
    noise = [r.fmri[:, m].astype(np.float64) - truth.noise_ceiling[m] * r.signal[:, m] for r in runs[1:]]
    assert abs(pearson_columns(noise[0], noise[1]).mean()) < 0.05  # independent noise
    assert not np.array_equal(runs[2].fmri, runs[3].fmri)


def test_repeat_mean_ceiling_is_analytic_and_empirical():
    truth, runs = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=300, seed=6, repeats=4)
    runs = list(runs)
    c = truth.noise_ceiling.astype(np.float64)
    np.testing.assert_allclose(truth.repeat_mean_ceiling(1), c, atol=1e-7)
    np.testing.assert_allclose(truth.repeat_mean_ceiling(4), c / np.sqrt(c**2 + (1 - c**2) / 4), atol=1e-7)
    mean = np.mean([r.fmri for r in runs], axis=0).astype(np.float64)
    r = pearson_columns(runs[0].signal.astype(np.float64), mean)
    m = truth.cortex_mask
    assert abs(np.median(r[m]) - np.median(truth.repeat_mean_ceiling(4)[m])) < 0.02
    with pytest.raises(ValueError, match="n_repeats"):
        truth.repeat_mean_ceiling(0)


@pytest.mark.parametrize("repeats, match", [(0, "repeats: expected an int >= 1"), ({5: 2}, "stimulus index 5"),
                                            ({0: 1.5}, r"repeats\[0\]")])
def test_bad_repeats(repeats, match):
    with pytest.raises(ValueError, match=match):
        syn.generate_synthetic(n_timelines=2, duration_s=20, repeats=repeats)


# ------------------------------------------------------------------------------------------------------------
# The subcortical grid


@pytest.fixture(scope="module")
def grid():
    from nforge_jax.data.subcortical import load_grid

    return load_grid()


@pytest.fixture(scope="module")
def subcortical(grid):
    truth, runs = syn.generate_synthetic(space="subcortical", grid=grid, n_subjects=2, n_timelines=1,
                                         duration_s=600, seed=5)
    return truth, next(runs)


def voxel_neighbours(grid):
    """Face-neighbour pairs (i, j) of the grid's voxels, found from their coordinates."""
    where = {tuple(v): k for k, v in enumerate(np.asarray(grid.ijk).tolist())}
    pairs = [(k, where[(i + di, j + dj, l + dl)]) for (i, j, l), k in where.items()
             for di, dj, dl in ((1, 0, 0), (0, 1, 0), (0, 0, 1)) if (i + di, j + dj, l + dl) in where]
    return np.array(pairs)


def test_subcortical_runs_record_the_space(subcortical, grid, tmp_path):
    from nforge_jax.data.spaces import subcortical_space

    truth, run = subcortical
    space = subcortical_space(grid)
    assert truth.space == space and truth.config["space"] == space.to_dict() and truth.config["mesh"] is None
    assert run.fmri.shape == run.signal.shape == (600, grid.n_voxels)
    assert truth.readouts.shape == (2, 12, grid.n_voxels) and truth.modality_weights.shape == (3, grid.n_voxels)
    assert run.meta["space"] == space.to_dict() and "mesh" not in run.meta
    truth.save(tmp_path / "t.npz")
    assert syn.SyntheticTruth.load(tmp_path / "t.npz").space == space
    small = syn.make_synthetic_store(tmp_path / "store", space="subcortical", grid=grid, n_subjects=1,
                                     n_timelines=1, duration_s=20)
    store = FeatureStore.open(tmp_path / "store")
    (name,) = store.timelines
    assert store.meta(name)["space"] == space.to_dict() and store.fmri(name).shape == (20, grid.n_voxels)
    assert small.space == space


def test_subcortical_noise_ceiling_matches_empirical_correlation(subcortical, grid):
    truth, run = subcortical
    r = pearson_columns(run.signal.astype(np.float64), run.fmri.astype(np.float64))
    c = truth.noise_ceiling.astype(np.float64)
    m = truth.cortex_mask
    assert abs(np.mean(r[m] - c[m])) < 0.01
    assert np.median(c[m]) > 0.75  # structures are anchors: high ceilings, as in the cortex's anchor areas
    ventricles = grid.structure_indices("lateral_ventricle")
    assert not m[ventricles].any() and m.sum() == grid.n_voxels - len(ventricles)
    assert (c[ventricles] == 0).all() and abs(r[ventricles].mean()) < 0.02
    np.testing.assert_allclose(truth.noiseless_bold(run.features, 0), run.signal, atol=1e-5)


def test_subcortical_structures_carry_the_planted_modalities(subcortical, grid):
    truth, _ = subcortical
    mean = {s: dict(zip(syn.MODALITIES, truth.modality_weights[:, grid.structure_indices(s)].mean(1)))
            for s in ("thalamus", "caudate", "putamen", "hippocampus", "amygdala", "pallidum", "accumbens")}
    for s in ("caudate", "putamen"):
        assert mean[s]["audio"] > 0.7
    for s in ("hippocampus", "amygdala"):
        assert mean[s]["text"] > 0.7
    assert min(mean["thalamus"]["video"], mean["thalamus"]["audio"]) > 0.35 > 0.1 > mean["thalamus"]["text"]
    for s in ("pallidum", "accumbens"):  # mixed: no modality holds most of the variance
        assert max(mean[s].values()) < 0.6 and min(mean[s].values()) > 0.1


def test_subcortical_maps_are_smooth_over_voxel_neighbours(subcortical, grid):
    truth, run = subcortical
    pairs = voxel_neighbours(grid)
    assert len(pairs) > 2 * grid.n_voxels  # most voxels have several face neighbours
    rng = np.random.default_rng(0)
    fields = [*truth.modality_weights, truth.readouts[0, 0], run.fmri[100] - run.signal[100] * truth.noise_ceiling]
    for field in fields:
        assert np.corrcoef(field[pairs[:, 0]], field[pairs[:, 1]])[0, 1] > 0.3
        shuffled = rng.permutation(field)
        assert abs(np.corrcoef(shuffled[pairs[:, 0]], shuffled[pairs[:, 1]])[0, 1]) < 0.1  # the check can fail


def test_subcortical_is_deterministic_and_the_cortex_unchanged(grid):
    a, runs_a = syn.generate_synthetic(space="subcortical", grid=grid, n_subjects=1, n_timelines=1, duration_s=20)
    b, runs_b = syn.generate_synthetic(space="subcortical", grid=grid, n_subjects=1, n_timelines=1, duration_s=20)
    np.testing.assert_array_equal(next(runs_a).fmri, next(runs_b).fmri)
    np.testing.assert_array_equal(a.readouts, b.readouts)
    c, runs_c = syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=20)
    d, runs_d = syn.generate_synthetic(space="fsaverage5", n_subjects=1, n_timelines=1, duration_s=20)
    run_c, run_d = next(runs_c), next(runs_d)
    np.testing.assert_array_equal(run_c.fmri, run_d.fmri)
    assert run_c.meta == run_d.meta and "space" not in run_c.meta and c.config == d.config


@pytest.mark.parametrize("kwargs, match", [
    (dict(space="volume"), "space: expected None, 'fsaverage5'"),
    (dict(space="fsaverage5", mesh="fsaverage4"), "space: expected None"),
    (dict(grid=object()), "grid: only used with space='subcortical'"),
])
def test_bad_space(kwargs, match):
    with pytest.raises(ValueError, match=match):
        syn.generate_synthetic(n_subjects=1, n_timelines=1, duration_s=20, **kwargs)
