"""Figures of an evaluation against measured fMRI (``nforge evaluate``): maps of r, the noise ceiling and
r / ceiling (on the cortex, or in MNI slices for the subcortical grid), and a bar chart of the 22 HCP-MMP1
sections (or of the subcortical structures per side) with bootstrap intervals.

The functions take plain arrays and ROI rows (the fields of rois.csv), so anything with the attributes of
``nforge_jax.inference.Evaluation`` (r, ceiling, r_over_ceiling, ceiling_method, rois) can be drawn.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nforge_jax.data.fsaverage import n_vertices
from nforge_jax.data.regions import grid_of_space
from nforge_jax.data.spaces import SUBCORTICAL, OutputSpace
from nforge_jax.viz.surface import plot_cortex, save_figure

__all__ = ["plot_evaluation_maps", "plot_section_scores", "save_evaluation_figures"]


def plot_evaluation_maps(r, ceiling, r_over_ceiling, *, method: str = "", mesh: str = "fsaverage5",
                         grid=None) -> dict:
    """{"r", "ceiling", "r_over_ceiling"}: cortical figures, or subcortical slices when ``grid`` (a
    `data.subcortical.SubcorticalGrid`) is given (NaN not drawn; r / ceiling shown clipped to [0, 1], ceilings
    of method "none" omitted)."""
    if grid is None:
        draw = functools.partial(plot_cortex, mesh=mesh)
    else:
        from nforge_jax.viz.volume import plot_subcortical

        draw = functools.partial(plot_subcortical, grid=grid)
    figures = {"r": draw(np.asarray(r, np.float64), title="Pearson r (prediction vs measured)", cmap="cold_hot",
                         symmetric=True, colorbar_label="r")}
    ceiling = np.asarray(ceiling, np.float64)
    if np.isfinite(ceiling).any():
        figures["ceiling"] = draw(ceiling, title=f"noise ceiling on r: {method}", cmap="viridis", vmin=0.0,
                                  vmax=1.0, symmetric=False, colorbar_label="ceiling")
        ratio = np.clip(np.asarray(r_over_ceiling, np.float64), 0.0, 1.0)
        figures["r_over_ceiling"] = draw(ratio, title="r / noise ceiling (clipped to [0, 1])", cmap="viridis",
                                         vmin=0.0, vmax=1.0, symmetric=False, colorbar_label="r / ceiling")
    return figures


def plot_section_scores(rows: Sequence[Mapping], *, title: str = "", kind: str = "section"):
    """Bars of median r and median r / ceiling per section (rows of kind ``kind``: "section", or "structure" /
    "structure_side" for the subcortical structures), with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [row for row in rows if row.get("kind") == kind]
    if not rows:
        raise ValueError(f"rows: no {kind} rows (kind {kind!r}); evaluate with rois='auto' (or 'hcp' / 'structures')")
    value = lambda row, key: np.nan if row.get(key) is None else float(row[key])  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(rows) + 1.5), sharey=True)
    y = np.arange(len(rows))
    for ax, key, label in ((axes[0], "median_r", "median r"),
                           (axes[1], "median_r_over_ceiling", "median r / ceiling")):
        mid = np.array([value(row, key) for row in rows])
        lo = np.array([value(row, f"{key}_ci_low") for row in rows])
        hi = np.array([value(row, f"{key}_ci_high") for row in rows])
        err = np.stack([np.clip(mid - lo, 0, None), np.clip(hi - mid, 0, None)])
        ax.barh(y, np.nan_to_num(mid), xerr=np.nan_to_num(err), color="tab:blue" if key == "median_r" else
                "tab:green", error_kw={"elinewidth": 1, "capsize": 2})
        ax.set_xlabel(label)
        ax.set_label(key)
        ax.axvline(0, color="k", lw=0.5)
    axes[0].set_yticks(y, [row["roi"].replace("_", " ") for row in rows], fontsize=8)
    axes[0].invert_yaxis()
    axes[1].set_xlim(0, 1.05)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_evaluation_figures(evaluation, out_dir, *, mesh: str = "fsaverage5", grid=None) -> dict[str, Path]:
    """Write maps_r.png, maps_ceiling.png, maps_r_over_ceiling.png (when the maps are on ``mesh`` or on the
    subcortical grid) and sections.png (section rows) or structures.png (structure rows) into ``out_dir``;
    returns {name: path}. ``grid``: the subcortical grid of a subcortical evaluation (default: found as
    `data.regions.grid_of_space` finds it)."""
    out = Path(out_dir)
    paths = {}
    space = getattr(evaluation, "space", None)
    if space is not None and space.get("name") == SUBCORTICAL:
        grid = grid_of_space(OutputSpace.from_dict(space, "evaluation space"), grid)
        on_maps = True
    else:
        grid, on_maps = None, np.shape(evaluation.r) == (n_vertices(mesh),)
    maps = plot_evaluation_maps(evaluation.r, evaluation.ceiling, evaluation.r_over_ceiling,
                                method=evaluation.ceiling_method, mesh=mesh, grid=grid) if on_maps else {}
    for name, fig in maps.items():
        paths[f"maps_{name}"] = save_figure(fig, out / f"maps_{name}.png")
    if any(row.get("kind") == "section" for row in evaluation.rois):
        fig = plot_section_scores(evaluation.rois, title=f"HCP-MMP1 sections; ceiling: {evaluation.ceiling_method}")
        paths["sections"] = save_figure(fig, out / "sections.png")
    if any(row.get("kind") == "structure_side" for row in evaluation.rois):
        fig = plot_section_scores(evaluation.rois, kind="structure_side",
                                  title=f"subcortical structures; ceiling: {evaluation.ceiling_method}")
        paths["structures"] = save_figure(fig, out / "structures.png")
    return paths
