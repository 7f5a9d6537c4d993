"""One self-contained HTML page to explore predictions in a browser, in the space the data are in:

* ``fsaverage5`` (20,484 columns): the inflated cortex (both hemispheres side by side, rotatable), HCP-MMP1
  area names and values on hover, the time course of a clicked area;
* ``subcortical`` (the voxels of `data.subcortical.load_grid`): three orthogonal slices (axial, coronal,
  sagittal) of the 2 mm MNI grid through a cursor voxel over the MNI152 template, structure outlines, the
  structure's name and the voxel's value on hover; a click moves the cursor and plots the structure's time
  course.

Both have a time slider with play/pause and one colour bar. The page needs no server and no network:
plotly's bundle (the copy nilearn ships; it draws the cortex and the time course) and the data are inlined.
Each frame is stored as one uint8 colour code per vertex or voxel (255 levels over [vmin, vmax], NaN its own
code) as the difference to the frame before, gzip-compressed and base64-encoded; the page inflates it with
the browser's DecompressionStream. Area and structure time courses are exact float32 means over their
vertices or voxels, computed here from the unquantised values.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import numbers
import re
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nforge_jax.data.fsaverage import get_hcp_labels, load_mesh, n_vertices
from nforge_jax.data.spaces import (FSAVERAGE5, SUBCORTICAL, UNSPECIFIED, OutputSpace, check_same_space,
                                    subcortical_space)

N_LEVELS = 255  # colour codes 0..254 span [vmin, vmax]
NAN_CODE = 255  # "no value": drawn in the sulcal grey
HEMI_GAP_MM = 8.0  # space between the hemispheres, which overlap on the inflated surface
ANATOMY_MAX_GREY = 170  # the brightest anatomy behind the subcortical voxels
PLOTLY_JS = ("nilearn", "_assets/js/plotly-gl3d-latest.min.js")


def view_predictions(values, out_path, *, space=None, title: str = "", tr_s: float = 1.0, start_s: float = 0.0,
                     cmap="cold_hot", vmin=None, vmax=None, symmetric=None,
                     frame_labels: Sequence[str] | None = None, mesh: str = "fsaverage5", grid=None) -> Path:
    """Writes an interactive viewer of ``values`` to ``out_path`` (.html) and returns the path.

    ``values``: predictions over TRs, (T, N); one map, (N,); or named maps {name: (N,)} (e.g. an evaluation's
    r, ceiling and r / ceiling), one frame each, labelled by name. ``space``: an `OutputSpace`,
    "fsaverage5" or "subcortical"; by default the column count decides (20,484: the cortex; the subcortical
    grid's voxel count: the volume view; anything else is an error). ``grid``: the `SubcorticalGrid` of the
    columns (default `load_grid()`); a subcortical OutputSpace must name the same grid. NaN = no value: the
    medial wall or a voxel without prediction, drawn grey. Frame ``i`` of a (T, N) array is labelled
    "t = {start_s + i * tr_s} s" unless ``frame_labels`` names the frames. One colour scale for all frames
    (``vmin`` / ``vmax``, default as `plot_cortex`). The file appears complete or not at all (temporary file
    + rename).
    """
    from nforge_jax.data.store import atomic_open
    from nforge_jax.viz.surface import color_range

    out_path = _check_out_path(out_path)
    kind, grid = _resolve_space(space, _n_columns(values), mesh=mesh, grid=grid)
    n_points = n_vertices(mesh) if kind == FSAVERAGE5 else grid.n_voxels
    where = mesh if kind == FSAVERAGE5 else "the subcortical grid"
    frames, labels, times = _frames(values, frame_labels, tr_s, start_s, n_points, where)
    given = (vmin, vmax)
    vmin, vmax = color_range(frames, vmin=vmin, vmax=vmax, symmetric=symmetric)
    if given == (None, None) and np.isfinite(vmin) and vmin == vmax:  # a constant map: a range around its value
        vmin, vmax = vmin - max(abs(vmin), 1.0), vmax + max(abs(vmax), 1.0)
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"vmin, vmax: expected finite numbers with vmin < vmax, got vmin={vmin}, vmax={vmax}")
    if kind == FSAVERAGE5:
        geometry, regions = _mesh_payload(mesh), get_hcp_labels(mesh)
    else:
        geometry, regions = _volume_payload(grid), _structures(grid)
    data = {"title": str(title), "space": kind, "labels": labels, "times": times, "vmin": float(vmin),
            "vmax": float(vmax), "n_frames": int(frames.shape[0]), "n_points": int(frames.shape[1]),
            "lut": _b64(_color_table(cmap)), "codes": _packed(time_deltas(quantize(frames, vmin, vmax))),
            **geometry, **_region_payload(frames, regions)}
    page = _page(data, str(title))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_path) as f:
        f.write(page.encode("utf-8"))
    return out_path


def _resolve_space(space, n_columns: int | None, *, mesh: str = "fsaverage5", grid=None):
    """("fsaverage5", None) or ("subcortical", grid): what ``space`` names, else (None or an "unspecified"
    OutputSpace) what the column count says. ValueError otherwise; SpaceMismatch for an OutputSpace of
    another grid than ``grid`` (default `load_grid()`)."""
    if isinstance(space, str):
        if space not in (FSAVERAGE5, SUBCORTICAL):
            raise ValueError(f"space: expected {FSAVERAGE5!r}, {SUBCORTICAL!r} or an OutputSpace, got {space!r}")
        name = space
    elif isinstance(space, OutputSpace):
        name = None if space.name == UNSPECIFIED else space.name
    elif space is None:
        name = None
    else:
        raise ValueError(f"space: expected {FSAVERAGE5!r}, {SUBCORTICAL!r} or an OutputSpace, "
                         f"got {type(space).__name__}")
    if name == FSAVERAGE5 or (name is None and n_columns in (None, n_vertices(mesh))):
        return FSAVERAGE5, None  # no columns to count (no maps, a scalar): the cortex's checks say what is wrong
    grid = _subcortical_grid(grid, n_columns if name is None else None, mesh)
    if name is None and n_columns != grid.n_voxels:
        raise ValueError(f"values: {n_columns} columns match no output space; expected {n_vertices(mesh)} "
                         f"({mesh} vertices) or {grid.n_voxels} (subcortical grid voxels) per frame or map")
    if isinstance(space, OutputSpace) and space.grid:
        check_same_space(space, subcortical_space(grid), expected_what="the values' space",
                         got_what=f"the subcortical grid loaded here ({grid.source})")
    return SUBCORTICAL, grid


def _subcortical_grid(grid, n_columns: int | None, mesh: str):
    """The given grid, else `load_grid()`; when only the column count pointed here, a missing atlas is
    reported as the count matching nothing known."""
    if grid is not None:
        return grid
    from nforge_jax.data.subcortical import load_grid

    if n_columns is None:
        return load_grid()
    try:
        return load_grid()
    except FileNotFoundError as e:
        raise ValueError(f"values: {n_columns} columns are not {n_vertices(mesh)} ({mesh} vertices), and the "
                         f"subcortical grid to compare with is not available ({' '.join(str(e).split())})") from None


def _n_columns(values) -> int | None:
    """Columns of the array, or of the first named map; None when there is nothing to count."""
    first = next(iter(values.values()), None) if isinstance(values, Mapping) else values
    shape = np.shape(first) if first is not None else ()
    return int(shape[-1]) if shape else None


def quantize(frames: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(T, V) float -> uint8 colour codes: 0..254 linearly over [vmin, vmax] (clipped), NaN -> 255."""
    scaled = (np.asarray(frames, np.float64) - vmin) * ((N_LEVELS - 1) / (vmax - vmin))
    codes = np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), 0, N_LEVELS - 1)).astype(np.uint8)
    codes[np.isnan(frames)] = NAN_CODE
    return codes


