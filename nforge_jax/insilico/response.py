"""One number per output from a stimulus's predicted time course: the value a contrast compares.

``how="mean"`` is the average response over the window; ``how="std"`` its temporal standard deviation, the
response strength when the inputs are zero-mean (a prediction then averages near zero in every condition, and
what differs between conditions is how strongly each output follows the stimulus).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SUMMARIES", "summarise_response"]

SUMMARIES = ("mean", "std")


def summarise_response(prediction, *, tr_s: float = 1.0, window=None, how: str = "mean") -> np.ndarray:
    """(T, V) prediction -> (V,) float64 summary over ``window``.

    window: None (every row) or ``(start_s, end_s)`` seconds after stimulus onset; row ``j`` is the response at
    ``j * tr_s`` s, and the rows with ``start_s <= j * tr_s < end_s`` are summarised. A window meant to skip the
    hemodynamic delay starts at its offset (5 s), e.g. ``(5, 30)``."""
    if how not in SUMMARIES:
        raise ValueError(f"how: expected one of {SUMMARIES}, got {how!r}")
    x = np.asarray(prediction, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"prediction: expected a (T, V) array with T >= 1, got shape {x.shape}")
    if isinstance(tr_s, bool) or not isinstance(tr_s, (int, float)) or not 0 < tr_s < float("inf"):
        raise ValueError(f"tr_s: expected seconds per row > 0, got {tr_s!r}")
    rows = slice(None) if window is None else _window_rows(window, x.shape[0], float(tr_s))
    x = x[rows]
    if how == "std" and x.shape[0] < 2:
        raise ValueError(f"window: how='std' needs at least 2 rows, the window {window!r} holds {x.shape[0]}")
    return x.mean(axis=0) if how == "mean" else x.std(axis=0)


def _window_rows(window, n_rows: int, tr_s: float) -> slice:
    """The rows of a (start_s, end_s) window, checked against the prediction's span (n_rows * tr_s s)."""
    try:
        start, end = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window: expected None or (start_s, end_s) seconds after onset, got {window!r}") from None
    span = n_rows * tr_s
    if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
        raise ValueError(f"window: expected 0 <= start_s < end_s (seconds after onset), got {window!r}")
    if end > span + 1e-9:
        raise ValueError(f"window: {window!r} ends after the prediction ({n_rows} rows x {tr_s:g} s = {span:g} s)")
    first = int(np.ceil(start / tr_s - 1e-9))
    last = int(np.ceil(end / tr_s - 1e-9))  # rows strictly before end_s
    if last <= first:
        raise ValueError(f"window: {window!r} holds no row of the prediction (one row every {tr_s:g} s)")
    return slice(first, last)
