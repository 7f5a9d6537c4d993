"""fMRI files -> training targets on fsaverage5, the way TRIBE v2 builds them.

Per run (one timeline):

1. read the 4-D BOLD volume, multiply every frame by the boolean brain mask when there is one;
2. project to fsaverage5 as ``nilearn.surface.vol_to_surf(img, pial, inner_mesh=white, kind="ball",
   radius=3, interpolation="linear")`` does, left hemisphere then right (20,484 rows) -- or, for surface
   data (GIFTI, one data array per volume), keep the first 10,242 vertices of each hemisphere;
3. per vertex: non-finite -> 0, linear detrend, z-score with ddof=1 (``nilearn.signal.clean`` with
   ``detrend=True, standardize="zscore_sample", ensure_finite=True``);
4. resample from the TR grid ``k * TR`` to 1 Hz with linear interpolation; samples past the last
   acquisition take the last value.

The projection is exact but fast: nilearn's ball sampling and trilinear interpolation are linear in the
voxel values, so for a given volume grid (shape + affine) they are one sparse matrix, built once and
reused for every frame and every run on that grid. ``project_volume(..., method="nilearn")`` calls
``vol_to_surf`` itself (slow: one interpolator per frame) and is what the tests compare against.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nforge_jax.data.targets import clean_and_resample  # the one implementation (TRIBE v2 cleaning + 1 Hz)

__all__ = [
    "FSAVERAGE5_VERTICES",
    "N_VERTICES",
    "FSAVERAGE_SIZES",
    "FmriFileError",
    "n_volumes",
    "load_volume",
    "project_volume",
    "load_volume_targets",
    "load_surface_bold",
    "truncate_surface",
    "clean_and_resample",
]

FSAVERAGE5_VERTICES = 10242
N_VERTICES = 2 * FSAVERAGE5_VERTICES
# Vertices per hemisphere of the fsaverage family; the first 10,242 of any of them are fsaverage5's.
FSAVERAGE_SIZES = {"fsaverage5": 10242, "fsaverage6": 40962, "fsaverage7": 163842, "fsaverage": 163842}

BALL_RADIUS_MM = 3.0
BALL_SAMPLES = 20  # nilearn's default for kind="ball"


class FmriFileError(ValueError):
    """An fMRI file is missing, unreadable or not shaped as expected (the message names the file)."""


# ----------------------------------------------------------------------------------------------- reading

def _load_nifti(path: Path):
    import nibabel

    path = Path(path)
    if not path.is_file():
        raise FmriFileError(f"{path}: fMRI file not found")
    try:
        return nibabel.load(str(path))
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise FmriFileError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc


def n_volumes(path: Path) -> int:
    """Number of volumes of a 4-D NIfTI (header only) or of a GIFTI time series (one array per volume)."""
    path = Path(path)
    if str(path).endswith(".gii"):
        n = _gifti_n_arrays(path)
        return n if n > 1 else _load_gifti_hemi(path).shape[1]  # one (vertices, time) array
    shape = _load_nifti(path).shape
    if len(shape) != 4:
        raise FmriFileError(f"{path}: expected a 4-D BOLD image (x, y, z, time), got shape {shape}")
    return int(shape[3])


def load_volume(bold_path: Path, mask_path: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a 4-D BOLD NIfTI (float32 data, affine) and its 3-D brain mask (bool) if given.

    Shapes are checked: the BOLD must be 4-D with at least 2 volumes, the mask 3-D with the BOLD's
    spatial shape (TRIBE multiplies them voxel by voxel, with no resampling).
    """
    img = _load_nifti(bold_path)
    if len(img.shape) != 4:
        raise FmriFileError(f"{bold_path}: expected a 4-D BOLD image (x, y, z, time), got shape {img.shape}")
    if img.shape[3] < 2:
        raise FmriFileError(f"{bold_path}: expected at least 2 volumes, got {img.shape[3]}")
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except Exception as exc:
        raise FmriFileError(f"{bold_path}: cannot read the image data ({type(exc).__name__}: {exc}); "
                            "the file may be truncated") from exc
    affine = np.asarray(img.affine, dtype=np.float64)
    mask = None
    if mask_path is not None:
        mimg = _load_nifti(mask_path)
        mshape = tuple(mimg.shape)
        if len(mshape) == 4 and mshape[3] == 1:
            mshape = mshape[:3]
        if mshape != tuple(img.shape[:3]):
            raise FmriFileError(f"{mask_path}: brain mask shape {tuple(mimg.shape)} does not match the BOLD "
                                f"volume shape {tuple(img.shape[:3])} of {bold_path}")
        try:
            mask = np.asarray(mimg.dataobj).reshape(mshape).astype(bool)
        except Exception as exc:
            raise FmriFileError(f"{mask_path}: cannot read the mask data ({type(exc).__name__}: {exc})") from exc
    return data, affine, mask


# -------------------------------------------------------------------------------------------- projection

def _fsaverage5_meshes() -> dict:
    from nilearn import datasets

    return datasets.fetch_surf_fsaverage("fsaverage5")


