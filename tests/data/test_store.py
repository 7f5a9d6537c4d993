import hashlib
import json
import os

import numpy as np
import pytest

from nforge_jax.cli import main as nforge
from nforge_jax.data import store as store_mod
from nforge_jax.data.store import FeatureStore, StoreError, format_info

NAME = "Wen2017:run=1,seg=seg3,subject=subject1"


def meta(study="Wen2017", subject="subject1", **kw):
    m = {"study": study, "subject": subject, "tr_s": 2.0,
         "extractors": {"text": {"model_id": "tiny", "layer_fractions": [0.5, 0.75, 1.0],
                                 "aggregation": "group_mean"}}}
    m.update(kw)
    return m


def arrays(rng, t=10, n=5, v=7):
    return ({"text": rng.standard_normal((t, 2, 3)).astype(np.float32),
             "audio": rng.standard_normal((t, 2, 4)).astype(np.float32)},
            rng.standard_normal((n, v)).astype(np.float32))


def test_roundtrip_names_dtypes_and_readonly(tmp_path):
    rng = np.random.default_rng(0)
    feats, fmri = arrays(rng)
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline(NAME, features=feats, fmri=fmri, meta=meta())
    s2 = FeatureStore.open(tmp_path / "st")
    assert s2.timelines == [NAME]
    assert s2.modalities(NAME) == ["audio", "text"]
    t = s2.features(NAME, "text")
    assert isinstance(t, np.memmap) and t.dtype == np.float16 and t.shape == (10, 2, 3)
    np.testing.assert_array_equal(t, feats["text"].astype(np.float16))
    f = s2.fmri(NAME)
    assert f.dtype == np.float32
    np.testing.assert_array_equal(f, fmri)
    with pytest.raises(ValueError):
        t[0, 0, 0] = 1.0
    m = s2.manifest(NAME)
    assert m["name"] == NAME
    assert m["meta"]["offset_s"] == 5.0 and m["meta"]["feature_hz"] == 2.0 and m["meta"]["fmri_hz"] == 1.0
    assert m["arrays"]["fmri"]["shape"] == [5, 7]
    # checksum is sha256 of the C-order data bytes, computed here independently
    assert m["arrays"]["features/text"]["sha256"] == hashlib.sha256(
        feats["text"].astype(np.float16).tobytes()).hexdigest()
    # directory names are safe: no ':' '=' ',' '/' on disk
    for d in (tmp_path / "st" / "timelines").iterdir():
        assert not set(d.name) & set(":=,/")
    assert s2.verify() == []


