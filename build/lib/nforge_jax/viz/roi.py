"""ROI figures on fsaverage: temporal attention profiles (`plot_roi_attention`) and one value per ROI
(`plot_roi_values`), each as plots plus the ROIs drawn on the inflated cortex.

ROI names are HCP-MMP1 areas as `nforge_jax.data.fsaverage.hcp_roi_indices` reads them: ``"L_V1"`` / ``"R_V1"``
for one hemisphere, ``"V1"`` for both.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from nforge_jax.data.fsaverage import hcp_roi_indices, load_mesh

VIEW_NAMES = {"left": ("left", "lateral"), "right": ("right", "lateral"), "left_medial": ("left", "medial"),
              "right_medial": ("right", "medial"), "left_lateral": ("left", "lateral"),
              "right_lateral": ("right", "lateral")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return matplotlib, plt


def _check_views(views) -> list[tuple[str, str]]:
    if isinstance(views, str):
        views = [views]
    out = []
    for v in views or ():
        key = v if isinstance(v, str) else "_".join(v)
        if key not in VIEW_NAMES:
            raise ValueError(f"views: unknown view {v!r}; expected some of {sorted(VIEW_NAMES)}")
        out.append(VIEW_NAMES[key])
    if not out:
        raise ValueError(f"views: expected at least one of {sorted(VIEW_NAMES)}")
    return out


def resolve_rois(names: Sequence[str], mesh: str = "fsaverage5", argument: str = "roi_scores") -> dict[str, np.ndarray]:
    """{name: whole-cortex vertex indices}; an unknown name raises ValueError naming ``argument``."""
    out = {}
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"{argument}: ROI names must be strings, got {name!r}")
        try:
            out[name] = hcp_roi_indices(name, mesh)
        except ValueError as e:
            raise ValueError(f"{argument}: ROI {name!r} is not an HCP-MMP1 area: {e}") from None
    return out


def _draw_surfaces(fig, axes, values, views, *, cmap, vmin, vmax, mesh):
    """values (V,) with NaN = not drawn (sulcal background only) on each (hemi, view) axis."""
    from nilearn import plotting

    fs = load_mesh(mesh)
    n = fs.n_vertices_per_hemi
    for ax, (hemi, view) in zip(axes, views):
        part = values[:n] if hemi == "left" else values[n:]
        shown = np.clip(np.nan_to_num(part, nan=0.0), vmin, vmax)
        shown[np.isnan(part)] = 0.0
        shown[~np.isnan(part) & (np.abs(shown) < 1e-9)] = 1e-9  # an ROI at exactly zero stays coloured
        surface = fs.surfaces["inflated"][hemi]
        plotting.plot_surf((surface.coords.copy(), surface.faces.copy()), shown, bg_map=fs.sulc[hemi], hemi=hemi,
                           view=view, axes=ax, figure=fig, cmap=cmap, colorbar=False, vmin=vmin, vmax=vmax,
                           symmetric_cmap=None, threshold=1e-12, bg_on_data=False, engine="matplotlib")
        ax.set_title(f"{hemi} {view}", fontsize=9)
        ax.set_label(f"surface {hemi} {view}")


def plot_roi_attention(roi_scores: Mapping[str, np.ndarray], mesh: str = "fsaverage5",
                       views=("left", "right"), *, title: str = "", step_seconds: float = 0.5, cmap: str = "viridis"):
    """Temporal profiles {roi: (T,)} (e.g. `attention_to_roi_scores`) as a figure.

    Top: one line per ROI over input time (``step_seconds`` per step: 0.5 s for the model's 2 Hz inputs);
    middle: the same profiles as a heatmap (ROIs x time, each row scaled to its maximum); bottom: the ROIs on
    the inflated cortex (``views``: "left", "right", "left_medial", "right_medial"), coloured by the time of
    their profile's peak. Axes are labelled "profiles", "heatmap", "surface <hemi> <view>" and "colorbar".
    """
    matplotlib, plt = _pyplot()
    if not isinstance(roi_scores, Mapping) or not roi_scores:
        raise ValueError(f"roi_scores: expected a non-empty dict {{roi: (T,) profile}}, got {type(roi_scores).__name__}")
    views = _check_views(views)
    if not (isinstance(step_seconds, (int, float)) and step_seconds > 0):
        raise ValueError(f"step_seconds: expected a positive number, got {step_seconds!r}")
    names = list(roi_scores)
    profiles = []
    for name in names:
        p = np.asarray(roi_scores[name], np.float64)
        if p.ndim != 1 or p.size == 0 or not np.isfinite(p).all():
            raise ValueError(f"roi_scores[{name!r}]: expected a finite 1-D profile (T,), got shape {p.shape}")
        if profiles and p.shape != profiles[0].shape:
            raise ValueError(f"roi_scores[{name!r}]: {p.size} time steps, roi_scores[{names[0]!r}] has "
                             f"{profiles[0].size}")
        profiles.append(p)
    indices = resolve_rois(names, mesh)
    profiles = np.stack(profiles)
    t = np.arange(profiles.shape[1]) * step_seconds
    peak = t[profiles.argmax(1)]

    fig = plt.figure(figsize=(4.2 * max(len(views), 2), 7.5))
    grid = fig.add_gridspec(3, len(views), height_ratios=[1.0, 0.8, 1.4], hspace=0.45)
    ax_lines = fig.add_subplot(grid[0, :])
    ax_lines.set_label("profiles")
    colors = matplotlib.colormaps["tab10"]
    for i, (name, p) in enumerate(zip(names, profiles)):
        ax_lines.plot(t, p, color=colors(i % 10), lw=1.5, label=name)
    ax_lines.set_xlabel("input time (s)")
    ax_lines.set_ylabel("attention share")
    ax_lines.legend(fontsize=7, ncol=min(len(names), 4), loc="upper right")
    ax_heat = fig.add_subplot(grid[1, :])
    ax_heat.set_label("heatmap")
    scale = np.abs(profiles).max(1, keepdims=True)
    ax_heat.imshow(profiles / np.where(scale > 0, scale, 1.0), aspect="auto", cmap="magma", interpolation="nearest",
                   extent=(t[0] - step_seconds / 2, t[-1] + step_seconds / 2, len(names) - 0.5, -0.5))
    ax_heat.set_yticks(range(len(names)), names, fontsize=7)
    ax_heat.set_xlabel("input time (s); each row scaled to its peak")

    values = np.full(load_mesh(mesh).n_vertices, np.nan)
    for name, p in zip(names, peak):
        values[indices[name]] = p
    vmin, vmax = float(t[0]), float(max(t[-1], t[0] + step_seconds))
    surf_axes = [fig.add_subplot(grid[2, j], projection="3d") for j in range(len(views))]
    _draw_surfaces(fig, surf_axes, values, views, cmap=matplotlib.colormaps[cmap], vmin=vmin, vmax=vmax, mesh=mesh)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vmin, vmax), cmap=cmap)
    cbar = fig.colorbar(mappable, ax=surf_axes, shrink=0.6, pad=0.02)
    cbar.set_label("time of peak (s)")
    cbar.ax.set_label("colorbar")
    if title:
        fig.suptitle(title)
    return fig


def plot_roi_values(values: Mapping[str, float], mesh: str = "fsaverage5", views=("left", "right"), *,
                    title: str = "", cmap: str = "viridis", vmin=None, vmax=None, value_label: str = "value",
                    sort: bool = False):
    """One number per ROI {roi: float}: a bar chart (axis "bars", in the given order or sorted by value) and
    the ROIs on the cortex coloured by value (axes "surface <hemi> <view>", "colorbar")."""
    matplotlib, plt = _pyplot()
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"values: expected a non-empty dict {{roi: number}}, got {type(values).__name__}")
    views = _check_views(views)
    names = list(values)
    nums = []
    for name in names:
        try:
            v = float(values[name])
        except (TypeError, ValueError):
            raise ValueError(f"values[{name!r}]: expected a number, got {values[name]!r}") from None
        if not np.isfinite(v):
            raise ValueError(f"values[{name!r}]: expected a finite number, got {v}")
        nums.append(v)
    indices = resolve_rois(names, mesh, argument="values")
    nums = np.asarray(nums)
    order = np.argsort(-nums) if sort else np.arange(len(names))
    lo = float(nums.min()) if vmin is None else float(vmin)
    hi = float(nums.max()) if vmax is None else float(vmax)
    if hi <= lo:
        hi = lo + 1.0
    cm = matplotlib.colormaps[cmap]
    norm = matplotlib.colors.Normalize(lo, hi)

    fig = plt.figure(figsize=(4.2 * max(len(views), 2), 6.0))
    grid = fig.add_gridspec(2, len(views), height_ratios=[1.0, 1.4], hspace=0.5)
    ax_bars = fig.add_subplot(grid[0, :])
    ax_bars.set_label("bars")
    ax_bars.bar(np.arange(len(names)), nums[order], color=cm(norm(nums[order])))
    ax_bars.set_xticks(np.arange(len(names)), [names[i] for i in order], rotation=45, ha="right", fontsize=7)
    ax_bars.set_ylabel(value_label)
    surface_values = np.full(load_mesh(mesh).n_vertices, np.nan)
    for name, v in zip(names, nums):
        surface_values[indices[name]] = v
    surf_axes = [fig.add_subplot(grid[1, j], projection="3d") for j in range(len(views))]
    _draw_surfaces(fig, surf_axes, surface_values, views, cmap=cm, vmin=lo, vmax=hi, mesh=mesh)
    cbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cm), ax=surf_axes, shrink=0.6, pad=0.02)
    cbar.set_label(value_label)
    cbar.ax.set_label("colorbar")
    if title:
        fig.suptitle(title)
    return fig
