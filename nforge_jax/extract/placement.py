"""Placing vectors on the 2 Hz grid and chunking long media, as TRIBE v2 does.

Row k of a timeline's feature array covers [k / hz, (k + 1) / hz) of timeline time. An event adds its vector
(a word) or its rows (an audio or video chunk) to the rows it overlaps inside each 100 s window from the
timeline's first event, by TRIBE's overlap rule (first row round(hz * (overlap start - window start)),
max(1, round(hz * overlap duration)) rows, kept inside the window; Python round). Long media are cut as
TRIBE's ChunkEvents cuts them (60 s pieces, the last 30-90 s).
"""

from __future__ import annotations

import numpy as np

from nforge_jax.data.timebase import WINDOW_S  # TRIBE v2's segments: 100 TRs of 1 s

__all__ = ["place", "place_rows", "chunk_spans"]


def _overlap(a_start: float, a_rows: int | None, a_dur: float, b_start: float, b_dur: float, hz: float):
    """Rows of array A (``a_rows`` rows at ``hz`` from ``a_start``; None for a static event lasting ``a_dur``)
    that overlap [b_start, b_start + b_dur): (first row, n rows), or None.

    TRIBE's rule (neuralset 0.0.2, TimedArray overlap): first row round(hz * (overlap start - a_start)),
    n = max(1, round(hz * overlap duration)), moved back so that it ends inside A; spans that only touch
    do not overlap unless one of them lasts 0 s.
    """
    lo, hi = max(b_start, a_start), min(b_start + b_dur, a_start + a_dur)
    if hi < lo or (hi == lo and a_dur and b_dur):
        return None
    if a_rows is None:
        return lo, hi
    if not a_dur:
        return None
    first, n = int(round(hz * (lo - a_start))), max(1, int(round(hz * (hi - lo))))
    return min(first, a_rows - n), n


def _windows(start: float, stop: float, origin: float, window_s: float):
    """Starts of the windows (origin + k * window_s) that [start, stop] can touch."""
    k0 = int(np.floor((start - origin) / window_s)) - 1
    k1 = int(np.floor((stop - origin) / window_s)) + 1
    return [origin + k * window_s for k in range(max(k0, 0), k1 + 1)]


def place(grid: np.ndarray, start: float, duration: float, vector: np.ndarray, hz: float = 2.0,
          origin: float = 0.0, window_s: float = WINDOW_S) -> None:
    """Add a static event's ``vector`` (a word) where TRIBE v2 puts it: in each ``window_s`` window from
    ``origin`` that the event overlaps, rows round(hz * (overlap start - window start)) ..
    + max(1, round(hz * overlap duration)) - 1, kept inside the window. Grid row of window row i:
    round(hz * origin) + round(hz * window_s) * k + i. Rows past the grid are dropped."""
    w_rows, base = int(round(hz * window_s)), int(round(hz * origin))
    for k, w in enumerate(_windows(start, start + duration, origin, window_s)):
        ov = _overlap(w, w_rows, window_s, start, duration, hz)
        if ov is None:
            continue
        first, n = ov
        a = base + int(round((w - origin) / window_s)) * w_rows + first
        lo, hi = max(a, 0), min(a + n, grid.shape[0])
        if hi > lo:
            grid[lo:hi] += vector


def place_rows(grid: np.ndarray, rows: np.ndarray, start: float, hz: float = 2.0, origin: float = 0.0,
               window_s: float = WINDOW_S) -> None:
    """Add a time series sampled at ``hz`` from ``start`` (an audio or video chunk's rows) where TRIBE v2
    puts it: cut by the ``window_s`` windows from ``origin``, each piece matched to window rows by the
    overlap rule on both sides (as ``place``)."""
    n_rows = rows.shape[0]
    w_rows, base = int(round(hz * window_s)), int(round(hz * origin))
    duration = n_rows / hz
    for w in _windows(start, start + duration, origin, window_s):
        piece = _overlap(start, n_rows, duration, w, window_s, hz)  # rows of the series inside the window
        if piece is None:
            continue
        p0, n = piece
        p_start, p_dur = start + p0 / hz, n / hz
        dst = _overlap(w, w_rows, window_s, p_start, p_dur, hz)
        src = _overlap(p_start, n, p_dur, w, window_s, hz)
        if dst is None or src is None:
            continue
        a = base + int(round((w - origin) / window_s)) * w_rows + dst[0]
        lo, hi = max(a, 0), min(a + dst[1], grid.shape[0])
        if hi > lo:
            grid[lo:hi] += rows[p0 + src[0] + (lo - a): p0 + src[0] + (hi - a)]


def chunk_spans(duration: float, max_s: float = 60.0, min_s: float = 30.0) -> list[tuple[float, float]]:
    """(offset, length) pieces of a span, as TRIBE's ChunkEvents: cuts every ``max_s`` from the start, a
    cut dropped when a piece would be shorter than ``min_s`` (so the last piece is min_s .. max_s + min_s)."""
    if duration <= 0:
        return [(0.0, float(duration))]
    eps = 1e-9
    cuts = [max_s * k for k in range(1, int(duration // max_s) + 1) if max_s * k < duration - eps]
    while cuts and duration - cuts[-1] < min_s - eps:
        cuts.pop()
    bounds = [0.0, *cuts, float(duration)]
    return [(bounds[i], bounds[i + 1] - bounds[i]) for i in range(len(bounds) - 1)]
