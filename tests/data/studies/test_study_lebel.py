"""Lebel2023Bold reader on a replica of ds003020 + its fmriprep derivative."""

import numpy as np
import pytest

import study_reference as ref
from nforge_jax.data.studies import Lebel2023Bold, MissingStudyFile, StudyDataError


def test_timelines_skip_localizers_and_the_corrupt_run(lebel):
    study = Lebel2023Bold(lebel["root"].parent)
    tls = list(study.iter_timelines())
    assert [study.timeline_name(t) for t in tls] == [
        "Lebel2023Bold:run=None,session=2,subject=UTS01,task=avatar",  # listed although a dangling annex link
        "Lebel2023Bold:run=None,session=2,subject=UTS01,task=legacy",
        "Lebel2023Bold:run=1,session=3,subject=UTS01,task=wheretheressmoke",
        "Lebel2023Bold:run=2,session=3,subject=UTS01,task=wheretheressmoke",
    ]
    assert tls[0] == dict(subject="UTS01", session="2", task="avatar", run=None)
    count = study.check_count(len(tls))
    assert (count["expected"], count["ok"]) == (432, False)
    assert Lebel2023Bold(lebel["root"], subjects=["UTS01"]).expected_timelines() == 92


def test_events_from_textgrid_and_wav(lebel):
    study = Lebel2023Bold(lebel["root"])
    tls = list(study.iter_timelines())
    for tl in tls:  # long, chronological and short TextGrids give the same rows
        ev = study.load_events(tl)
        words = ev[ev.type == "Word"]
        assert list(words.text) == ["i", "reached", "over"]
        np.testing.assert_allclose(words.start, [10.5, 10.9, 12.0])
        np.testing.assert_allclose(words.duration, [0.4, 0.5, 0.6])
        phones = ev[ev.type == "Phoneme"]
        assert list(phones.text) == ["ay1", "r", "iy1", "ow1"]
        np.testing.assert_allclose(phones.start, [10.5, 10.9, 11.1, 12.0])
        audio = ev[ev.type == "Audio"].iloc[0]
        assert audio.start == 10.0 and audio.duration == pytest.approx(3.0) and audio.frequency == 16000
        assert audio.filepath.endswith(f"ds003020/stimuli/{tl['task']}.wav")
        fm = ev[ev.type == "Fmri"].iloc[0]
        assert fm.start == 0 and fm.duration == 16.0 and fm.frequency == 0.5
        assert set(ev.split) == {"test" if tl["task"] == "wheretheressmoke" else "train"}
        assert set(ev.task) == {tl["task"]} and set(ev.session) == {tl["session"]}
        assert set(ev.run) == {str(tl["run"])} and set(ev.subject) == {"Lebel2023Bold/UTS01"}
    ev = study.load_events(tls[0])
    assert ev.query("type == 'Fmri'").space.iloc[0] == "fsaverage"  # surface preferred over the MNI volume


def test_surface_and_volume_targets(lebel):
    study = Lebel2023Bold(lebel["root"])
    tls = list(study.iter_timelines())
    got = study.load_fmri(tls[0])  # fsaverage GIFTI, 163,842 vertices per hemisphere, truncated
    assert got.shape == (15, 20484)  # 8 TRs x 2 s -> 0..14 s
    surf = np.vstack([lebel["surf"][("sub-UTS01_ses-2_task-avatar", h)] for h in "LR"])
    np.testing.assert_allclose(got, ref.clean_resample(surf.astype(np.float64), 2.0), atol=1e-5)
    got = study.load_fmri(tls[2])  # fsaverage5 GIFTI, run-1 only
    surf = np.vstack([lebel["surf"][("sub-UTS01_ses-3_task-wheretheressmoke_run-1", h)] for h in "LR"])
    np.testing.assert_allclose(got, ref.clean_resample(surf.astype(np.float64), 2.0), atol=1e-5)
    got = study.load_fmri(tls[1])  # MNI res-2 volume + mask (the smoothAROMA volume is ignored)
    np.testing.assert_allclose(got, ref.volume_target(lebel["legacy"], lebel["legacy_mask"], 2.0), atol=2e-4)


def test_missing_files_are_named(lebel, tmp_path):
    study = Lebel2023Bold(lebel["root"])
    tl = dict(subject="UTS01", session="2", task="nostory", run=None)
    with pytest.raises(MissingStudyFile, match=r"story audio not found: .*stimuli/nostory.wav"):
        study.load_events(tl)
    with pytest.raises(MissingStudyFile, match=r"no usable fMRI in .*sub-UTS01/ses-2/func: expected "
                                               r"sub-UTS01_ses-2_task-nostory_hemi-L/R"):
        study.load_fmri(tl)
    with pytest.raises(StudyDataError, match="unknown subject"):
        Lebel2023Bold(lebel["root"], subjects=["UTS09"])
