"""The subcortical output space end to end: a tiny encoder with one output per voxel of the subcortical grid,
a new subject fitted by ridge on a synthetic subcortical store (planted structure -> modality map, known
ceiling), then prediction, streaming, attribution per voxel and per structure, and evaluate per structure,
each checked against the planted truth."""

import json

import numpy as np
import pytest
from flax import nnx

from nforge_jax.data import synthetic as syn
from nforge_jax.data.regions import region_sets, region_summary
from nforge_jax.data.spaces import SpaceMismatch, fsaverage5_space
from nforge_jax.data.store import FeatureStore
from nforge_jax.data.subcortical import load_grid
from nforge_jax.inference.adapt import SubjectAdapter, align_fmri
from nforge_jax.inference.attribution import ModalityAttributor, store_variance_shares
from nforge_jax.inference.batch import MARKER, predict_store
from nforge_jax.inference.evaluate import evaluate
from nforge_jax.inference.model import NForgeModel
from nforge_jax.inference.streaming import StreamingPredictor
from nforge_jax.model import EncoderConfig, FmriEncoder

FEATURES = {"text": (1, 16), "audio": (1, 16), "video": (1, 16)}
TEST_STIMULUS = "stim-05"  # shown 3 times, never used to fit the subject
W = 10  # output timesteps per window


def feats(store, name):
    return {m: np.asarray(store.features(name, m), np.float32) for m in FEATURES}


@pytest.fixture(scope="module")
def grid():
    return load_grid()


@pytest.fixture(scope="module")
def world(grid, tmp_path_factory):
    """(truth, store, model with the fitted subject, its id, adapter): 4 x 150 s to fit, the test stimulus x 3."""
    root = tmp_path_factory.mktemp("subcortical")
    truth = syn.make_synthetic_store(root / "store", space="subcortical", grid=grid, n_subjects=1, n_timelines=5,
                                     duration_s=150, seed=1, feature_dims=FEATURES,
                                     latent_dims={m: 2 for m in FEATURES}, repeats={4: 3})
    store = FeatureStore.open(root / "store")
    config = EncoderConfig(feature_dims=tuple((m, *d) for m, d in FEATURES.items()), n_outputs=grid.n_voxels,
                           n_output_timesteps=W, hidden=96, depth=1, heads=3, low_rank_head=32, n_subjects=1)
    model = NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(0)), device="cpu", metadata={"subjects": ["other"]})
    calibration = []
    for name in store.timelines:
        if TEST_STIMULUS not in name:
            f = feats(store, name)
            y, mask = align_fmri(np.asarray(store.fmri(name)), model.predict_features(f).shape[0])
            calibration.append({"features": f, "fmri": y, "mask": mask})
    adapter = SubjectAdapter.from_ridge(model, calibration, regularization="cv")
    subject = adapter.inject_into_model(model, "sub-01")
    return truth, store, model, subject, adapter


def test_prediction_and_streaming_on_the_voxels(world, grid):
    truth, store, model, subject, _ = world
    name = next(n for n in store.timelines if TEST_STIMULUS in n)
    f = {m: x[:60] for m, x in feats(store, name).items()}  # 30 s
    whole = model.predict_features(f, subject=subject)
    assert whole.shape == (30, grid.n_voxels) and np.isfinite(whole).all()
    stream = StreamingPredictor.from_nforge_model(model, window_trs=W, subject=subject)
    outs = [stream.push_frame({m: x[2 * k: 2 * k + 2] for m, x in f.items()}) for k in range(30)]
    assert all(o is None for o in outs[: W - 1])
    for k in (W - 1, 2 * W - 1):  # where a streaming window coincides with an offline one
        assert outs[k].shape == (grid.n_voxels,)
        np.testing.assert_allclose(outs[k], whole[k], rtol=1e-4, atol=1e-4)
    # the fitted subject differs from the model's other subject
    assert not np.allclose(whole, model.predict_features(f, subject=0), atol=1e-3)


