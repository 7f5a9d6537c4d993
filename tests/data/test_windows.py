import collections
import json

import numpy as np
import pytest

from nforge_jax.data import splits
from nforge_jax.data import windows as P
from nforge_jax.data.store import FeatureStore, PipelineError, StoreError
from nforge_jax.data.windows import make_dataset

V = 4


def _meta(study, subject, **kw):
    return {"study": study, "subject": subject, "tr_s": 1.0, **kw}


def ramp_store(path):
    """Features whose value is the 2 Hz step index, fMRI whose value is 1 + the 1 Hz sample index."""
    s = FeatureStore.create(path)
    t_feat, n_fmri = 45, 30  # 22.5 s of features, 30 s of fMRI -> span 30 s
    text = np.broadcast_to(np.arange(t_feat, dtype=np.float32)[:, None, None], (t_feat, 2, 3))
    audio = np.broadcast_to(-np.arange(t_feat, dtype=np.float32)[:, None, None], (t_feat, 1, 2))
    fmri = np.broadcast_to(np.arange(1, n_fmri + 1, dtype=np.float32)[:, None], (n_fmri, V))
    s.write_timeline("A:run=1,subject=s1", features={"text": text, "audio": audio}, fmri=fmri,
                     meta=_meta("A", "s1"))
    # second timeline: no audio, 12 s of fMRI with a vertex-constant offset of 100
    s.write_timeline("A:run=2,subject=s2", features={"text": text[:20]}, fmri=fmri[:12] + 100,
                     meta=_meta("A", "s2"))
    return s


