"""Algonauts2025Bold reader on a replica of the CNeuroMod / algonauts_2025.competitors layout."""

import numpy as np
import pandas as pd
import pytest

import study_reference as ref
from nforge_jax.data.studies import Algonauts2025Bold, MissingStudyFile, StudyDataError, get_study
from nforge_jax.data.studies.algonauts2025 import read_transcript

S01 = "Algonauts2025Bold:chunk=e01a,movie=s01,run=0,subject=sub-01,task=friends"


def test_timelines_follow_tribe(algonauts):
    study = get_study("Algonauts2025", algonauts["datapath"])  # $DATAPATH + alias
    assert study.root == algonauts["root"]
    tls = list(study.iter_timelines())
    assert [study.timeline_name(t) for t in tls] == [
        S01,
        "Algonauts2025Bold:chunk=e01b,movie=s01,run=0,subject=sub-01,task=friends",
        # s04e01a is one of the five chunks TRIBE skips for every subject
        "Algonauts2025Bold:chunk=e01a,movie=s07,run=0,subject=sub-01,task=friends",
        "Algonauts2025Bold:chunk=1,movie=bourne,run=1,subject=sub-01,task=movie10",
        "Algonauts2025Bold:chunk=1,movie=life,run=1,subject=sub-01,task=movie10",
        "Algonauts2025Bold:chunk=1,movie=life,run=2,subject=sub-01,task=movie10",
    ]
    count = study.check_count(len(tls))
    assert count["expected"] == 1588 and count["found"] == 6 and not count["ok"]
    only = Algonauts2025Bold(algonauts["root"], subjects=["Algonauts2025Bold/sub-01"])
    assert only.expected_timelines() == 397
    assert list(Algonauts2025Bold(algonauts["root"], subjects=["sub-02"]).iter_timelines()) == []


def test_transcript_words(algonauts):
    path = algonauts["root"] / "download/algonauts_2025.competitors/stimuli/transcripts/friends/s1/friends_s01e01a.tsv"
    raw = pd.read_csv(path, sep="\t")
    assert list(raw.columns) == ["text_per_tr", "words_per_tr", "onsets_per_tr", "durations_per_tr"]
    assert read_transcript(path) == [("There's", 1.62, 0.28), ("nothing", 1.9, 0.2), ("to", 2.1, 0.2),
                                     ("tell!", 2.3, 0.3), ("He's", 3.1, 0.35)]


def test_events_of_a_friends_chunk(algonauts):
    study = Algonauts2025Bold(algonauts["datapath"])
    tl = next(iter(study.iter_timelines()))
    ev = study.load_events(tl)
    assert set(ev["timeline"]) == {S01}
    assert set(ev["subject"]) == {"Algonauts2025Bold/sub-01"}
    assert set(ev["study"]) == {"Algonauts2025Bold"}
    assert set(ev["split"]) == {"train"}
    assert (ev["task"] == "friends").all() and (ev["movie"] == "s01").all() and (ev["chunk"] == "e01a").all()
    assert (ev["run"] == "0").all()
    assert list(ev["type"]) == ["Fmri", "Video", "Audio", "Text", "Word", "Word", "Word", "Word", "Word"]
    fm = ev[ev.type == "Fmri"].iloc[0]
    assert fm.start == 0 and fm.duration == pytest.approx(10 * 1.49)
    assert fm.frequency == pytest.approx(1 / 1.49)
    assert fm.filepath == str(algonauts["files"][("s01e01a", "003")])  # ses-003, not the repeat in ses-005
    assert fm.mask_filepath.endswith("sub-01_ses-003_task-s01e01a_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz")
    video = ev[ev.type == "Video"].iloc[0]
    assert video.filepath.endswith("stimuli/movies/friends/s1/friends_s01e01a.mkv")
    assert video.start == 0 and video.frequency == 10
    assert abs(video.duration - 2.0) < 0.15
    audio = ev[ev.type == "Audio"].iloc[0]
    assert audio.filepath == video.filepath and audio.frequency == 16000
    text = ev[ev.type == "Text"].iloc[0]
    assert text.text == "There's nothing to tell! He's"
    assert text.start == pytest.approx(1.62) and text.duration == pytest.approx(3.45 - 1.62)
    words = ev[ev.type == "Word"]
    assert list(words.text) == ["There's", "nothing", "to", "tell!", "He's"]
    np.testing.assert_allclose(words.start, [1.62, 1.9, 2.1, 2.3, 3.1])
    np.testing.assert_allclose(words.duration, [0.28, 0.2, 0.2, 0.3, 0.35])
    assert set(words.language) == {"english"} and set(words.modality) == {"heard"}


