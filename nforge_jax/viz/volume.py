"""Subcortical maps in MNI space (nilearn, headless) and per-structure bar charts.

Values live on the voxels of a `data.subcortical.SubcorticalGrid` ((n_voxels,) arrays, the grid's row order);
:func:`unmask` puts them back into the grid's 91 x 109 x 91 2 mm volume (0 elsewhere), drawn over nilearn's
MNI152 template, which ships with nilearn (nothing is downloaded).

* :func:`plot_subcortical`: axial and coronal slices through the subcortex (``kind="slices"``) or a glass
  brain (``kind="glass"``).
* :func:`plot_structure_values`: one bar per structure (a mapping, or `data.regions.region_summary` rows),
  with optional intervals.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np

__all__ = ["unmask", "plot_subcortical", "plot_structure_values", "SLICE_CUTS"]

# Cuts (mm) through the structures of the grid: axial from the amygdala up to the top of the caudate body,
# coronal from the accumbens back to the pulvinar.
SLICE_CUTS = {"z": (-20, -12, -4, 4, 12, 20), "y": (16, 6, -4, -14, -24, -32)}
KINDS = ("slices", "glass")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def _check_values(values, grid) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.shape != (grid.n_voxels,):
        raise ValueError(f"values: expected shape ({grid.n_voxels},) (the subcortical grid's voxels), got "
                         f"{values.shape}")
    return values


def unmask(values, grid):
    """(n_voxels,) values -> a float32 NIfTI image on the grid's 2 mm MNI volume (0 outside the voxels, and
    at NaN voxels)."""
    import nibabel as nib

    values = _check_values(values, grid)
    vol = np.zeros(grid.shape, np.float32)
    vol[tuple(np.asarray(grid.ijk).T)] = np.nan_to_num(values, nan=0.0)
    return nib.Nifti1Image(vol, np.asarray(grid.affine, float))


@functools.lru_cache(maxsize=1)
def _template():
    from nilearn.datasets import load_mni152_template

    return load_mni152_template(resolution=2)


def plot_subcortical(values, grid, *, kind: str = "slices", title: str = "", cmap: str = "cold_hot", vmin=None,
                     vmax=None, symmetric=None, colorbar_label: str = ""):
    """A figure of a (n_voxels,) map: ``"slices"`` (6 axial over 6 coronal cuts on the MNI152 template) or
    ``"glass"`` (a glass brain, left / front / top views). The colour scale is `viz.surface.color_range`'s
    (symmetric for data on both sides of 0); zeros and NaN are not drawn."""
    from nilearn import plotting

    from nforge_jax.viz.surface import color_range

    matplotlib, plt = _pyplot()
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    values = _check_values(values, grid)
    vmin, vmax = color_range(values, vmin=vmin, vmax=vmax, symmetric=symmetric)
    shown = np.where(np.isfinite(values), np.clip(values, vmin, vmax), np.nan)
    nonzero = np.isfinite(values) & (np.abs(shown) < 1e-9)
    shown[nonzero] = 1e-9 if vmax > 0 else -1e-9  # a real zero stays coloured (0 is "no voxel" in the image)
    img = unmask(shown, grid)
    cmap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    symmetric_cbar = bool(vmin < 0 < vmax and np.isclose(-vmin, vmax))
    common = dict(cmap=cmap, vmin=vmin, vmax=vmax, colorbar=False, threshold=1e-10, annotate=True,
                  symmetric_cbar=symmetric_cbar)
    if kind == "slices":
        fig, axes = plt.subplots(2, 1, figsize=(12, 5.2))
        for ax, (mode, cuts) in zip(axes, SLICE_CUTS.items()):
            plotting.plot_stat_map(img, bg_img=_template(), display_mode=mode, cut_coords=cuts, axes=ax, figure=fig,
                                   draw_cross=False, black_bg=False, dim=0, **common)
    else:
        fig, ax = plt.subplots(1, 1, figsize=(10, 3.6))
        plotting.plot_glass_brain(img, display_mode="lzr", axes=ax, figure=fig, plot_abs=False, black_bg=False,
                                  **common)
    fig.subplots_adjust(left=0.01, right=0.9, top=0.9, bottom=0.02, hspace=0.05)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vmin, vmax), cmap=cmap)
    cbar = fig.colorbar(mappable, cax=fig.add_axes([0.92, 0.15, 0.013, 0.7]))  # beside the cuts, not over them
    cbar.set_label(colorbar_label)
    if title:
        fig.suptitle(title)
    return fig


def _bar_inputs(values, ci) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(names, values, (2, n) intervals or None)."""
    if not isinstance(values, Mapping):
        raise ValueError("values: expected a mapping {structure: value} (from region_summary rows: "
                         "{row['region']: row[key] for row in rows})")
    names = [str(k) for k in values]
    mid = np.array([np.nan if values[k] is None else float(values[k]) for k in values])
    if ci is None:
        return names, mid, None
    missing = [n for n in names if n not in ci]
    if missing:
        raise ValueError(f"ci: no interval for {missing}; expected {{structure: (low, high)}} for every bar")
    bounds = np.array([[np.nan if x is None else float(x) for x in ci[n]] for n in names], np.float64)
    if bounds.shape != (len(names), 2):
        raise ValueError("ci: expected a (low, high) pair per structure")
    return names, mid, bounds.T


def plot_structure_values(values: Mapping[str, float], *, ci: Mapping[str, Sequence[float]] | None = None,
                          xlabel: str = "", title: str = "", xlim=None):
    """Horizontal bars, one per structure (in the mapping's order), with 95 % intervals ``ci`` {name: (low,
    high)} as error bars; NaN / None values are left empty."""
    _, plt = _pyplot()
    names, mid, bounds = _bar_inputs(values, ci)
    if not names:
        raise ValueError("values: no structures to draw")
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1.4))
    y = np.arange(len(names))
    err = None
    if bounds is not None:
        err = np.nan_to_num(np.stack([np.clip(mid - bounds[0], 0, None), np.clip(bounds[1] - mid, 0, None)]))
    ax.barh(y, np.nan_to_num(mid), xerr=err, color="tab:purple", error_kw={"elinewidth": 1, "capsize": 2})
    ax.set_yticks(y, [n.replace("_", " ") for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(xlabel)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
