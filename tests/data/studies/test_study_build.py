"""build_study_store: one FeatureStore entry per timeline with the fMRI target and the events in meta."""

import logging

import numpy as np
import pytest

from nforge_jax.data.store import FeatureStore
from nforge_jax.data.studies import Algonauts2025Bold, StudyDataError, build_study_store, events_from_meta

S01 = "Algonauts2025Bold:chunk=e01a,movie=s01,run=0,subject=sub-01,task=friends"
S07 = "Algonauts2025Bold:chunk=e01a,movie=s07,run=0,subject=sub-01,task=friends"


def test_build_algonauts_store(algonauts, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="nforge_jax.data.studies"):
        summary = build_study_store("Algonauts2025Bold", algonauts["datapath"], tmp_path / "store", progress=False)
    assert "found 6 timelines" in caplog.text and "has 1588" in caplog.text
    assert summary["count_check"] == {"found": 6, "expected": 1588, "ok": False,
                                      "message": summary["count_check"]["message"]}
    assert summary["no_fmri"] == [S07]
    assert len(summary["written"]) == 5
    store = FeatureStore.open(tmp_path / "store")
    assert store.verify() == []
    assert sorted(store.timelines) == sorted(summary["written"])
    meta = store.meta(S01)
    assert meta["study"] == "Algonauts2025Bold" and meta["subject"] == "Algonauts2025Bold/sub-01"
    assert (meta["tr_s"], meta["offset_s"], meta["fmri_hz"], meta["feature_hz"]) == (1.49, 5.0, 1.0, 2.0)
    assert meta["n_trs"] == 10 and meta["fmri_space"] == "MNI152NLin2009cAsym"
    assert meta["space"] == {"name": "fsaverage5", "n_outputs": 20484} and "fwhm_mm" not in meta
    assert meta["timeline_keys"] == dict(subject="sub-01", task="friends", movie="s01", chunk="e01a", run=0)
    fmri = store.fmri(S01)
    assert fmri.shape == (14, 20484) and fmri.dtype == np.float32
    study = Algonauts2025Bold(algonauts["root"])
    np.testing.assert_array_equal(np.asarray(fmri), study.load_fmri(meta["timeline_keys"]))
    ev = events_from_meta(meta)
    expected = study.load_events(meta["timeline_keys"])
    assert list(ev.type) == list(expected.type)
    assert list(ev.text.fillna("")) == list(expected.text.fillna(""))
    np.testing.assert_allclose(ev.start, expected.start)
    np.testing.assert_allclose(ev.stop, expected.stop)


def test_build_resumes_and_strict_count(wen, tmp_path):
    path = tmp_path / "wen"
    first = build_study_store("Wen2017", wen["root"], path, progress=False, limit=3)
    assert len(first["written"]) == 3
    again = build_study_store("Wen2017", wen["root"], FeatureStore.open(path), progress=False)
    assert len(again["skipped_existing"]) == 3 and len(again["written"]) == 9
    assert len(FeatureStore.open(path).timelines) == 12
    with pytest.raises(StudyDataError, match="found 12 timelines .* has 258.*strict=False"):
        build_study_store("Wen2017", wen["root"], path, progress=False, strict=True)
    with pytest.raises(StudyDataError, match="unknown study 'Wen2018'"):
        build_study_store("Wen2018", wen["root"], path, progress=False)


def test_build_lebel_with_surfaces_and_volumes(lebel, tmp_path):
    summary = build_study_store("lebel2023", lebel["root"].parent, tmp_path / "lebel", progress=False)
    store = FeatureStore.open(tmp_path / "lebel")
    assert len(summary["written"]) == 4 and len(store.timelines) == 4
    spaces = sorted(store.meta(n)["fmri_space"] for n in store.timelines)
    assert spaces == ["MNI152NLin2009cAsym", "fsaverage", "fsaverage5", "fsaverage5"]
    for name in store.timelines:
        assert store.fmri(name).shape == (15, 20484)
        assert store.meta(name)["tr_s"] == 2.0
