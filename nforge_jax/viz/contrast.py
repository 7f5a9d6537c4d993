"""Figures of an in-silico contrast (`insilico.run`): effect and thresholded-t maps as PNGs and viewer pages,
on the cortex (`viz.surface`) or the subcortical grid (`viz.volume`), whichever the output space is."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["map_figure", "save_contrast_figures", "thresholded"]


def map_figure(values, space, **style):
    """A cortical map (fsaverage5), or MNI slices for the subcortical grid."""
    if space.name == "subcortical":
        from nforge_jax.data.regions import grid_of_space
        from nforge_jax.viz.volume import plot_subcortical

        return plot_subcortical(values, grid_of_space(space), **style)
    from nforge_jax.viz.surface import plot_cortex

    return plot_cortex(values, **style)


def thresholded(t: np.ndarray, p: np.ndarray, alpha: float) -> np.ndarray:
    """t where the adjusted p is at most alpha, NaN (no value: not drawn) elsewhere."""
    return np.where(np.asarray(p) <= alpha, np.asarray(t, np.float64), np.nan)


# what a contrast's effect is, by the design's response summary (insilico.design)
EFFECT_LABELS = {"mean": "effect: weighted sum of condition mean responses (a.u.)",
                 "std": "effect: weighted sum of condition response strengths (temporal std, a.u.)"}


def save_contrast_figures(folder, name: str, maps: Mapping[str, Mapping[str, np.ndarray]], space,
                          alpha: float, response: str = "mean") -> dict[str, Path]:
    """For each map (a head or the group) ``{"effect", "t", "p_fdr", "p_fwe"}``: ``effect[_<map>].png``,
    ``t_fdr[_<map>].png`` (t where FDR-adjusted p <= alpha); and two viewer pages with every map as a frame:
    ``viewer.html`` (t, t at FDR, t at FWE) and ``viewer_effect.html`` (effect; its own colour scale)."""
    from nforge_jax.viz.surface import save_figure
    from nforge_jax.viz.view import view_predictions

    folder = Path(folder)
    paths: dict[str, Path] = {}
    single = len(maps) == 1
    t_frames, effect_frames = {}, {}
    for label, m in maps.items():
        tag = "" if single else f"_{_file_tag(label)}"
        t_fdr = thresholded(m["t"], m["p_fdr"], alpha)
        paths[f"effect{tag}"] = save_figure(map_figure(
            m["effect"], space, title=f"{name}: effect ({label})", colorbar_label=EFFECT_LABELS[response]),
            folder / f"effect{tag}.png")
        paths[f"t_fdr{tag}"] = save_figure(map_figure(
            t_fdr, space, title=f"{name}: t where FDR p <= {alpha:g} ({label}; {int(np.isfinite(t_fdr).sum())} "
                                f"outputs)", colorbar_label="Welch t"), folder / f"t_fdr{tag}.png")
        t_frames[f"t ({label})"] = np.asarray(m["t"], np.float64)
        t_frames[f"t, FDR p <= {alpha:g} ({label})"] = t_fdr
        t_frames[f"t, FWE p <= {alpha:g} ({label})"] = thresholded(m["t"], m["p_fwe"], alpha)
        effect_frames[f"effect ({label})"] = np.asarray(m["effect"], np.float64)
    paths["viewer"] = view_predictions(t_frames, folder / "viewer.html", space=space, title=f"{name}: t maps")
    paths["viewer_effect"] = view_predictions(effect_frames, folder / "viewer_effect.html", space=space,
                                              title=f"{name}: effect maps")
    return paths


def _file_tag(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(label))
