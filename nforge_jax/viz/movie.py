"""A movie of predicted cortical activity over time: one `plot_cortex` frame per TR, written as GIF (Pillow,
which matplotlib already needs) or MP4 (needs the optional ``av`` package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nforge_jax.data.fsaverage import n_vertices
from nforge_jax.data.store import atomic_open


def render_frames(preds, *, mesh: str = "fsaverage5", vmin=None, vmax=None, cmap: str = "cold_hot",
                  title: str = "", tr_seconds: float = 1.0, colorbar_label: str = "") -> list[np.ndarray]:
    """(T, V) -> T RGB uint8 frames (H, W, 3), one shared colour scale (default: symmetric, the 99th
    percentile of |preds|)."""
    from nforge_jax.viz.surface import figure_to_array, plot_cortex

    preds = np.asarray(preds, np.float64)
    if preds.ndim != 2 or preds.shape[1] != n_vertices(mesh) or preds.shape[0] < 1:
        raise ValueError(f"preds: expected (n_frames, {n_vertices(mesh)}) for {mesh}, got shape {preds.shape}")
    finite = preds[np.isfinite(preds)]
    if vmax is None:
        vmax = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
        vmax = vmax or 1.0
    if vmin is None:
        vmin = -vmax
    frames = []
    for i, values in enumerate(preds):
        label = f"t = {i * tr_seconds:g} s"
        fig = plot_cortex(values, title=f"{title}  {label}" if title else label, cmap=cmap, vmin=vmin, vmax=vmax,
                          mesh=mesh, colorbar_label=colorbar_label)
        frames.append(figure_to_array(fig))
    return frames


def write_activity_movie(preds, path, fps: float = 2.0, *, mesh: str = "fsaverage5", vmin=None, vmax=None,
                         cmap: str = "cold_hot", title: str = "", tr_seconds: float = 1.0,
                         colorbar_label: str = "") -> Path:
    """Writes ``preds`` (T, V) as a movie at ``path`` (.gif or .mp4), ``fps`` frames per second; returns the
    path. The file appears complete or not at all (temporary file + rename). Rendering costs about a second
    per frame on a CPU: pass a slice of the predictions for long runs."""
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
                           colorbar_label=colorbar_label)
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