def time_deltas(codes: np.ndarray) -> np.ndarray:
    """Frame 0, then each frame minus the one before (mod 256): the same information, but smooth time courses
    make small differences, which gzip packs about 20 % tighter. The page sums them back."""
    out = codes.copy()
    out[1:] -= codes[:-1]  # uint8 arithmetic wraps mod 256
    return out


def _check_out_path(out_path) -> Path:
    path = Path(out_path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"out_path: expected an .html file name, got {str(out_path)!r}")
    if path.is_dir():
        raise ValueError(f"out_path: {str(out_path)!r} is a directory; expected an .html file name")
    return path


def _frames(values, frame_labels, tr_s, start_s, v: int, where: str) -> tuple[np.ndarray, list[str], list | None]:
    """(T, v) float32 frames, their labels, and their times in s (None for named maps: no time axis)."""
    if isinstance(tr_s, bool) or not isinstance(tr_s, numbers.Real) or not (np.isfinite(tr_s) and tr_s > 0):
        raise ValueError(f"tr_s: expected a positive number of seconds per frame, got {tr_s!r}")
    if isinstance(start_s, bool) or not isinstance(start_s, numbers.Real) or not np.isfinite(start_s):
        raise ValueError(f"start_s: expected the time of the first frame in seconds, got {start_s!r}")
    if isinstance(values, Mapping):
        if not values:
            raise ValueError("values: expected at least one named map, got an empty mapping")
        names = [str(k) for k in values]
        maps = [np.asarray(m, np.float32) for m in values.values()]
        for name, m in zip(names, maps):
            if m.shape != (v,):
                raise ValueError(f"values[{name!r}]: expected shape ({v},) for {where}, got {m.shape}")
        frames, times = np.stack(maps), None
        labels = names if frame_labels is None else frame_labels
    else:
        frames = np.asarray(values, np.float32)
        if frames.ndim == 1:
            frames = frames[None]
        if frames.ndim != 2 or frames.shape[1] != v:
            raise ValueError(f"values: expected shape (n_frames, {v}) or ({v},) for {where}, "
                             f"got {np.shape(values)}")
        times = [round(float(start_s) + i * float(tr_s), 6) for i in range(frames.shape[0])]
        labels = [f"t = {t:g} s" for t in times] if frame_labels is None else frame_labels
    if frames.shape[0] == 0:
        raise ValueError("values: no frames (T = 0)")
    if np.isinf(frames).any():
        raise ValueError("values: contains +-inf; expected finite values (NaN where there is no value)")
    if np.isnan(frames).all():
        raise ValueError("values: every value is NaN; nothing to show")
    labels = [str(x) for x in labels]
    if len(labels) != frames.shape[0]:
        raise ValueError(f"frame_labels: expected {frames.shape[0]} labels (one per frame), got {len(labels)}")
    return frames, labels, times


