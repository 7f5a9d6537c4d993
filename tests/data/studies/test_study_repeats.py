"""Repeated presentations reach the store: Wen2017 segments and LeBel's wheretheressmoke runs as run-level
repeats (meta stimulus / repeat), Lahner2024's clips as per-event repeats (no run-level stimulus)."""

from collections import Counter

from nforge_jax.data.store import FeatureStore
from nforge_jax.data.studies import Lahner2024Bold, Lebel2023Bold, Wen2017, build_study_store


def test_wen_runs_of_a_segment_are_its_repeats(wen, tmp_path):
    study = Wen2017(wen["root"])
    shown = study.presentations(study.iter_timelines())
    assert shown["Wen2017:run=2,seg=seg1,subject=subject1"] == {"stimulus": "seg1", "repeat": 2}
    test_runs = {name: v for name, v in shown.items() if "seg=test1" in name}
    assert len(test_runs) == 10 and {v["stimulus"] for v in test_runs.values()} == {"test1"}
    assert shown["Wen2017:run=7,seg=test1,subject=subject1"]["repeat"] == 7
    # the numbering covers every run even when a build stops early (limit)
    build_study_store("Wen2017", wen["root"], tmp_path / "wen", progress=False, limit=4)
    store = FeatureStore.open(tmp_path / "wen")
    meta = store.meta("Wen2017:run=2,seg=test1,subject=subject1")
    assert (meta["stimulus"], meta["repeat"]) == ("test1", 2)
    assert store.meta("Wen2017:run=1,seg=seg1,subject=subject1")["repeat"] == 1


def test_lebel_story_is_the_stimulus_and_wheretheressmoke_repeats(lebel, tmp_path):
    study = Lebel2023Bold(lebel["root"].parent)
    shown = study.presentations(study.iter_timelines())
    assert shown["Lebel2023Bold:run=None,session=2,subject=UTS01,task=avatar"] == {"stimulus": "avatar", "repeat": 1}
    assert shown["Lebel2023Bold:run=2,session=3,subject=UTS01,task=wheretheressmoke"] == {
        "stimulus": "wheretheressmoke", "repeat": 2}
    build_study_store("lebel2023", lebel["root"].parent, tmp_path / "lebel", progress=False)
    store = FeatureStore.open(tmp_path / "lebel")
    metas = [store.meta(n) for n in store.timelines]
    assert Counter((m["stimulus"], m["repeat"]) for m in metas) == Counter(
        {("avatar", 1): 1, ("legacy", 1): 1, ("wheretheressmoke", 1): 1, ("wheretheressmoke", 2): 1})


def test_lahner_repeats_clips_not_runs(lahner):
    study = Lahner2024Bold(lahner["root"])
    tls = list(study.iter_timelines())
    assert study.presentations(tls) == {}  # no run repeats another: no run-level stimulus
    ev = study.load_events(dict(subject=1, session=2, split="train", run=1))
    videos = ev[ev.type == "Video"]
    assert list(zip(videos.stim_file, videos.repeat.astype(int))) == [
        ("train/0001.mp4", 1), ("train/0002.mp4", 1), ("train/0001.mp4", 2)]
    # later runs count the clips of the runs before them
    later = study.clips_shown_before(dict(subject=1, session=3, split="test", run=1))
    assert later == Counter({"train/0001.mp4": 2, "train/0002.mp4": 1})
    assert study.clips_shown_before(tls[0]) == Counter()