@dataclass
class _HemiOperator:
    voxels: np.ndarray  # flat (Fortran-order) indices of the voxels the hemisphere reads
    matrix: object  # scipy.sparse CSR (n_vertices, len(voxels)), rows = mean over the ball samples
    empty: np.ndarray  # vertices with no sample inside the image (nilearn gives NaN there)


_OPERATORS: dict = {}
_OPERATORS_LOCK = threading.Lock()


def _hemi_operator(mesh, shape: tuple, affine: np.ndarray) -> _HemiOperator:
    """Sparse matrix equal to nilearn's ball sampling + trilinear interpolation + mean over samples."""
    import scipy.sparse
    # The sample positions are nilearn's own (its fixed 20-point ball cloud), so they cannot drift apart.
    from nilearn.surface.surface import _ball_sample_locations

    locs = _ball_sample_locations(mesh, affine, ball_radius=BALL_RADIUS_MM, n_points=BALL_SAMPLES)
    n_vert, n_samp, _ = locs.shape
    flat = locs.reshape(-1, 3)
    # nilearn drops samples outside [0, size) per axis, and averages the rest (nanmean)
    kept = (flat >= 0).all(axis=1)
    for dim, size in enumerate(shape):
        kept &= flat[:, dim] < size
    counts = kept.reshape(n_vert, n_samp).sum(axis=1)
    rows = np.repeat(np.arange(n_vert), n_samp)[kept]
    pts = flat[kept]
    # scipy's RegularGridInterpolator("linear", fill_value=None): cell index clipped to [0, n-2], so the
    # strip [n-1, n) is linearly extrapolated from the last cell.
    base = np.empty(pts.shape, dtype=np.int64)
    frac = np.empty(pts.shape, dtype=np.float64)
    for dim, size in enumerate(shape):
        i0 = np.clip(np.floor(pts[:, dim]).astype(np.int64), 0, max(size - 2, 0))
        base[:, dim] = i0
        frac[:, dim] = pts[:, dim] - i0
    inv_count = 1.0 / np.maximum(counts, 1)[rows]
    nx, ny, _ = shape
    all_rows, all_cols, all_vals = [], [], []
    for cx in (0, 1):
        wx = frac[:, 0] if cx else 1.0 - frac[:, 0]
        for cy in (0, 1):
            wy = frac[:, 1] if cy else 1.0 - frac[:, 1]
            for cz in (0, 1):
                wz = frac[:, 2] if cz else 1.0 - frac[:, 2]
                ix = np.minimum(base[:, 0] + cx, shape[0] - 1)
                iy = np.minimum(base[:, 1] + cy, shape[1] - 1)
                iz = np.minimum(base[:, 2] + cz, shape[2] - 1)
                all_rows.append(rows)
                all_cols.append(ix + nx * (iy + ny * iz))
                all_vals.append(wx * wy * wz * inv_count)
    rows_c = np.concatenate(all_rows)
    cols_c = np.concatenate(all_cols)
    vals_c = np.concatenate(all_vals)
    voxels, compact = np.unique(cols_c, return_inverse=True)
    matrix = scipy.sparse.csr_matrix((vals_c, (rows_c, compact)), shape=(n_vert, len(voxels)))
    matrix.sum_duplicates()
    return _HemiOperator(voxels=voxels, matrix=matrix, empty=counts == 0)


def _operators(shape: tuple, affine: np.ndarray) -> list[_HemiOperator]:
    key = (tuple(int(s) for s in shape), np.round(affine, 6).tobytes())
    with _OPERATORS_LOCK:
        ops = _OPERATORS.get(key)
        if ops is None:
            from nilearn.surface import load_surf_mesh

            meshes = _fsaverage5_meshes()
            ops = [_hemi_operator(load_surf_mesh(meshes[f"pial_{h}"]), tuple(shape), affine)
                   for h in ("left", "right")]
            if len(_OPERATORS) >= 8:  # a handful of grids per study; keep memory bounded
                _OPERATORS.clear()
            _OPERATORS[key] = ops
    return ops


def project_volume(data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None = None, *,
                   method: str = "sparse") -> np.ndarray:
    """Project a 4-D volume (x, y, z, T) to fsaverage5: (20484, T) float32, left hemisphere first.

    Equal to ``vol_to_surf(masked_img, pial_<hemi>, inner_mesh=white_<hemi>, kind="ball", radius=3,
    interpolation="linear")`` stacked left over right, where ``masked_img`` is the volume multiplied by
    ``mask``. Non-finite voxel values count as 0; vertices whose ball lies wholly outside the image are NaN
    (as in nilearn).
    """
    if data.ndim != 4:
        raise ValueError(f"expected a 4-D volume (x, y, z, time), got shape {data.shape}")
    if method == "nilearn":
        return _project_nilearn(data, affine, mask)
    if method != "sparse":
        raise ValueError(f"method must be 'sparse' or 'nilearn', got {method!r}")
    shape = data.shape[:3]
    n_t = data.shape[3]
    flat = data.reshape(-1, n_t, order="F")  # a view for the Fortran-ordered arrays nibabel returns
    mask_flat = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1, order="F")
    out = np.empty((N_VERTICES, n_t), dtype=np.float32)
    for h, op in enumerate(_operators(shape, affine)):
        values = np.asarray(flat[op.voxels], dtype=np.float64)
        values[~np.isfinite(values)] = 0.0
        if mask_flat is not None:
            values *= mask_flat[op.voxels][:, None]
        hemi = op.matrix @ values
        hemi[op.empty] = np.nan
        out[h * FSAVERAGE5_VERTICES:(h + 1) * FSAVERAGE5_VERTICES] = hemi
        del values, hemi
    return out