def _color_table(cmap) -> np.ndarray:
    """(N_LEVELS, 3) uint8 RGB of ``cmap`` (a matplotlib colormap or its name; nilearn's, e.g. cold_hot, too)."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the viewer's colours come from matplotlib: pip install matplotlib (or the 'viz' "
                           "extra)") from None
    if isinstance(cmap, str):
        if cmap not in matplotlib.colormaps:
            import nilearn.plotting  # noqa: F401  registers nilearn's colormaps (cold_hot, ...) with matplotlib
        if cmap not in matplotlib.colormaps:
            raise ValueError(f"cmap: unknown colormap {cmap!r}; expected a matplotlib or nilearn colormap name")
        cmap = matplotlib.colormaps[cmap]
    rgba = cmap(np.linspace(0.0, 1.0, N_LEVELS))
    return np.rint(np.asarray(rgba)[:, :3] * 255).astype(np.uint8)


def _mesh_payload(mesh: str) -> dict:
    """Inflated surfaces side by side (left hemisphere moved left of the right one), faces, and the sulcal
    grey of every vertex (deep sulci darker) for vertices without a value."""
    fs = load_mesh(mesh)
    left = np.array(fs.coords("inflated", "left"), np.float32)
    right = np.array(fs.coords("inflated", "right"), np.float32)
    left[:, 0] -= left[:, 0].max() + HEMI_GAP_MM / 2
    right[:, 0] -= right[:, 0].min() - HEMI_GAP_MM / 2
    sulc = fs.sulc_both().astype(np.float64)
    grey = 200 - 60 * np.clip(sulc / (np.abs(sulc).max() or 1.0), -1, 1)
    return {"coords": _packed(np.concatenate([left, right])), "faces": _packed(fs.both("inflated").faces),
            "background": _packed(np.rint(grey).astype(np.uint8))}


def _volume_payload(grid) -> dict:
    """The grid's geometry, its voxels' (i, j, k), the MNI152 template on the grid as grey levels, and the
    first cursor: the grid voxel nearest the centre of the left-hemisphere structures."""
    left = grid.structure_indices("left")
    centre = grid.ijk[left].mean(axis=0)
    cursor = grid.ijk[left][np.argmin(((grid.ijk[left] - centre) ** 2).sum(axis=1))]
    return {"shape": [int(x) for x in grid.shape], "affine": np.asarray(grid.affine, float).tolist(),
            "voxel_ijk": _packed(np.asarray(grid.ijk, np.int16)), "anatomy": _packed(mni_background(grid)),
            "cursor": [int(x) for x in cursor]}


def mni_background(grid) -> np.ndarray:
    """nilearn's MNI152 template (shipped with nilearn, 2 mm) resampled onto the grid: uint8 grey levels,
    0 outside the brain, ANATOMY_MAX_GREY (dim enough that the coloured voxels stand out) at its 99.5th
    percentile."""
    from nilearn.datasets import load_mni152_template
    from nilearn.image import resample_to_img

    template = resample_to_img(load_mni152_template(resolution=2), grid.label_image(), interpolation="continuous",
                               force_resample=True, copy_header=True)
    values = np.nan_to_num(np.asarray(template.get_fdata(), np.float64))
    top = np.percentile(values[values > 0], 99.5) if (values > 0).any() else 1.0
    return np.rint(np.clip(values / top, 0, 1) * ANATOMY_MAX_GREY).astype(np.uint8)


def _structures(grid) -> dict[str, np.ndarray]:
    """{structure: voxel indices}: left then right, each in data.subcortical.STRUCTURES order."""
    from nforge_jax.data.subcortical import STRUCTURES

    present = set(grid.voxel_structures.tolist())
    names = [f"{side}_{s}" for side in ("left", "right") for s in STRUCTURES if f"{side}_{s}" in present]
    return {name: grid.structure_indices(name) for name in names}


def _region_payload(frames: np.ndarray, regions: Mapping[str, np.ndarray]) -> dict:
    """Region (HCP-MMP1 area or subcortical structure) of each point (-1: none, e.g. the medial wall) and each
    region's exact mean over its points with a value, per frame."""
    names = list(regions)
    region_of = np.full(frames.shape[1], -1, np.int16)
    means = np.full((len(names), frames.shape[0]), np.nan, np.float32)
    with np.errstate(invalid="ignore"):
        for a, name in enumerate(names):
            idx = regions[name]
            region_of[idx] = a
            if idx.size:
                counts = np.isfinite(frames[:, idx]).sum(axis=1)
                sums = np.nansum(frames[:, idx], axis=1, dtype=np.float64)
                means[a] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return {"region_names": names, "region_of": _packed(region_of), "region_means": _packed(means)}


