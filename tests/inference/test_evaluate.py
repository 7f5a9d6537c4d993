"""nforge evaluate: per-vertex r against measured fMRI, noise ceilings from repeats and from other subjects
(checked against the synthetic data's analytic ceilings), ROI tables with bootstrap intervals, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nforge_jax.data import fsaverage as fs
from nforge_jax.data import synthetic as syn
from nforge_jax.data.store import FeatureStore
from nforge_jax.inference import evaluate
from nforge_jax.inference.adapt import pearson_per_vertex

OFFSET = 5  # synthetic stores: the target of output row j is the BOLD sample j + 5


def synthetic_store(path, **settings):
    """A synthetic store and the perfect prediction of each timeline (its noiseless signal, 5 s ahead)."""
    truth, runs = syn.generate_synthetic(n_timelines=2, duration_s=200, seed=4, **settings)
    store = FeatureStore.create(path)
    perfect = {}
    for run in runs:
        store.write_timeline(run.name, features=run.features, fmri=run.fmri, meta=run.meta)
        pred = np.zeros_like(run.signal)
        pred[:-OFFSET] = run.signal[OFFSET:]
        perfect[run.name] = pred
    return truth, store, perfect


@pytest.fixture(scope="module")
def repeated(tmp_path_factory):
    """3 identical-readout subjects; stimulus 0 shown 4 times to each, stimulus 1 once."""
    return synthetic_store(tmp_path_factory.mktemp("rep") / "store", n_subjects=3, subject_variability=0.0,
                           repeats={0: 4})


def names_of(truth, stimulus, repeat=None):
    return [t["name"] for t in truth.timelines if t["stimulus"] == stimulus and t.get("repeat", 1) == (repeat or
                                                                                                        t.get("repeat", 1))]


def test_repeat_ceiling_matches_the_analytic_one(repeated):
    truth, store, perfect = repeated
    names = names_of(truth, 0)
    ev = evaluate(perfect, store, timelines=names, n_boot=0)
    m = truth.cortex_mask
    assert ev.ceiling_method == "repeats (NSD ncsnr, R=4)" and ev.n_targets == 3 and len(ev.timelines) == 12
    analytic = truth.repeat_mean_ceiling(4)
    assert abs(np.median(ev.ceiling[m]) - np.median(analytic[m])) < 0.02
    assert np.median(np.abs(ev.ceiling[m] - analytic[m])) < 0.03  # vertex by vertex too
    # the perfect prediction reaches the ceiling
    assert abs(np.nanmedian(ev.r_over_ceiling[m]) - 1.0) < 0.03
    assert ev.roi("all vertices")["median_r_over_ceiling"] <= 1.0
    # a single run's ceiling is lower: averaging 4 runs removes noise
    assert np.median(analytic[m]) > np.median(truth.noise_ceiling[m]) + 0.1


def test_mixed_repeat_counts_weight_each_sample_by_one_over_r(repeated):
    truth, store, perfect = repeated
    ev = evaluate(perfect, store, n_boot=0)  # stimulus 0: means of 4 runs, stimulus 1: single runs
    assert ev.ceiling_method == "repeats (NSD ncsnr, R=1-4)"
    c2 = truth.noise_ceiling.astype(np.float64) ** 2
    inverse = (1 / 4 + 1) / 2  # equal numbers of samples with R = 4 and R = 1
    analytic = np.sqrt(c2 / (c2 + (1 - c2) * inverse))
    m = truth.cortex_mask
    assert abs(np.median(ev.ceiling[m]) - np.median(analytic[m])) < 0.02


def test_r_is_pearson_of_the_aligned_samples(repeated):
    truth, store, perfect = repeated
    names = names_of(truth, 1)
    rng = np.random.default_rng(0)
    preds = {n: perfect[n] + rng.standard_normal(perfect[n].shape).astype(np.float32) for n in names}
    ev = evaluate(preds, store, ceiling="none", rois=None, n_boot=0)
    # independent alignment: row j against sample j + 5, the last 5 rows have none
    x = np.concatenate([preds[n][:-OFFSET] for n in names])
    y = np.concatenate([np.asarray(store.fmri(n))[OFFSET:] for n in names])
    np.testing.assert_allclose(ev.r, pearson_per_vertex(x, y), atol=1e-5)
    assert ev.n_samples == len(x) and ev.ceiling_method == "none" and np.isnan(ev.r_over_ceiling).all()


def test_leave_one_subject_out_equals_the_single_run_ceiling_when_subjects_agree(repeated):
    truth, store, perfect = repeated
    ev = evaluate(perfect, store, timelines=names_of(truth, 1), n_boot=0)  # auto: no repeats -> subjects
    assert ev.ceiling_method == "leave-one-subject-out (S=3)"
    assert "shared between subjects" in ev.info["note"]
    m = truth.cortex_mask
    assert abs(np.median(ev.ceiling[m]) - np.median(truth.noise_ceiling[m])) < 0.02
    # on repeat means the subjects' targets are less noisy: the estimate follows the 4-run ceiling
    loso4 = evaluate(perfect, store, timelines=names_of(truth, 0), ceiling="subjects", n_boot=0)
    assert abs(np.median(loso4.ceiling[m]) - np.median(truth.repeat_mean_ceiling(4)[m])) < 0.02


def test_leave_one_subject_out_is_lower_when_subjects_differ(tmp_path):
    truth, store, perfect = synthetic_store(tmp_path / "s", n_subjects=3, subject_variability=0.5)
    ev = evaluate(perfect, store, ceiling="subjects", rois=None, n_boot=0)
    m = truth.cortex_mask
    # each subject's own perfect prediction exceeds the shared-response ceiling
    assert np.median(ev.ceiling[m]) < np.median(truth.noise_ceiling[m]) - 0.1
    assert np.nanmedian(ev.r_over_ceiling[m]) > 1.1


def test_bootstrap_interval_holds_the_median_and_narrows_with_more_data(repeated):
    truth, store, perfect = repeated
    rng = np.random.default_rng(1)
    noisy = {n: p + 2.0 * rng.standard_normal(p.shape).astype(np.float32) for n, p in perfect.items()}
    one = evaluate(noisy, store, timelines=names_of(truth, 1)[:1], ceiling="none", rois=["V1"], n_boot=300)
    everything = evaluate(noisy, store, timelines=names_of(truth, 1), ceiling="none", rois=["V1"], n_boot=300)
    for ev in (one, everything):
        for roi in ("all vertices", "V1"):
            row = ev.roi(roi)
            assert row["median_r_ci_low"] < row["median_r"] < row["median_r_ci_high"]
    width = {k: ev.roi("V1")["median_r_ci_high"] - ev.roi("V1")["median_r_ci_low"]
             for k, ev in (("one", one), ("all", everything))}
    assert width["all"] < 0.75 * width["one"]
    assert everything.roi("V1")["n_vertices"] == len(fs.hcp_roi_indices("V1"))
    np.testing.assert_allclose(everything.roi("V1")["median_r"], np.median(everything.r[fs.hcp_roi_indices("V1")]),
                               atol=1e-6)


def test_roi_tables_and_saved_files(repeated, tmp_path):
    truth, store, perfect = repeated
    ev = evaluate(perfect, store, timelines=names_of(truth, 0), n_boot=50)
    kinds = [row["kind"] for row in ev.rois]
    assert kinds.count("section") == 22 and kinds.count("area") == 360 and kinds[:2] == ["all", "cortex"]
    section = fs.hcp_section_indices("Early Auditory Cortex")
    row = ev.roi("Early Auditory Cortex")
    assert row["n_vertices"] == len(section)
    assert row["median_ceiling"] == pytest.approx(np.median(ev.ceiling[section]), abs=1e-6)
    raw = np.median(ev.r[section] / ev.ceiling[section])
    assert row["median_r_over_ceiling_raw"] == pytest.approx(raw, abs=1e-5)
    assert row["median_r_over_ceiling"] == pytest.approx(min(raw, 1.0), abs=1e-5)
    assert ev.roi("L_A1")["n_vertices"] == len(fs.hcp_roi_indices("L_A1"))
    text = ev.summary_text()
    assert len(text.splitlines()) <= 30 and "repeats (NSD ncsnr, R=4)" in text and "Early Auditory Cortex" in text
    paths = ev.save(tmp_path / "out")
    doc = json.loads(paths["json"].read_text())
    assert doc["ceiling_method"] == ev.ceiling_method and doc["n_timelines"] == 12 and doc["n_samples"] == 3 * 195
    assert len(doc["rois"]) == 384
    assert len(paths["csv"].read_text().splitlines()) == 385
    with np.load(paths["maps"]) as maps:
        np.testing.assert_allclose(maps["r_over_ceiling"], ev.r_over_ceiling, rtol=1e-6)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_given_ceiling_and_bad_inputs(repeated):
    truth, store, perfect = repeated
    names = names_of(truth, 1)
    given = evaluate(perfect, store, timelines=names, ceiling=truth.noise_ceiling, rois=None, n_boot=0)
    assert given.ceiling_method == "given"
    m = truth.cortex_mask & (truth.noise_ceiling > 0.05)
    np.testing.assert_allclose(given.r_over_ceiling[m], given.r[m] / truth.noise_ceiling[m], rtol=1e-5)
    bad = [
        (dict(perfect, **{names[0]: perfect[names[0]][:, :100]}), {}, r"expected a \(rows, 20484\) array"),
        ({**perfect, names[0]: np.where(np.arange(200)[:, None] == 7, np.nan, perfect[names[0]])}, {},
         "row 7 holds NaN"),
        (perfect, {"timelines": ["Synthetic:nope"]}, "'Synthetic:nope' has no predictions"),
        ({n: p[:12] for n, p in perfect.items()}, {"timelines": names[:1]}, "only 12 measured samples"),
        (perfect, {"ceiling": "repeats"}, "no evaluated timelines repeat a stimulus"),
        (perfect, {"ceiling": "split-half"}, "ceiling: expected one of"),
        (perfect, {"ceiling": np.ones(5)}, r"array of shape \(5,\)"),
        (perfect, {"rois": ["V99"]}, "unknown HCP-MMP1 area 'V99'"),
        (perfect, {"block_s": 0}, "block_s"),
    ]
    for preds, kwargs, match in bad:
        kwargs = {"timelines": names, "n_boot": 0, **kwargs}
        with pytest.raises(ValueError, match=match):
            evaluate(preds, store, **kwargs)
    rep = names_of(truth, 0)[:4]  # one subject's repeats of stimulus 0
    differ = {**perfect, rep[1]: perfect[rep[1]] + 1.0}
    with pytest.raises(ValueError, match="are repeats .* but their predictions differ"):
        evaluate(differ, store, timelines=rep, n_boot=0)


# ------------------------------------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A tiny model's `nforge predict` output for a 30-vertex store: two subjects, one stimulus."""
    from flax import nnx

    from nforge_jax.inference.batch import predict_store
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.model import EncoderConfig, FmriEncoder

    tmp = tmp_path_factory.mktemp("pred")
    config = EncoderConfig(feature_dims=(("text", 1, 8),), n_outputs=30, n_output_timesteps=5, hidden=64, depth=1,
                           heads=2, low_rank_head=8, n_subjects=2)
    model = NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(0)), device="cpu", metadata={"subjects": ["p0", "p1"]})
    rng = np.random.default_rng(0)
    features = rng.standard_normal((80, 1, 8)).astype(np.float32)
    store = FeatureStore.create(tmp / "store")
    for subject in ("s1", "s2"):
        store.write_timeline(f"New:stimulus=a,subject={subject}", features={"text": features},
                             fmri=rng.standard_normal((45, 30)).astype(np.float32),
                             meta={"study": "New", "subject": subject, "stimulus": "a", "tr_s": 1.0})
    predict_store(model, store, tmp / "pred", progress=False)
    other = FeatureStore.create(tmp / "other")  # same names, other features
    for subject in ("s1", "s2"):
        other.write_timeline(f"New:stimulus=a,subject={subject}", features={"text": features + 1},
                             fmri=rng.standard_normal((45, 30)).astype(np.float32),
                             meta={"study": "New", "subject": subject, "stimulus": "a", "tr_s": 1.0})
    return tmp