def _project_nilearn(data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    import nibabel
    from nilearn.surface import vol_to_surf

    if mask is not None:
        data = data * np.asarray(mask, dtype=bool)[..., None]
    img = nibabel.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    meshes = _fsaverage5_meshes()
    hemis = [vol_to_surf(img, surf_mesh=meshes[f"pial_{h}"], inner_mesh=meshes[f"white_{h}"], radius=BALL_RADIUS_MM,
                         interpolation="linear", kind="ball", n_samples=None, mask_img=None, depth=None)
             for h in ("left", "right")]
    return np.vstack(hemis).astype(np.float32)


def load_volume_targets(bold_path: Path, mask_path: Path | None, tr_s: float) -> np.ndarray:
    """Volume run -> (n_1Hz, 20484) float32 training target (mask, project, clean, resample)."""
    data, affine, mask = load_volume(bold_path, mask_path)
    surf = project_volume(data, affine, mask)
    del data, mask
    return clean_and_resample(surf.T, tr_s)


# ---------------------------------------------------------------------------------------------- surfaces

def _gifti_n_arrays(path: Path) -> int:
    """Count ``<DataArray`` elements without decoding them (a fsaverage run is hundreds of MB)."""
    path = Path(path)
    if not path.is_file():
        raise FmriFileError(f"{path}: surface fMRI file not found")
    tag, count, tail = b"<DataArray", 0, b""
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 22)
            if not block:
                break
            buf = tail + block
            count += buf.count(tag)
            tail = buf[-(len(tag) - 1):]
            # a tag lying wholly in the kept tail was counted already; the tail is shorter than the tag
    if count == 0:
        raise FmriFileError(f"{path}: no GIFTI data arrays found (expected one per volume)")
    return count


def _load_gifti_hemi(path: Path) -> np.ndarray:
    """One hemisphere's GIFTI time series -> (n_vertices_total, T) view of the first 10,242 rows kept later."""
    import nibabel

    path = Path(path)
    if not path.is_file():
        raise FmriFileError(f"{path}: surface fMRI file not found")
    try:
        img = nibabel.load(str(path))
        arrays = img.darrays
    except Exception as exc:
        raise FmriFileError(f"{path}: cannot read as GIFTI ({type(exc).__name__}: {exc})") from exc
    if not arrays:
        raise FmriFileError(f"{path}: GIFTI has no data arrays (expected one per volume)")
    if len(arrays) == 1 and np.asarray(arrays[0].data).ndim == 2:
        data = np.asarray(arrays[0].data, dtype=np.float32)  # a single (vertices, time) array
    else:
        sizes = {np.asarray(a.data).shape for a in arrays}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise FmriFileError(f"{path}: expected one 1-D data array per volume, got shapes {sorted(sizes)}")
        data = np.stack([np.asarray(a.data, dtype=np.float32) for a in arrays], axis=1)
    return data


def truncate_surface(left: np.ndarray, right: np.ndarray, *, source: str = "surface") -> np.ndarray:
    """(n, T) per hemisphere on an fsaverage mesh -> (20484, T): the first 10,242 vertices of each."""
    if left.shape != right.shape:
        raise FmriFileError(f"{source}: left {left.shape} and right {right.shape} hemispheres differ in shape")
    n = left.shape[0]
    if n not in set(FSAVERAGE_SIZES.values()):
        raise FmriFileError(f"{source}: {n} vertices per hemisphere is not an fsaverage mesh "
                            f"(expected one of {sorted(set(FSAVERAGE_SIZES.values()))}; fsaverage5 cannot be "
                            "made from a coarser mesh)")
    return np.concatenate([left[:FSAVERAGE5_VERTICES], right[:FSAVERAGE5_VERTICES]], axis=0)


def load_surface_bold(left_path: Path, right_path: Path) -> np.ndarray:
    """Left and right GIFTI time series -> (20484, T) float32 on fsaverage5."""
    left = _load_gifti_hemi(left_path)
    right = _load_gifti_hemi(right_path)
    out = truncate_surface(left, right, source=f"{left_path} / {right_path}")
    if out.shape[1] < 2:
        raise FmriFileError(f"{left_path}: expected at least 2 volumes, got {out.shape[1]}")
    return np.ascontiguousarray(out, dtype=np.float32)