def _packed(array: np.ndarray) -> dict:
    """Little-endian bytes, gzip-compressed, base64: what the page's inflate() reads back."""
    array = np.ascontiguousarray(array)
    array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {"dtype": array.dtype.name, "shape": list(array.shape),
            "gz": _b64(gzip.compress(array.tobytes(), compresslevel=6, mtime=0))}


def _b64(data) -> str:
    raw = data.tobytes() if isinstance(data, np.ndarray) else data
    return base64.b64encode(raw).decode("ascii")


def _asset(name: str) -> str:
    return resources.files("nforge_jax.viz").joinpath(name).read_text(encoding="utf-8")


def _plotly_js() -> str:
    package, path = PLOTLY_JS
    try:
        return resources.files(package).joinpath(path).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise RuntimeError(f"plotly's WebGL bundle ({package}/{path}) not found: the viewer needs nilearn >= 0.14, "
                           f"which ships it ({e})") from None


def _page(data: dict, title: str) -> str:
    # "</script" or "<!--" in a label would end or confuse the inline <script>: "<" only occurs inside JSON
    # strings, where the escaped form means the same.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    parts = {"{{TITLE}}": html.escape(title or "nforge view"), "/*PLOTLY_JS*/": _plotly_js(),
             "/*VIEWER_JS*/": _asset("view.js"), "/*DATA_JSON*/": payload}
    for name in ("/*PLOTLY_JS*/", "/*VIEWER_JS*/"):
        if "</script" in parts[name].lower():
            raise RuntimeError(f"{name}: an inlined script must not contain '</script'")
    template = _asset("view.html")
    markers = re.compile("|".join(re.escape(m) for m in parts))
    if sorted(markers.findall(template)) != sorted(parts):
        raise RuntimeError(f"view.html: expected each of the markers {list(parts)} once")
    # one pass over the template: inlined text is never searched for markers itself
    return markers.sub(lambda m: parts[m.group(0)], template)
