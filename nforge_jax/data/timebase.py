"""The time base, defined once: rates, windows, output rows, and how targets line up with predictions.

TRIBE v2's conventions (TRIBEV2_SPEC D.1):

- features at ``FEATURE_HZ`` = 2 Hz: row k of a timeline's feature array covers [k / 2, (k + 1) / 2) s of
  timeline time; predictions and targets at ``FMRI_HZ`` = 1 Hz (a TR of 1 s);
- a window is ``WINDOW_S`` = 100 s: 200 feature rows in, 100 output rows out; a timeline is cut into
  consecutive windows from its start row, the last one zero-padded;
- output row j of a timeline starting at ``start_s`` is the 1 s span [start_s + j, start_s + j + 1) of
  stimulus time; its target is the BOLD sample recorded ``HEMODYNAMIC_OFFSET_S`` = 5 s later, i.e. sample
  ``round((start_s + j + offset_s - fmri_start_s) * fmri_hz)`` of the recording (``fmri_start_s``: the
  stimulus time of the recording's first sample).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = ["FEATURE_HZ", "FMRI_HZ", "WINDOW_S", "HEMODYNAMIC_OFFSET_S", "feature_row", "n_windows", "output_rows",
           "cut_windows", "target_index", "align_targets", "duration_mismatch"]

FEATURE_HZ = 2.0
FMRI_HZ = 1.0
WINDOW_S = 100.0
HEMODYNAMIC_OFFSET_S = 5.0


def feature_row(t_s: float, hz: float = FEATURE_HZ) -> int:
    """The feature row holding timeline time ``t_s`` (Python round, as TRIBE's ``Frequency.to_ind``)."""
    return int(round(float(t_s) * hz))


def n_windows(n_steps: int, window_steps: int) -> int:
    """Windows of ``window_steps`` rows that cover ``n_steps`` rows (at least one)."""
    return max(1, -(-int(n_steps) // int(window_steps)))


def output_rows(n_steps: int, window_steps: int, per_window: int) -> int:
    """Output rows the ``n_steps`` input rows cover: a whole window gives its ``per_window`` rows, other lengths
    ceil(n_steps * per_window / window_steps)."""
    if n_steps == window_steps:
        return int(per_window)
    return -(-int(n_steps) * int(per_window) // int(window_steps))


def cut_windows(features: Mapping[str, np.ndarray], window_steps: int, n_win: int | None = None,
                dtype=np.float32) -> dict[str, np.ndarray]:
    """{modality: (T, ...)} -> {modality: (n_win, window_steps, ...)}: consecutive windows from row 0, the
    rest zero-padded (``n_win`` defaults to the windows T needs; more pad with zero windows)."""
    out = {}
    for m, x in features.items():
        x = np.asarray(x, dtype)
        n = n_windows(len(x), window_steps) if n_win is None else int(n_win)
        buf = np.zeros((n * window_steps,) + x.shape[1:], dtype)
        part = x[: n * window_steps]
        buf[: len(part)] = part
        out[m] = buf.reshape((n, window_steps) + x.shape[1:])
    return out


def target_index(t_s, *, offset_s: float = HEMODYNAMIC_OFFSET_S, fmri_hz: float = FMRI_HZ,
                 fmri_start_s: float = 0.0):
    """Index of the BOLD sample that is the target of stimulus time ``t_s`` (scalar or array)."""
    x = (np.asarray(t_s, np.float64) + float(offset_s) - float(fmri_start_s)) * float(fmri_hz)
    out = np.round(x).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def align_targets(fmri, n_rows: int, *, start_s: float = 0.0, offset_s: float = HEMODYNAMIC_OFFSET_S,
                  fmri_hz: float = FMRI_HZ, fmri_start_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Targets for ``n_rows`` 1 s output rows from ``start_s``: (targets (n_rows, V) float32, mask (n_rows,)).
    Row j takes sample ``target_index(start_s) + j`` when the recording has it, else zeros and mask False.
    Needs fMRI at the output rate (1 Hz): resample it first otherwise."""
    fmri = np.asarray(fmri)
    if fmri.ndim != 2:
        raise ValueError(f"fmri: expected a (n_samples, n_vertices) array, got shape {fmri.shape}")
    if not math.isclose(float(fmri_hz), FMRI_HZ):
        raise ValueError(f"fmri_hz: predictions are at {FMRI_HZ:g} Hz, got fMRI at {fmri_hz} Hz; resample it first "
                         "(nforge_jax.data.targets.clean_and_resample)")
    if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
        raise ValueError(f"n_rows: expected a positive integer, got {n_rows!r}")
    # rounded once for the run, as the training windows do: per-row rounding of a half-second shift would
    # alternate (half to even) and repeat or skip samples
    src = target_index(float(start_s), offset_s=offset_s, fmri_hz=fmri_hz, fmri_start_s=fmri_start_s) \
        + np.arange(n_rows)
    mask = (src >= 0) & (src < fmri.shape[0])
    out = np.zeros((n_rows, fmri.shape[1]), np.float32)
    out[mask] = fmri[src[mask]]
    return out, mask


DURATION_SLACK_S = 30.0  # scanners record a little past a stimulus's end; events may start late


def duration_mismatch(manifest) -> str | None:
    """What is wrong when a store timeline's features and fMRI (its manifest's arrays) cover lengths of time more
    than 30 s and a quarter of the longer apart, else None: features of one run stored with another run's fMRI
    look like this, and only their overlap would be trained on, fitted or scored."""
    meta, arrays = manifest["meta"], manifest["arrays"]
    rows = [e["shape"][0] for key, e in arrays.items() if key.startswith("features/")]
    if "fmri" not in arrays or not rows:
        return None
    feature_s = max(rows) / float(meta.get("feature_hz", FEATURE_HZ))
    fmri_s = arrays["fmri"]["shape"][0] / float(meta.get("fmri_hz", FMRI_HZ)) + float(meta.get("fmri_start_s", 0.0))
    if abs(fmri_s - feature_s) <= max(DURATION_SLACK_S, 0.25 * max(fmri_s, feature_s)):
        return None
    return (f"its features cover {feature_s:g} s but its fMRI {fmri_s:g} s; are they of the same run? "
            "(write them again together)")
