"""Cortical maps on fsaverage5: both hemispheres, lateral and medial views (nilearn, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nforge_jax.data.fsaverage import load_mesh

VIEWS = (("left", "lateral"), ("left", "medial"), ("right", "lateral"), ("right", "medial"))


def plot_cortex(values, *, title: str = "", cmap: str = "cold_hot", vmin=None, vmax=None, symmetric=None,
                mesh: str = "fsaverage5", colorbar_label: str = ""):
    """A 2 x 2 figure (left/right x lateral/medial) of a (n_vertices,) map on the inflated surface."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from nilearn import plotting

    fs = load_mesh(mesh)
    values = np.asarray(values, np.float64)
    if values.shape != (fs.n_vertices,):
        raise ValueError(f"values: expected shape ({fs.n_vertices},) for {mesh}, got {values.shape}")
    vmin, vmax = color_range(values, vmin=vmin, vmax=vmax, symmetric=symmetric)
    n = fs.n_vertices_per_hemi
    cmap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    # NaN marks "no value" (e.g. the medial wall): drawn as the bare sulcal background via the threshold.
    threshold = 1e-12 if np.isnan(values).any() else None
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6), subplot_kw={"projection": "3d"})
    for ax, (hemi, view) in zip(axes, VIEWS):
        part = values[:n] if hemi == "left" else values[n:]
        surface = fs.surfaces["inflated"][hemi]
        shown = np.clip(np.nan_to_num(part, nan=0.0), vmin, vmax)
        if threshold is not None:
            shown[np.isnan(part)] = 0.0
            shown[~np.isnan(part) & (np.abs(shown) < 1e-9)] = 1e-9  # a real zero stays coloured
        plotting.plot_surf((surface.coords.copy(), surface.faces.copy()), shown, bg_map=fs.sulc[hemi], hemi=hemi,
                           view=view, axes=ax, figure=fig, cmap=cmap, colorbar=False, vmin=vmin, vmax=vmax,
                           symmetric_cmap=None, threshold=threshold, bg_on_data=False, engine="matplotlib")
        ax.set_title(f"{hemi} {view}", fontsize=9)
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(vmin, vmax), cmap=cmap)
    cbar = fig.colorbar(mappable, ax=axes, shrink=0.6, pad=0.02)
    cbar.set_label(colorbar_label)
    if title:
        fig.suptitle(title)
    return fig


def color_range(values, *, vmin=None, vmax=None, symmetric=None) -> tuple[float, float]:
    """The colour scale of a map (or of every frame of a movie): unset ends default to the 99th percentile of
    |values| (robust to a few outliers) and, for data on both sides of zero (``symmetric``), to -vmax."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if symmetric is None:
        symmetric = finite.size > 0 and finite.min() < 0 < finite.max()
    if vmax is None:
        vmax = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
        vmax = vmax or 1.0
    if vmin is None:
        vmin = -vmax if symmetric else float(finite.min()) if finite.size else 0.0
    return vmin, vmax


def save_figure(fig, path) -> Path:
    """Writes a figure atomically (temp file + rename) and closes it."""
    import matplotlib.pyplot as plt

    from nforge_jax.data.store import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_open(path) as f:  # the temp file has no image suffix: name the format
            fig.savefig(f, format=path.suffix.lstrip(".").lower() or None, dpi=90, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def figure_to_array(fig) -> np.ndarray:
    """RGB uint8 (H, W, 3), e.g. for TensorBoard images; closes the figure."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return rgba[..., :3].copy()