def many_store(path, n_timelines=6, windows_each=3, window_s=4):
    """Each window's features/targets carry a unique id (float16-exact) so streams compare by value."""
    s = FeatureStore.create(path)
    for i in range(n_timelines):
        n = windows_each * window_s
        sub = f"s{i % 3}"
        wid = (100 * (i + 1) + np.arange(n) // window_s).astype(np.float32)  # same id over a window
        s.write_timeline(f"B:run={i},subject={sub}",
                         features={"text": np.repeat(wid, 2)[:, None, None].repeat(2, axis=2)},
                         fmri=np.zeros((n, 3), np.float32) + wid[:, None],
                         meta=_meta("B", sub, fmri_hz=1.0, offset_s=0.0))
    return s


def ids_of(batch):
    # window identity from the text features (first step, first layer, first dim)
    return [int(x) for x in batch["text"][:, 0, 0, 0]]


# ------------------------------------------------------------------------------------------------
# Window contents


def test_window_contents(tmp_path):
    s = ramp_store(tmp_path / "st")
    idx = {"A/s1": 0, "A/s2": 1}
    src = P.WindowSource(s, s.timelines, subjects_index=idx, spec=P.WindowSpec(window_s=10))
    # timeline 1: span 30 s -> 3 windows; timeline 2: span max(12, 10) -> 2 windows
    assert src.windows.tolist() == [[0, 0], [0, 10], [0, 20], [1, 0], [1, 10]]
    assert src.modalities == {"audio": (1, 2), "text": (2, 3)}

    w = src[2]  # timeline 1, start 20 s
    assert w["text"].shape == (20, 2, 3) and w["text"].dtype == np.float32
    expected_steps = np.array([40, 41, 42, 43, 44] + [0] * 15, np.float32)
    np.testing.assert_array_equal(w["text"][:, 1, 2], expected_steps)
    np.testing.assert_array_equal(w["audio"][:, 0, 0], -expected_steps)
    # target i = BOLD at 20 + i + 5 s -> sample 25 + i holds 26 + i; samples >= 30 do not exist
    expected_y = np.array([26, 27, 28, 29, 30] + [0] * 5, np.float32)
    np.testing.assert_array_equal(w["fmri"], np.repeat(expected_y[:, None], V, axis=1))
    assert w["mask"].tolist() == [True] * 5 + [False] * 5
    assert w["subject_id"] == 0 and w["present"] == {"audio": True, "text": True}

    w = src[0]
    np.testing.assert_array_equal(w["fmri"][:, 0], np.arange(6, 16, dtype=np.float32))
    np.testing.assert_array_equal(w["text"][:, 0, 0], np.arange(20, dtype=np.float32))

    w = src[4]  # timeline 2, start 10: features end at step 20, fMRI (12 samples) at 12 s
    assert not w["present"]["audio"] and np.all(w["audio"] == 0)
    assert np.all(w["text"] == 0) and not w["mask"].any() and w["subject_id"] == 1
    w = src[3]
    np.testing.assert_array_equal(w["fmri"][:, 1], np.array([106, 107, 108, 109, 110, 111, 112, 0, 0, 0]))


def test_tribe_default_geometry(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline("C:1", features={"video": np.ones((500, 2, 3))},
                     fmri=np.arange(1, 251, dtype=np.float32)[:, None].repeat(2, 1), meta=_meta("C", "x"))
    ds = make_dataset(s, subjects_index={"C/x": 3}, batch_size=8, shuffle=False, num_epochs=1)
    (b,) = list(ds)
    assert b["video"].shape == (3, 200, 2, 3) and b["fmri"].shape == (3, 100, 2)
    assert b["mask"].dtype == bool and b["subject_id"].dtype == np.int32
    assert b["subject_id"].tolist() == [3, 3, 3]
    # 250 s -> windows at 0, 100, 200; last: targets 205..249 exist -> 45 valid rows
    assert b["mask"].sum(axis=1).tolist() == [100, 100, 45]
    assert b["fmri"][1, 0, 0] == 106.0  # BOLD sample 105 (value 106) pairs with window time 100
    assert b["window"][:, 1].tolist() == [0.0, 100.0, 200.0]
    (h,) = list(make_dataset(s, subjects_index={"C/x": 3}, shuffle=False, num_epochs=1, feature_dtype="float16"))
    assert h["video"].dtype == np.float16 and h["fmri"].dtype == np.float32
    np.testing.assert_array_equal(h["video"].astype(np.float32), b["video"])
    with pytest.raises(PipelineError, match="feature_dtype"):
        make_dataset(s, subjects_index={"C/x": 3}, feature_dtype="int8")


def test_meta_duration_sets_window_count(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline("D:1", fmri=np.ones((20, 2)), meta=_meta("D", "x", duration_s=31.0))
    src = P.WindowSource(s, s.timelines, subjects_index={"D/x": 0}, spec=P.WindowSpec(window_s=10))
    assert len(src) == 4 and src.modalities == {}


# ------------------------------------------------------------------------------------------------
# Shuffling, epochs, batching


def test_seeded_shuffle_epochs_and_batches(tmp_path):
    s = many_store(tmp_path / "st")
    idx = splits.make_subjects_index(s)
    assert idx == {"B/s0": 0, "B/s1": 1, "B/s2": 2}
    all_ids = sorted(100 * (i + 1) + k for i in range(6) for k in range(3))

    def stream(**kw):
        ds = make_dataset(s, subjects_index=idx, window_s=4, batch_size=4, **kw)
        return [i for b in ds for i in ids_of(b)]

    e1 = stream(seed=1, num_epochs=1)
    assert sorted(e1) == all_ids and e1 != all_ids
    assert e1 == stream(seed=1, num_epochs=1)
    assert e1 != stream(seed=2, num_epochs=1)
    two = stream(seed=1, num_epochs=2)
    assert len(two) == 36 and two[:18] == e1 and sorted(two[18:]) == all_ids and two[18:] != e1
    assert stream(shuffle=False, num_epochs=1) == all_ids
    # last batch kept for a finite stream: 18 = 4 + 4 + 4 + 4 + 2
    ds = make_dataset(s, subjects_index=idx, window_s=4, batch_size=4, num_epochs=1)
    assert [len(b["subject_id"]) for b in ds] == [4, 4, 4, 4, 2]
    # fmri of each example matches its features' window id; subject ids follow the timeline
    b = next(iter(ds))
    for j, wid in enumerate(ids_of(b)):
        assert np.all(b["fmri"][j] == wid)
        assert b["subject_id"][j] == ((wid // 100 - 1) % 3)


def test_sharding_two_processes(tmp_path):
    s = many_store(tmp_path / "st", n_timelines=7)  # 21 windows
    idx = splits.make_subjects_index(s)

    def batches(pi, pc, bs):
        ds = make_dataset(s, subjects_index=idx, window_s=4, batch_size=bs, seed=5, num_epochs=1,
                          process_index=pi, process_count=pc)
        return [list(ids_of(b)) for b in ds]

    glob = batches(0, 1, 4)  # one process, global batch 4
    p0, p1 = batches(0, 2, 2), batches(1, 2, 2)
    assert len(p0) == len(p1) == len(glob) == 6  # same number of steps on every process
    for g, a, b in zip(glob, p0, p1):
        assert a + b == g  # the two halves assemble the single-process batch, in order
    assert not {i for x in p0 for i in x} & {i for x in p1 for i in x}
    assert sorted(i for x in p0 + p1 for i in x) == sorted(i for x in glob for i in x)  # nothing lost
    with pytest.raises(PipelineError, match="process_index"):
        batches(2, 2, 2)


def test_state_restore_exact(tmp_path):
    s = many_store(tmp_path / "st")
    idx = splits.make_subjects_index(s)
    for kw in ({}, {"weights": {"B/s0": 1.0, "B/s1": 2.0, "B/s2": 0.5}}, {"process_index": 1, "process_count": 2}):
        ds = make_dataset(s, subjects_index=idx, window_s=4, batch_size=3, seed=7, **kw)
        it = iter(ds)
        for _ in range(4):
            next(it)
        state = json.loads(json.dumps(it.get_state()))  # survives a JSON checkpoint
        expected = [next(it) for _ in range(9)]  # crosses an epoch boundary
        it2 = iter(make_dataset(s, subjects_index=idx, window_s=4, batch_size=3, seed=7, **kw))
        it2.set_state(state)
        got = [next(it2) for _ in range(9)]
        for a, b in zip(expected, got):
            assert ids_of(a) == ids_of(b)
            np.testing.assert_array_equal(a["fmri"], b["fmri"])
            np.testing.assert_array_equal(a["subject_id"], b["subject_id"])


@pytest.mark.slow
def test_multiprocess_workers_state_restore(tmp_path):
    s = many_store(tmp_path / "st")
    idx = splits.make_subjects_index(s)
    all_ids = sorted(100 * (i + 1) + k for i in range(6) for k in range(3))
    ds = make_dataset(s, subjects_index=idx, window_s=4, batch_size=3, seed=3, worker_count=2)
    it = iter(ds)
    # two workers take alternate stream positions: the first 6 batches are exactly the first epoch
    assert sorted(i for _ in range(6) for i in ids_of(next(it))) == all_ids
    state = it.get_state()
    expected = [ids_of(next(it)) for _ in range(4)]
    it2 = iter(ds)
    it2.set_state(state)
    assert [ids_of(next(it2)) for _ in range(4)] == expected


def test_weighted_sampling_proportional(tmp_path):
    s = many_store(tmp_path / "st")
    idx = splits.make_subjects_index(s)
    weights = {"B/s0": 1.0, "B/s1": 3.0, "B/s2": 0.0}
    ds = make_dataset(s, subjects_index=idx, window_s=4, batch_size=100, seed=0, weights=weights)
    it = iter(ds)
    counts = collections.Counter(int(x) for _ in range(30) for x in next(it)["subject_id"])
    n = sum(counts.values())
    assert counts[2] == 0
    # binomial sd at p=0.75, n=3000 is 0.008
    assert abs(counts[1] / n - 0.75) < 0.04
    one_epoch = make_dataset(s, subjects_index=idx, window_s=4, batch_size=5, num_epochs=1, weights=weights)
    assert sum(len(b["subject_id"]) for b in one_epoch) == 18
    with pytest.raises(PipelineError, match="no weight for subject 'B/s2'"):
        make_dataset(s, subjects_index=idx, window_s=4, weights={"B/s0": 1.0, "B/s1": 1.0})
    with pytest.raises(PipelineError, match="every subject"):
        make_dataset(s, subjects_index=idx, window_s=4, weights={k: 0 for k in idx})


def test_errors(tmp_path):
    s = ramp_store(tmp_path / "st")
    with pytest.raises(PipelineError, match=r"timeline 'A:run=2,subject=s2'.*'A/s2' is not in subjects_index"):
        make_dataset(s, subjects_index={"A/s1": 0})
    with pytest.raises(PipelineError, match="batch_size"):
        make_dataset(s, subjects_index={"A/s1": 0, "A/s2": 1}, batch_size=0)
    with pytest.raises(PipelineError, match="not in the store"):
        make_dataset(s, subjects_index={"A/s1": 0}, timelines=["nope"])
    s.write_timeline("A:run=3,subject=s1", features={"text": np.ones((4, 5, 3))}, fmri=np.ones((2, V)),
                     meta=_meta("A", "s1"))
    with pytest.raises(PipelineError, match=r"modality 'text'.*\(2, 3\).*\(5, 3\)"):
        make_dataset(s, subjects_index={"A/s1": 0, "A/s2": 1})


def test_truncated_file_named_on_read(tmp_path):
    s = ramp_store(tmp_path / "st")
    src = P.WindowSource(s, s.timelines, subjects_index={"A/s1": 0, "A/s2": 1}, spec=P.WindowSpec(window_s=10))
    src[0]
    fname = s.manifest("A:run=1,subject=s1")["arrays"]["fmri"]["file"]
    (fpath,) = (tmp_path / "st").rglob(fname)
    with open(fpath, "r+b") as f:
        f.truncate(fpath.stat().st_size - 4 * V * 3)  # drop the last 3 samples
    with pytest.raises(StoreError, match=f"{fname}: short read"):
        src[2]