def test_season7_has_no_fmri_and_is_test(algonauts):
    study = Algonauts2025Bold(algonauts["datapath"])
    tl = [t for t in study.iter_timelines() if t["movie"] == "s07"][0]
    ev, fmri = study.load_timeline(tl)
    assert fmri is None
    assert "Fmri" not in set(ev.type) and set(ev.split) == {"test"}


def test_movie10_runs_read_their_own_file(algonauts):
    study = Algonauts2025Bold(algonauts["datapath"])
    life = [t for t in study.iter_timelines() if t["movie"] == "life"]
    paths = [study.load_events(t).query("type == 'Fmri'").filepath.iloc[0] for t in life]
    assert paths == [str(algonauts["files"][("life01_run-1", "006")]), str(algonauts["files"][("life01_run-2", "009")])]
    ev = study.load_events(life[1])
    assert (ev.chunk == "1").all() and (ev.run == "2").all() and (ev.movie == "life").all()


def test_fmri_target_matches_nilearn_reference(algonauts):
    study = Algonauts2025Bold(algonauts["datapath"])
    tl = next(iter(study.iter_timelines()))
    got = study.load_fmri(tl)
    assert got.shape == (14, 20484) and got.dtype == np.float32  # 10 TRs x 1.49 s -> 14 samples at 1 Hz
    bold = algonauts["files"][("s01e01a", "003")]
    mask = str(bold).replace("desc-preproc_bold", "desc-brain_mask")
    expected = ref.volume_target(bold, mask, 1.49)
    np.testing.assert_allclose(got, expected, atol=2e-4)


def test_errors_name_the_file(algonauts, tmp_path):
    study = Algonauts2025Bold(algonauts["datapath"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("text_per_tr\twords_per_tr\tonsets_per_tr\tdurations_per_tr\nhi\t['hi'\t[1.0]\t[0.5]\n")
    with pytest.raises(StudyDataError, match=r"bad.tsv: row 0, column 'words_per_tr': expected a Python list"):
        read_transcript(bad)
    code = tmp_path / "code.tsv"
    code.write_text("text_per_tr\twords_per_tr\tonsets_per_tr\tdurations_per_tr\nx\t__import__('os')\t[]\t[]\n")
    with pytest.raises(StudyDataError, match="code.tsv: row 0"):
        read_transcript(code)  # literal_eval refuses code
    short = tmp_path / "short.tsv"
    short.write_text("text_per_tr\twords_per_tr\tonsets_per_tr\tdurations_per_tr\nx\t['a', 'b']\t[1.0]\t[0.5]\n")
    with pytest.raises(StudyDataError, match="short.tsv: row 0: .* different lengths"):
        read_transcript(short)
    tl = dict(subject="sub-01", task="friends", movie="s02", chunk="e01a", run=0)
    with pytest.raises(MissingStudyFile, match="movie file not found: .*friends_s02e01a.mkv"):
        study.load_events(tl)
    with pytest.raises(MissingStudyFile, match=r"BOLD run not found: .*task-s02e01a_space-MNI152NLin2009cAsym"):
        study.load_fmri(tl)
    with pytest.raises(MissingStudyFile, match="no dataset found"):
        Algonauts2025Bold(tmp_path)