def nforge(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nforge_jax.cli", *map(str, args)], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=600)


def test_cli_evaluates_a_prediction_directory(predicted, tmp_path):
    proc = nforge("evaluate", predicted / "pred", "--store", predicted / "store", "--out", tmp_path / "ev",
                  "--n-boot", "100", "--block-s", "10", cwd=tmp_path)  # 80 samples: 8 blocks of 10 s
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "noise ceiling: leave-one-subject-out (S=2)" in proc.stdout
    assert "evaluation.json, rois.csv, maps.npz written to" in proc.stdout
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert doc["n_timelines"] == 2 and doc["n_samples"] == 2 * 40  # 40 rows; 45 samples reach row 39 + 5 s
    assert doc["rois"][0]["roi"] == "all vertices" and doc["rois"][0]["median_r_ci_low"] is not None


def test_cli_user_errors_are_one_line(predicted, tmp_path):
    cases = [
        (["evaluate", tmp_path / "missing", "--store", predicted / "store"], "missing: no such directory"),
        (["evaluate", predicted / "pred", "--store", predicted / "other"],
         "was predicted from other inputs than the store"),
        (["evaluate", predicted / "pred", "--store", predicted / "store", "--timelines", "New:x"],
         "'New:x' has no predictions"),
        (["evaluate", predicted / "store", "--store", predicted / "store"], "no nforge_predictions.json"),
    ]
    for argv, expected in cases:
        proc = nforge(*argv, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert lines[0].startswith("nforge evaluate: error: ") and expected in lines[0], lines[0]


# ------------------------------------------------------------------------------------------- output spaces

def test_the_space_is_recorded_and_other_spaces_refused(repeated, tmp_path):
    from nforge_jax.data.spaces import SpaceMismatch

    truth, store, perfect = repeated
    names = names_of(truth, 1)
    ev = evaluate(perfect, store, timelines=names, n_boot=0)
    assert ev.space == {"name": "fsaverage5", "n_outputs": 20484}  # no meta space + 20,484 columns
    assert ev.to_json()["space"] == ev.space and "cortex (" in ev.summary_text() and "vertices)" in ev.summary_text()
    assert not ev.is_subcortical and {row["kind"] for row in ev.rois} == {"all", "cortex", "section", "area"}
    with pytest.raises(SpaceMismatch, match=r"expected a \(rows, 20484\) array, the store's fsaverage5"):
        evaluate({n: perfect[n][:, :8803] for n in names}, store, timelines=names, n_boot=0)
    with pytest.raises(ValueError, match="rois: expected 'auto', 'hcp'"):
        evaluate(perfect, store, timelines=names, rois="structures", n_boot=0)
    # one evaluation holds one space: timelines of two spaces are refused, naming both
    mixed = FeatureStore.create(tmp_path / "mixed")
    rng = np.random.default_rng(0)
    preds = {}
    for stimulus, n_out in (("a", 30), ("b", 40)):
        name = f"New:stimulus={stimulus},subject=s1"
        mixed.write_timeline(name, features={"text": rng.standard_normal((80, 1, 4)).astype(np.float32)},
                             fmri=rng.standard_normal((45, n_out)).astype(np.float32),
                             meta={"study": "New", "subject": "s1", "stimulus": stimulus, "tr_s": 1.0})
        preds[name] = rng.standard_normal((40, n_out)).astype(np.float32)
    with pytest.raises(SpaceMismatch, match=r"timeline 'New:stimulus=b,subject=s1' is unspecified \(40 outputs\) "
                                            r"but timeline 'New:stimulus=a,subject=s1' is unspecified \(30"):
        evaluate(preds, mixed, n_boot=0)
    one = evaluate({k: v for k, v in preds.items() if "=a," in k}, mixed, n_boot=0)
    assert [row["roi"] for row in one.rois] == ["all vertices"] and one.space["name"] == "unspecified"
    assert "(30 outputs)" in one.summary_text()
