"""Manifests that point outside the store, or lack fields readers rely on, are refused naming the file and the
field; `verify` reports them, and non-finite values, instead of saying OK."""

import json
import os
import shutil

import numpy as np
import pytest

from nforge_jax.cli import main as nforge
from nforge_jax.data.spaces import OutputSpace, SpaceMismatch, fsaverage5_space
from nforge_jax.data.store import FeatureStore, StoreError


@pytest.fixture
def store(tmp_path):
    s = FeatureStore.create(tmp_path / "store")
    s.write_timeline("t", features={"text": np.ones((4, 2, 3), np.float32)}, meta={"study": "S", "subject": "x"})
    return s


def _edit(store, fn):
    mpath = store._dir("t") / "manifest.json"
    manifest = json.loads(mpath.read_text())
    fn(manifest)
    mpath.write_text(json.dumps(manifest))
    return mpath


def _entry_file(store):
    return store._dir("t") / store.manifest("t")["arrays"]["features/text"]["file"]


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_manifest_paths_stay_inside_the_store(store, tmp_path, capsys, how):
    outside = tmp_path / "outside.npy"
    shutil.copy(_entry_file(store), outside)  # same bytes: the checksum matches, so only the path can tell
    name = "../../../outside.npy" if how == "dotdot" else str(outside)
    assert (store._dir("t") / name).resolve() == outside.resolve()

    def point_outside(m):
        m["arrays"]["features/text"]["file"] = name

    _edit(store, point_outside)
    with pytest.raises(StoreError, match=r"manifest.json: field 'arrays.features/text'.file is .*expected a bare"):
        FeatureStore.open(store.path).features("t", "text")
    assert nforge(["store", "verify", str(store.path)]) == 1
    assert "expected a bare file name" in capsys.readouterr().out


def test_symlink_out_of_the_store_is_refused(store, tmp_path, capsys):
    src = _entry_file(store)
    outside = tmp_path / "elsewhere.npy"
    shutil.move(src, outside)
    os.symlink(outside, src)
    with pytest.raises(StoreError, match="symbolic link .* outside the store"):
        FeatureStore.open(store.path).features("t", "text")
    assert nforge(["store", "verify", str(store.path)]) == 1
    assert "outside the store" in capsys.readouterr().out


def test_array_entry_not_a_mapping(store, capsys):
    mpath = _edit(store, lambda m: m["arrays"].__setitem__("features/text", ["a.npy", [4, 2, 3]]))
    with pytest.raises(StoreError, match=r"manifest.json: field 'arrays.features/text' is a list, expected a mapping"):
        FeatureStore.open(store.path).features("t", "text")
    assert nforge(["store", "verify", str(store.path)]) == 1
    out = capsys.readouterr().out
    assert str(mpath) in out and "arrays.features/text" in out


def test_missing_meta_study_fails_verify(store, capsys):
    mpath = _edit(store, lambda m: m["meta"].pop("study"))
    assert nforge(["store", "verify", str(store.path)]) == 1
    assert f"{mpath}: field 'meta.study' is None, expected a non-empty string" in capsys.readouterr().out
    with pytest.raises(StoreError, match="meta.study"):
        FeatureStore.open(store.path).info()


def test_verify_reports_non_finite_values(store, capsys):
    import hashlib

    path = _entry_file(store)
    arr = np.load(path, mmap_mode="r+")
    arr[2, 1, 0] = np.nan
    arr.flush()
    sha = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    del arr
    _edit(store, lambda m: m["arrays"]["features/text"].__setitem__("sha256", sha))
    assert nforge(["store", "verify", str(store.path)]) == 1
    assert "value nan at row 2 is not finite" in capsys.readouterr().out


def test_meta_space_must_describe_the_fmri_columns(tmp_path):
    store = FeatureStore.create(tmp_path / "s")
    meta = {"study": "S", "subject": "x", "space": fsaverage5_space().to_dict()}
    with pytest.raises(StoreError, match=r"timeline 'bad'.*fsaverage5 \(20,484 vertices\) but holds 30 columns"):
        store.write_timeline("bad", fmri=np.zeros((4, 30), np.float32), meta=meta)
    with pytest.raises(StoreError, match=r"timeline 'odd'.*expected one of fsaverage5"):
        store.write_timeline("odd", fmri=np.zeros((4, 30), np.float32),
                             meta={**meta, "space": {"name": "mni", "n_outputs": 30}})
    assert store.timelines == []  # nothing written
    unnamed = OutputSpace("unspecified", 30)
    store.write_timeline("a", fmri=np.zeros((4, 30), np.float32), meta={"study": "S", "subject": "x"})
    store.write_timeline("f", features={"text": np.ones((4, 2, 3))}, meta={"study": "S", "subject": "x"})
    assert store.timeline_space("a") == unnamed and store.timeline_space("f") is None
    assert store.output_space() == unnamed
    store.write_timeline("c", fmri=np.zeros((4, 20484), np.float16), fmri_dtype="float16",
                         meta={"study": "S", "subject": "y"})
    with pytest.raises(SpaceMismatch, match=r"timeline 'c' is fsaverage5 .* but timeline 'a' of .* is unspecified"):
        store.output_space()
    assert store.output_space(["c", "f"]) == fsaverage5_space()