def test_names_with_slashes_do_not_collide(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    rng = np.random.default_rng(1)
    names = ["a/b:c=1", "a_b_c_1", "a:b/c=1"]
    for i, n in enumerate(names):
        s.write_timeline(n, fmri=np.full((2, 3), i, np.float32), meta=meta())
    assert s.timelines == sorted(names)
    for i, n in enumerate(names):
        assert float(s.fmri(n)[0, 0]) == i
    assert s.modalities(names[0]) == []
    del rng


def test_fmri_float16_and_features_only(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    fm = np.linspace(-3, 3, 20, dtype=np.float32).reshape(4, 5)
    s.write_timeline("x", fmri=fm, meta=meta(), fmri_dtype="float16")
    assert s.fmri("x").dtype == np.float16
    s.write_timeline("y", features={"video": np.ones((3, 1, 2))}, meta=meta())
    assert s.fmri("y") is None


def test_chunked_write_matches(tmp_path, monkeypatch):
    # force many tiny chunks: the result must equal a one-shot conversion
    monkeypatch.setattr(store_mod, "CHUNK_BYTES", 16)
    rng = np.random.default_rng(2)
    feats, fmri = arrays(rng, t=33, n=17)
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline(NAME, features=feats, fmri=fmri, meta=meta())
    np.testing.assert_array_equal(s.features(NAME, "audio"), feats["audio"].astype(np.float16))
    np.testing.assert_array_equal(s.fmri(NAME), fmri)
    assert s.manifest(NAME)["arrays"]["fmri"]["sha256"] == hashlib.sha256(fmri.tobytes()).hexdigest()
    assert s.verify() == []


def test_exists_and_overwrite(tmp_path):
    rng = np.random.default_rng(3)
    feats, fmri = arrays(rng)
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline(NAME, features=feats, fmri=fmri, meta=meta())
    with pytest.raises(StoreError, match="already exists"):
        s.write_timeline(NAME, fmri=fmri, meta=meta())
    s.write_timeline(NAME, fmri=fmri * 2, meta=meta(), overwrite=True)
    assert s.modalities(NAME) == []
    np.testing.assert_array_equal(s.fmri(NAME), fmri * 2)
    # superseded files are gone: only the manifest and the new fmri remain
    tdir = tmp_path / "st" / "timelines" / store_mod.timeline_dirname(NAME)
    assert sorted(p.name.split(".")[0] for p in tdir.iterdir()) == ["fmri", "manifest"]


def test_add_features(tmp_path):
    rng = np.random.default_rng(4)
    feats, fmri = arrays(rng)
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline(NAME, features={"text": feats["text"]}, fmri=fmri, meta=meta())
    s.add_features(NAME, "audio", feats["audio"])
    assert s.modalities(NAME) == ["audio", "text"]
    new_text = feats["text"] + 1
    s.add_features(NAME, "text", new_text)
    np.testing.assert_array_equal(s.features(NAME, "text"), new_text.astype(np.float16))
    np.testing.assert_array_equal(s.fmri(NAME), fmri)
    assert s.verify() == []
    with pytest.raises(StoreError, match="not in the store"):
        s.add_features("nope", "audio", feats["audio"])


def test_interrupted_write_is_invisible(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    feats, fmri = arrays(rng)
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline(NAME, features=feats, fmri=fmri, meta=meta())

    calls = {"n": 0}
    real = store_mod._write_npy

    def failing(path, array, dtype, *, what):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(path, array, dtype, what=what)

    monkeypatch.setattr(store_mod, "_write_npy", failing)
    with pytest.raises(KeyboardInterrupt):
        s.write_timeline(NAME, features={"text": feats["text"] * 5}, fmri=fmri * 5, meta=meta(), overwrite=True)
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        s.write_timeline("new", features={"text": feats["text"]}, fmri=fmri, meta=meta())
    monkeypatch.setattr(store_mod, "_write_npy", real)
    # a hard kill leaves array files without a manifest: still not a timeline
    leftover = tmp_path / "st" / "timelines" / store_mod.timeline_dirname("killed")
    leftover.mkdir()
    np.save(leftover / "fmri.abcd.npy", fmri)
    # the old version is intact, the new timeline does not exist
    assert s.timelines == [NAME]
    np.testing.assert_array_equal(s.fmri(NAME), fmri)
    np.testing.assert_array_equal(s.features(NAME, "text"), feats["text"].astype(np.float16))
    assert s.verify() == []
    # a later write of the same name succeeds
    s.write_timeline("new", fmri=fmri, meta=meta())
    assert s.timelines == sorted([NAME, "new"])


def test_verify_detects_truncation_and_corruption(tmp_path, capsys):
    rng = np.random.default_rng(6)
    feats, fmri = arrays(rng)
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline(NAME, features=feats, fmri=fmri, meta=meta())
    s.write_timeline("other", fmri=fmri, meta=meta())
    tdir = tmp_path / "st" / "timelines" / store_mod.timeline_dirname(NAME)
    fpath = tdir / s.manifest(NAME)["arrays"]["fmri"]["file"]
    apath = tdir / s.manifest(NAME)["arrays"]["features/audio"]["file"]
    size = fpath.stat().st_size
    with open(fpath, "r+b") as f:
        f.truncate(size - 8)
    with open(apath, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\x01\x02\x03")
    problems = s.verify()
    assert len(problems) == 2
    assert any("truncated" in p and fpath.name in p for p in problems)
    assert any("checksum mismatch" in p and apath.name in p for p in problems)
    assert s.verify("other") == []
    with pytest.raises(StoreError, match=fpath.name):
        s.fmri(NAME)
    assert nforge(["store", "verify", str(tmp_path / "st")]) == 1
    out = capsys.readouterr().out
    assert "truncated" in out and "FAILED: 2" in out
    # a deleted file is reported too
    apath.unlink()
    assert any("missing" in p for p in s.verify(NAME))


def test_bad_manifest_named(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline("x", fmri=np.zeros((2, 2), np.float32), meta=meta())
    mpath = tmp_path / "st" / "timelines" / store_mod.timeline_dirname("x") / "manifest.json"
    mpath.write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json"):
        FeatureStore.open(tmp_path / "st").manifest("x")


def test_create_and_open_errors(tmp_path):
    with pytest.raises(StoreError, match="no such directory"):
        FeatureStore.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="nforge_store.json"):
        FeatureStore.open(tmp_path / "plain")
    (tmp_path / "plain" / "x.txt").write_text("hi")
    with pytest.raises(StoreError, match="not empty"):
        FeatureStore.create(tmp_path / "plain")
    s = FeatureStore.create(tmp_path / "st")
    FeatureStore.create(tmp_path / "st")  # empty store: fine
    s.write_timeline("x", fmri=np.zeros((2, 2), np.float32), meta=meta())
    with pytest.raises(StoreError, match="already a FeatureStore"):
        FeatureStore.create(tmp_path / "st")
    (tmp_path / "st" / "nforge_store.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="'format'"):
        FeatureStore.open(tmp_path / "st")


@pytest.mark.parametrize("kwargs, match", [
    (dict(features={"text": np.zeros((3, 4))}), r"features\['text'\].*3 dimensions"),
    (dict(features={"Text!": np.zeros((3, 1, 4))}), "modality name"),
    (dict(fmri=np.zeros(5)), "fmri.*2 dimensions"),
    (dict(fmri=np.zeros((0, 5))), "non-empty"),
    (dict(fmri=np.array([[1.0, np.nan]])), r"fmri: value nan at index \(0, 1\) is not finite"),
    (dict(features={"text": np.full((2, 1, 1), 1e6)}), "outside the float16 range"),
    (dict(fmri=np.zeros((2, 2)), fmri_dtype="int8"), "fmri_dtype"),
    (dict(), "nothing to write"),
])
def test_bad_arrays(tmp_path, kwargs, match):
    s = FeatureStore.create(tmp_path / "st")
    with pytest.raises(StoreError, match=match):
        s.write_timeline("x", meta=meta(), **kwargs)
    assert s.timelines == []


@pytest.mark.parametrize("m, match", [
    ({"subject": "s"}, "'study'"),
    ({"study": "A", "subject": ""}, "'subject'"),
    ({"study": "A", "subject": "s", "tr_s": "2"}, "'tr_s'"),
    ({"study": "A", "subject": "s", "fmri_hz": 0}, "'fmri_hz'.*> 0"),
    ({"study": "A", "subject": "s", "x": object()}, "JSON"),
])
def test_bad_meta(tmp_path, m, match):
    s = FeatureStore.create(tmp_path / "st")
    with pytest.raises(StoreError, match=match):
        s.write_timeline("x", fmri=np.zeros((2, 2)), meta=m)


def test_info_and_cli(tmp_path, capsys):
    s = FeatureStore.create(tmp_path / "st")
    rng = np.random.default_rng(7)
    # 3600 fMRI samples at 1 Hz = 1 h; two subjects in study A, one in B
    s.write_timeline("A:1", features={"text": np.zeros((7200, 2, 3))}, fmri=np.zeros((3600, 4)),
                     meta=meta("A", "s1"))
    s.write_timeline("A:2", fmri=np.zeros((1800, 4)), meta=meta("A", "s2"))
    s.write_timeline("B:1", features={"video": rng.standard_normal((4, 1, 5))}, meta=meta("B", "s1"))
    i = s.info()
    assert i["n_timelines"] == 3
    assert i["n_subjects"] == 3 and i["subjects"] == ["A/s1", "A/s2", "B/s1"]
    assert i["studies"]["A"]["timelines"] == 2 and i["studies"]["A"]["subjects"] == ["s1", "s2"]
    assert i["fmri_hours"] == pytest.approx(1.5)
    assert i["studies"]["B"]["feature_hours"] == pytest.approx(2 / 3600)
    assert i["modalities"] == {"text": {"timelines": 1, "layers_dim": [[2, 3]]},
                               "video": {"timelines": 1, "layers_dim": [[1, 5]]}}
    assert i["n_vertices"] == [4]
    text = format_info(s)
    assert "timelines: 3" in text and "text: 2x3" in text and "A: 2 timelines, 2 subjects" in text
    assert nforge(["store", "info", str(tmp_path / "st")]) == 0 and "timelines: 3" in capsys.readouterr().out
    assert nforge(["store", "verify", str(tmp_path / "st")]) == 0
    assert capsys.readouterr().out.startswith("OK: 3 timelines")
    assert nforge(["store", "info", str(tmp_path / "nope")]) == 2 and "no such directory" in capsys.readouterr().err
    assert nforge(["store", "verify", str(tmp_path / "nope")]) == 2


def test_delete_timeline(tmp_path):
    s = FeatureStore.create(tmp_path / "st")
    s.write_timeline("x", fmri=np.zeros((2, 2)), meta=meta())
    s.delete_timeline("x")
    assert s.timelines == [] and "x" not in s
    with pytest.raises(StoreError, match="not in the store"):
        s.manifest("x")
