"""One self-contained HTML page to explore cortical predictions in a browser: the inflated fsaverage5 cortex
(both hemispheres side by side, rotatable), a time slider with play/pause, HCP-MMP1 area names and values on
hover, and the time course of a clicked area.

The page needs no server and no network: plotly's WebGL bundle (the copy nilearn ships) and the data are
inlined. Each frame is stored as one uint8 colour code per vertex (255 levels over [vmin, vmax], NaN its own
code) as the difference to the frame before, gzip-compressed and base64-encoded; the page inflates it with the browser's DecompressionStream. Area
time courses are exact float32 means over the area's vertices, computed here from the unquantised values.
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

N_LEVELS = 255  # colour codes 0..254 span [vmin, vmax]
NAN_CODE = 255  # "no value": drawn in the sulcal grey
HEMI_GAP_MM = 8.0  # space between the hemispheres, which overlap on the inflated surface
PLOTLY_JS = ("nilearn", "_assets/js/plotly-gl3d-latest.min.js")


def view_predictions(values, out_path, *, title: str = "", tr_s: float = 1.0, start_s: float = 0.0,
                     cmap="cold_hot", vmin=None, vmax=None, symmetric=None,
                     frame_labels: Sequence[str] | None = None, mesh: str = "fsaverage5") -> Path:
    """Writes an interactive viewer of ``values`` to ``out_path`` (.html) and returns the path.

    ``values``: predictions over TRs, (T, V); one map, (V,); or named maps {name: (V,)} (e.g. an evaluation's
    r, ceiling and r / ceiling), one frame each, labelled by name. NaN = no value (the medial wall): drawn
    grey. Frame ``i`` of a (T, V) array is labelled "t = {start_s + i * tr_s} s" unless ``frame_labels``
    names the frames. One colour scale for all frames (``vmin`` / ``vmax``, default as `plot_cortex`). The
    file appears complete or not at all (temporary file + rename).
    """
    from nforge_jax.data.store import atomic_open
    from nforge_jax.viz.surface import color_range

    out_path = _check_out_path(out_path)
    frames, labels, times = _frames(values, frame_labels, tr_s, start_s, mesh)
    vmin, vmax = color_range(frames, vmin=vmin, vmax=vmax, symmetric=symmetric)
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"vmin, vmax: expected finite numbers with vmin < vmax, got vmin={vmin}, vmax={vmax}")
    data = {"title": str(title), "labels": labels, "times": times, "vmin": float(vmin), "vmax": float(vmax),
            "n_frames": int(frames.shape[0]), "n_vertices": int(frames.shape[1]),
            "lut": _b64(_color_table(cmap)), "codes": _packed(time_deltas(quantize(frames, vmin, vmax))),
            **_mesh_payload(mesh), **_area_payload(frames, mesh)}
    page = _page(data, str(title))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_path) as f:
        f.write(page.encode("utf-8"))
    return out_path


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


def _frames(values, frame_labels, tr_s, start_s, mesh) -> tuple[np.ndarray, list[str], list | None]:
    """(T, V) float32 frames, their labels, and their times in s (None for named maps: no time axis)."""
    v = n_vertices(mesh)
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
                raise ValueError(f"values[{name!r}]: expected shape ({v},) for {mesh}, got {m.shape}")
        frames, times = np.stack(maps), None
        labels = names if frame_labels is None else frame_labels
    else:
        frames = np.asarray(values, np.float32)
        if frames.ndim == 1:
            frames = frames[None]
        if frames.ndim != 2 or frames.shape[1] != v:
            raise ValueError(f"values: expected shape (n_frames, {v}) or ({v},) for {mesh}, "
                             f"got {np.shape(values)}")
        times = [round(float(start_s) + i * float(tr_s), 6) for i in range(frames.shape[0])]
        labels = [f"t = {t:g} s" for t in times] if frame_labels is None else frame_labels
    if frames.shape[0] == 0:
        raise ValueError("values: no frames (T = 0)")
    if np.isinf(frames).any():
        raise ValueError("values: contains +-inf; expected finite values (NaN for vertices without a value)")
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


def _area_payload(frames: np.ndarray, mesh: str) -> dict:
    """HCP-MMP1 area of each vertex (-1: medial wall) and each area's mean over its vertices per frame."""
    labels = get_hcp_labels(mesh)
    names = list(labels)
    area_of_vertex = np.full(frames.shape[1], -1, np.int16)
    means = np.full((len(names), frames.shape[0]), np.nan, np.float32)
    with np.errstate(invalid="ignore"):
        for a, name in enumerate(names):
            idx = labels[name]
            area_of_vertex[idx] = a
            if idx.size:
                counts = np.isfinite(frames[:, idx]).sum(axis=1)
                sums = np.nansum(frames[:, idx], axis=1, dtype=np.float64)
                means[a] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return {"area_names": names, "area_of_vertex": _packed(area_of_vertex), "area_means": _packed(means)}


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
