"""fMRI targets: native-TR BOLD cleaned and resampled to the 1 Hz samples the model is trained on.

The fMRI in a FeatureStore is already at 1 Hz, detrended and z-scored per run; :func:`clean_and_resample`
is the function that makes it so (TRIBE v2's preprocessing); the studies/ readers call it when they build a
store.
"""

from __future__ import annotations

import math

import numpy as np

from nforge_jax.data.store import PipelineError

__all__ = ["resample_times", "clean_and_resample"]


def resample_times(n_trs: int, tr_s: float) -> np.ndarray:
    """The 1 Hz sample times TRIBE v2 makes from ``n_trs`` volumes at ``tr_s``:
    ``arange(0, (n - 1) * TR + TR - 1)``, stop excluded (592 x 1.49 s -> 882, 10 x 2 s -> 19)."""
    return np.arange(0.0, (n_trs - 1) * float(tr_s) + float(tr_s) - 1.0, 1.0)


def clean_and_resample(bold: np.ndarray, tr_s: float, *, chunk: int = 4096) -> np.ndarray:
    """Native-TR BOLD (n_TR, V) -> training targets at 1 Hz (n_1Hz, V) float32, as TRIBE v2 does.

    Per vertex: non-finite -> 0, linear detrend, z-score with ddof=1 (constant series -> 0) (what
    ``nilearn.signal.clean(detrend=True, standardize="zscore_sample", ensure_finite=True)`` does), then
    linear interpolation from acquisition times ``k * tr_s`` to :func:`resample_times`; times past the last
    acquisition take the last value. Works on ``chunk`` vertices at a time.
    """
    bold = np.asarray(bold) if not isinstance(bold, np.ndarray) else bold
    if bold.ndim != 2:
        raise PipelineError(f"bold: expected 2 dimensions (n_TR, n_vertices), got shape {bold.shape}")
    n, v = bold.shape
    if n < 2:
        raise PipelineError(f"bold: expected at least 2 time points to detrend, got {n}")
    if isinstance(tr_s, bool) or not isinstance(tr_s, (int, float)) or not math.isfinite(tr_s) or tr_s <= 0:
        raise PipelineError(f"tr_s: expected a repetition time in seconds > 0, got {tr_s!r}")
    t_src = np.arange(n) * float(tr_s)
    t_new = resample_times(n, tr_s)
    # linear interpolation weights, shared by all vertices (np.interp's rule; clamped at both ends)
    pos = np.clip(np.interp(t_new, t_src, np.arange(n, dtype=np.float64)), 0, n - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    w = (pos - lo)[:, None]
    # least-squares linear trend: design [1, t] with t centred
    tc = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    tc_norm = float(tc @ tc)
    out = np.empty((t_new.size, v), dtype=np.float32)
    for a in range(0, v, chunk):
        x = np.array(bold[:, a:a + chunk], dtype=np.float64)
        x[~np.isfinite(x)] = 0.0
        x -= x.mean(axis=0)
        x -= np.outer(tc, tc @ x / tc_norm)
        sd = x.std(axis=0, ddof=1)
        sd[sd < np.finfo(np.float64).eps] = 1.0
        x /= sd
        out[:, a:a + chunk] = (1.0 - w) * x[lo] + w * x[lo + 1]
    return out

