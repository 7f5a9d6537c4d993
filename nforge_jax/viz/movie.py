"""A movie of predicted activity over time: one frame per TR (`plot_cortex` on the cortex, or
`viz.volume.plot_subcortical` slices / glass brain for the subcortical grid), written as GIF (Pillow, which
matplotlib already needs) or MP4 (needs the optional ``av`` package)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from nforge_jax.data.fsaverage import n_vertices
from nforge_jax.data.store import atomic_open


def render_frames(preds, *, mesh: str = "fsaverage5", vmin=None, vmax=None, cmap: str = "cold_hot",
                  title: str = "", tr_seconds: float = 1.0, colorbar_label: str = "", grid=None,
                  volume_kind: str = "slices") -> list[np.ndarray]:
    """(T, V) -> T RGB uint8 frames (H, W, 3), one shared colour scale (default: symmetric, the 99th
    percentile of |preds|). ``grid``: a `data.subcortical.SubcorticalGrid` for (T, n_voxels) subcortical
    activity, drawn as ``volume_kind`` ("slices" or "glass")."""
    from nforge_jax.viz.surface import figure_to_array, plot_cortex

    preds = np.asarray(preds, np.float64)
    n, what = (n_vertices(mesh), mesh) if grid is None else (grid.n_voxels, "the subcortical grid")
    if preds.ndim != 2 or preds.shape[1] != n or preds.shape[0] < 1:
        raise ValueError(f"preds: expected (n_frames, {n}) for {what}, got shape {preds.shape}")
    if grid is None:
        draw = functools.partial(plot_cortex, mesh=mesh)
    else:
        from nforge_jax.viz.volume import plot_subcortical

        draw = functools.partial(plot_subcortical, grid=grid, kind=volume_kind)
    finite = preds[np.isfinite(preds)]
    if vmax is None:
        vmax = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
        vmax = vmax or 1.0
    if vmin is None:
        vmin = -vmax
    frames = []
    for i, values in enumerate(preds):
        label = f"t = {i * tr_seconds:g} s"
        fig = draw(values, title=f"{title}  {label}" if title else label, cmap=cmap, vmin=vmin, vmax=vmax,
                   colorbar_label=colorbar_label)
        frames.append(figure_to_array(fig))
    return frames


def write_activity_movie(preds, path, fps: float = 2.0, *, mesh: str = "fsaverage5", vmin=None, vmax=None,
                         cmap: str = "cold_hot", title: str = "", tr_seconds: float = 1.0,
                         colorbar_label: str = "", grid=None, volume_kind: str = "slices") -> Path:
    """Writes ``preds`` (T, V) as a movie at ``path`` (.gif or .mp4), ``fps`` frames per second; returns the path.
    ``grid`` (and ``volume_kind``): subcortical activity, as in :func:`render_frames`. The file appears complete
    or not at all (temporary file + rename). Rendering costs about a second per frame on a CPU: pass a slice of
    the predictions for long runs."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"path: expected a .gif or .mp4 file name, got {str(path)!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"fps: expected a positive number of frames per second, got {fps!r}")
    if suffix == ".mp4":
        try:
            import av  # noqa: F401
        except ImportError:
            raise RuntimeError("path: writing .mp4 needs the optional 'av' package (pip install av); "
                               "write a .gif instead") from None
    frames = render_frames(preds, mesh=mesh, vmin=vmin, vmax=vmax, cmap=cmap, title=title, tr_seconds=tr_seconds,
                           colorbar_label=colorbar_label, grid=grid, volume_kind=volume_kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        (_write_gif if suffix == ".gif" else _write_mp4)(frames, f, fps)
    return path


def _write_gif(frames, f, fps: float):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    # An adaptive palette per frame; the duration is per frame in ms, loop=0 repeats forever.
    images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0, optimize=False, disposal=1)


def _write_mp4(frames, f, fps: float):
    from fractions import Fraction

    import av

    h, w = frames[0].shape[:2]
    h2, w2 = h - h % 2, w - w % 2  # yuv420p needs even sizes
    with av.open(f, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w2, h2, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h2, :w2]), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