def test_evaluate_per_structure_with_the_analytic_ceiling(world, grid, tmp_path):
    truth, store, model, subject, _ = world
    test = [n for n in store.timelines if TEST_STIMULUS in n]
    preds = {n: model.predict_features(feats(store, n), subject=subject) for n in test}
    ev = evaluate(preds, store, n_boot=50, grid=grid)
    signal = truth.cortex_mask  # every voxel but the lateral ventricles
    assert ev.ceiling_method == "repeats (NSD ncsnr, R=3)" and ev.is_subcortical
    analytic = truth.repeat_mean_ceiling(3)
    assert abs(np.median(ev.ceiling[signal]) - np.median(analytic[signal])) < 0.02
    assert np.median(np.abs(ev.ceiling[signal] - analytic[signal])) < 0.03
    rows = {row["roi"]: row for row in ev.rois}
    assert {"all voxels", "grey matter", "thalamus", "left_thalamus", "right_accumbens"} <= set(rows)
    assert not any(row["kind"] in ("area", "section") for row in ev.rois)
    assert rows["thalamus"]["n_vertices"] == len(grid.structure_indices("thalamus"))
    # the fitted subject predicts the grey matter of an unseen stimulus, and nothing in the ventricles
    assert rows["grey matter"]["median_r"] > 0.3
    assert abs(rows["lateral_ventricle"]["median_r"]) < 0.05 and rows["lateral_ventricle"]["median_ceiling"] < 0.3
    for structure in ("thalamus", "putamen", "hippocampus"):
        assert rows[structure]["median_r_ci_low"] <= rows[structure]["median_r"] <= rows[structure][
            "median_r_ci_high"]
    text = ev.summary_text()
    assert "grey matter (6" in text and "voxels)" in text and "structure (both sides)" in text
    assert "hippocampus" in text and "section" not in text
    paths = ev.save(tmp_path / "ev")
    doc = json.loads(paths["json"].read_text())
    assert doc["space"]["name"] == "subcortical" and doc["space"]["n_outputs"] == grid.n_voxels
    assert "grey" in doc["medians"]


def test_attribution_recovers_the_planted_modality_per_structure(world, grid):
    truth, store, model, subject, _ = world
    test = [n for n in store.timelines if TEST_STIMULUS in n][:1]
    shares = store_variance_shares(model, store, test, subject=subject)
    rows = {r["region"]: r for r in region_summary(shares, region_sets(truth.space, grid=grid))}
    for structure in ("caudate", "putamen"):
        assert rows[structure]["dominant"] == "audio"
    for structure in ("hippocampus", "amygdala"):
        assert rows[structure]["dominant"] == "text"
    thalamus = rows["thalamus"]  # video and audio, hardly text
    assert min(thalamus["video"], thalamus["audio"]) > thalamus["text"] + 0.1
    assert rows["lateral_ventricle"]["total"] < 0.02 < rows["grey matter"]["total"]
    # per voxel: where one modality was planted (mixture > 0.6), its share is the largest in most voxels
    stacked = np.stack([shares[m] for m in syn.MODALITIES])
    planted = truth.modality_weights.max(axis=0) > 0.6
    agree = np.argmax(stacked, axis=0) == np.argmax(truth.modality_weights, axis=0)
    assert agree[planted].mean() > 0.85, agree[planted].mean()
    # the ablation scores of one window: a (voxels,) map per modality
    f = {m: x[:2 * W] for m, x in feats(store, test[0]).items()}
    scores = ModalityAttributor(model, method="ablation", subject=subject).attribute(f)
    assert all(np.shape(scores[m]) == (grid.n_voxels,) and np.isfinite(scores[m]).all() for m in FEATURES)


def test_predictions_of_another_space_are_refused(world, tmp_path):
    truth, store, model, subject, _ = world
    test = [n for n in store.timelines if TEST_STIMULUS in n]
    cortical = {n: np.zeros((150, 20484), np.float32) for n in test}
    with pytest.raises(SpaceMismatch, match="subcortical"):
        evaluate(cortical, store, n_boot=0)
    out = tmp_path / "pred"
    predict_store(model, store, out, subject=subject, timelines=test, progress=False)
    assert evaluate(out, store, n_boot=0).n_samples > 100  # the directory as written is accepted
    marker = json.loads((out / MARKER).read_text())
    marker["space"] = fsaverage5_space().to_dict()  # a directory that says it holds cortical predictions
    (out / MARKER).write_text(json.dumps(marker))
    with pytest.raises(ValueError, match="come from different output spaces"):  # its records say otherwise
        evaluate(out, store, n_boot=0)
    for path in out.glob("*.json"):  # records and marker agree: the store's space decides
        record = json.loads(path.read_text())
        record["space"] = marker["space"]
        path.write_text(json.dumps(record))
    with pytest.raises(SpaceMismatch, match="predictions .* is fsaverage5 .* but the store .* is subcortical"):
        evaluate(out, store, n_boot=0)
