"""Wen2017 and Lahner2024Bold readers on replicas of their published layouts."""

import numpy as np
import pytest

import study_reference as ref
import study_replicas as replicas
from nforge_jax.data.studies import Lahner2024Bold, MissingStudyFile, StudyDataError, Wen2017


def test_wen_timelines_events_and_target(wen):
    study = Wen2017(wen["root"])
    tls = list(study.iter_timelines())
    names = [study.timeline_name(t) for t in tls]
    assert names[:3] == ["Wen2017:run=1,seg=seg1,subject=subject1", "Wen2017:run=2,seg=seg1,subject=subject1",
                         "Wen2017:run=1,seg=test1,subject=subject1"]
    assert len(tls) == 12 and names[-1] == "Wen2017:run=10,seg=test1,subject=subject1"
    count = study.check_count(len(tls))
    assert (count["found"], count["expected"], count["ok"]) == (12, 258, False)
    ev = study.load_events(tls[0])
    assert list(ev.type) == ["Fmri", "Video"]  # the clip has no audio track
    fm, video = ev.iloc[0], ev.iloc[1]
    assert fm.duration == 20.0 and fm.frequency == 0.5 and fm.layout == "custom"
    assert fm.filepath == str(wen["files"][("subject1", "seg1", 1)])
    assert video.filepath.endswith("video_fmri_dataset/stimuli/seg1.mp4")
    assert video.start == 0 and video.frequency == 10 and abs(video.duration - 2.0) < 0.15
    assert set(ev.subject) == {"Wen2017/subject1"} and set(ev.seg) == {"seg1"} and set(ev.run) == {"1"}
    # the alternate spelling test1_3.mni.nii.gz is found
    tl3 = dict(subject="subject1", seg="test1", run=3)
    assert study.load_events(tl3).query("type == 'Fmri'").filepath.iloc[0].endswith("test1_3.mni.nii.gz")
    got = study.load_fmri(tls[0])
    assert got.shape == (19, 20484)  # 10 TRs x 2 s -> samples at 0..18 s
    np.testing.assert_allclose(got, ref.volume_target(wen["files"][("subject1", "seg1", 1)], None, 2.0), atol=2e-4)


def test_wen_missing_run_names_the_file(tmp_path):
    rep = replicas.make_wen(tmp_path, subject2_missing_run=True)
    study = Wen2017(rep["root"], subjects=["subject2"])
    tls = list(study.iter_timelines())
    assert [t["run"] for t in tls] == [1, 2]
    study.load_fmri(tls[0])
    with pytest.raises(MissingStudyFile, match=r"subject2/fmri/seg1/mni/seg1_2_mni.nii.gz \(nor seg1_2.mni.nii.gz\)"):
        study.load_timeline(tls[1])


def test_lahner_timelines(lahner):
    study = Lahner2024Bold(lahner["root"].parent)  # $DATAPATH convention
    tls = list(study.iter_timelines())
    assert len(tls) == 52  # sub-01 x sessions 2-5 x (10 train + 3 test runs)
    assert tls[0] == dict(subject=1, session=2, split="train", run=1)
    assert study.timeline_name(tls[10]) == "Lahner2024Bold:run=1,session=2,split=test,subject=1"
    assert study.check_count(len(tls))["expected"] == 520
    assert Lahner2024Bold(lahner["root"], subjects=["sub-01"]).expected_timelines() == 52


def test_lahner_events_and_target(lahner):
    study = Lahner2024Bold(lahner["root"])
    tl = dict(subject=1, session=2, split="train", run=1)
    ev, got = study.load_timeline(tl)
    assert list(ev.type) == ["Fmri", "Video", "Video", "Video"]  # the oddball row (n/a stim_file) is dropped
    videos = ev[ev.type == "Video"]
    np.testing.assert_allclose(videos.start, [4.0, 12.0, 16.0])
    np.testing.assert_allclose(videos.duration, 1.0, atol=0.05)
    assert list(videos.stim_file) == ["train/0001.mp4", "train/0002.mp4", "train/0001.mp4"]
    assert videos.filepath.iloc[1] == str(lahner["stimuli"] / "train" / "0002.mp4")
    assert videos.middle_frame_captions.iloc[1] == "\n".join(replicas.LAHNER_CAPTIONS["0002"])
    fm = ev.iloc[0]
    assert fm.duration == pytest.approx(17.5) and fm.frequency == pytest.approx(1 / 1.75)
    assert fm.filepath == str(lahner["data"]) and fm.mask_filepath == str(lahner["mask"])
    assert set(ev.subject) == {"Lahner2024Bold/1"}
    assert set(ev.session) == {"2"} and set(ev.split) == {"train"} and set(ev.run) == {"1"}
    assert got.shape == (17, 20484)  # 10 TRs x 1.75 s: (9 * 1.75 + 0.75) = 16.5 -> samples 0..16
    np.testing.assert_allclose(got, ref.volume_target(lahner["data"], lahner["mask"], 1.75), atol=2e-4)
    assert not lahner["marker"].exists()  # the betas pickle was never unpickled


def test_lahner_errors_name_the_file(lahner, tmp_path):
    study = Lahner2024Bold(lahner["root"])
    with pytest.raises(MissingStudyFile, match=r"BIDS events file not found: .*sub-01_ses-02_task-train_run-2_events.tsv"):
        study.load_events(dict(subject=1, session=2, split="train", run=2))
    with pytest.raises(MissingStudyFile, match=r"preprocessed BOLD not found: .*ses-03_task-test_run-1_space-MNI152NLin2009cAsym_desc-preproc_bold"):
        study.load_fmri(dict(subject=1, session=3, split="test", run=1))
    rep = replicas.make_lahner(tmp_path, with_captions=False)
    ev = Lahner2024Bold(rep["root"]).load_events(dict(subject=1, session=2, split="train", run=1))
    assert "middle_frame_captions" not in ev.columns  # captions are optional metadata
    rep["events"].write_text("onset\tduration\tstim_file\ttrial_type\tvalue\n4.0\t3.0\tn/a\ttrain\tn/a\n")
    with pytest.raises(StudyDataError, match=r"_events.tsv: row 0, column 'stim_file': expected a clip path"):
        Lahner2024Bold(rep["root"]).load_events(dict(subject=1, session=2, split="train", run=1))
    rep["events"].write_text("onset\tduration\tstim_file\ttrial_type\tvalue\nsoon\t3.0\ttrain/0001.mp4\ttrain\tn/a\n")
    with pytest.raises(StudyDataError, match=r"_events.tsv: row 0, column 'onset': expected a number"):
        Lahner2024Bold(rep["root"]).load_events(dict(subject=1, session=2, split="train", run=1))
    (rep["stimuli"] / "train" / "0001.mp4").write_bytes(b"\0\0\0 ftypisom garbage")
    rep["events"].write_text("onset\tduration\tstim_file\ttrial_type\tvalue\n4\t3.0\ttrain/0001.mp4\ttrain\tn/a\n")
    with pytest.raises(ValueError, match="0001.mp4: cannot decode video"):
        Lahner2024Bold(rep["root"]).load_events(dict(subject=1, session=2, split="train", run=1))
    with pytest.raises(StudyDataError, match="unknown subject"):
        Lahner2024Bold(rep["root"], subjects=[11])
