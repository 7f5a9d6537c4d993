"""Scores of predictions against measured fMRI, with noise ceilings per vertex and per ROI (``nforge evaluate``).

Targets are the store's fMRI aligned with the predictions exactly as training and the demo align them
(:func:`measured_targets`, by ``data.timebase.align_targets``): output row j of a timeline starting at
``start_s`` is paired with the BOLD sample recorded the hemodynamic offset later; rows without a sample are
dropped. Runs of one subject that show one stimulus (store meta ``stimulus``, several timelines) are
*repeats*: their target is the mean of the runs (on the rows all of them have), their prediction the one
prediction of the stimulus (the repeats' predictions must agree). The score per vertex is the Pearson r over
all evaluated samples (every target concatenated).

Noise ceilings (an upper bound on that Pearson r, so ``r / ceiling`` compares vertices of different noise):

* ``"repeats"`` -- NSD's noise-ceiling SNR (Allen et al. 2022, Nat. Neurosci., Methods "Noise ceiling"): each
  run is z-scored per vertex over its samples; ``sigma_noise^2`` = the mean over time (all samples of all
  repeated stimuli) of the across-repeat variance (ddof=1); ``sigma_signal^2 = max(0, 1 - sigma_noise^2)``;
  ``ncsnr = sigma_signal / sigma_noise``; the fraction of the variance of an R-run mean that is signal is
  ``NC = ncsnr^2 / (ncsnr^2 + 1/R)`` and the ceiling on r is ``sqrt(NC)``. With targets of different R
  (including stimuli shown once, R = 1), ``1/R`` is replaced by its mean over the evaluated samples
  (each sample weighted ``1/R`` of its target), NSD's rule for images with 3, 2 or 1 trials.
* ``"subjects"`` -- leave-one-subject-out, for stimuli whose targets exist for ``S >= 2`` subjects:
  ``r_s = Pearson(y_s, mean of the other M = S - 1 subjects)``. If every subject's target is the same shared
  signal plus independent noise with equal reliability ``c^2`` (c: the Pearson r of a target with the
  signal), ``r_s = c^2 / sqrt(c^2 + (1 - c^2) / M)``, so ``c^2`` is the positive root of
  ``c^4 - r^2 (1 - 1/M) c^2 - r^2 / M = 0`` and the ceiling is ``c``. r is pooled over subjects and
  stimuli of equal M; stimuli of different M are combined as a sample-weighted mean of ``c^2``. This
  measures only the response *shared between subjects*: where subjects respond differently it is lower
  than the ceiling of a subject-specific model (r / ceiling can then exceed 1).
* ``"auto"``: repeats when the evaluated timelines have them, else subjects when a stimulus has targets of
  two subjects, else none. A (V,) array is used as given (``"given"``); None: ``"none"``.

``r / ceiling`` is reported where the ceiling exceeds ``min_ceiling`` (NaN elsewhere), unclipped; summaries
(medians) are clipped to [0, 1] with the raw value kept beside them.

Output spaces (`data.spaces`): the store's timelines name theirs (meta ``space``; 20,484 columns and none named:
fsaverage5); predictions of another space are refused with SpaceMismatch (an ``nforge predict`` directory by the
space its marker records, else by the number of columns). Per ROI (`data.regions`; on the cortex the HCP-MMP1 areas
per hemisphere, the 22 sections of Glasser et al. 2016 over both hemispheres and the whole labelled cortex; on the
subcortical grid the structures per side and over both sides and the grey matter): outputs, median r, median
ceiling, median r / ceiling and 95 % moving-block bootstrap intervals of the two medians over time: the samples are
cut into sub-blocks (per target, never across two) whose per-vertex sums of x, y, xy, x^2, y^2 form a table; a block
is ``k`` consecutive sub-blocks of one target, about ``block_s`` seconds; a draw picks blocks uniformly with
replacement until it holds as many sub-blocks as the data, and its sums are its sub-block counts times the table.
The ceiling is held fixed (the intervals are those of r's sampling over time).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import types
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nforge_jax.data import timebase
from nforge_jax.data.regions import region_medians, region_sets
from nforge_jax.data.spaces import SUBCORTICAL, OutputSpace, SpaceMismatch, check_same_space, space_of_meta
from nforge_jax.data.splits import subject_key
from nforge_jax.data.store import FeatureStore, atomic_open
from nforge_jax.inference import provenance
from nforge_jax.inference.batch import MARKER, finished_timelines, read_marker, read_predictions, timeline_inputs

__all__ = ["evaluate", "Evaluation", "measured_targets", "repeat_ceiling", "subject_ceiling", "CEILING_METHODS"]

CEILING_METHODS = ("auto", "repeats", "subjects", "none")
MIN_SAMPLES = 20  # fewer evaluated samples give no meaningful correlation
MIN_BLOCKS = 4  # fewer bootstrap blocks than this resample a handful of distinct series: no interval is given
_MAX_SUB_BLOCKS = 256  # bounds the bootstrap table: 256 x 5 x V float32 (105 MB on fsaverage5)
_SUB_BLOCKS_PER_BLOCK = 5  # a block may start at every 5th of its length (moving blocks)
_BOOT_CHUNK = 50
ROI_SETS = ("auto", "hcp", "structures")
_ROI_FIELDS = ("roi", "kind", "n_vertices", "median_r", "median_r_ci_low", "median_r_ci_high", "median_ceiling",
               "median_r_over_ceiling", "median_r_over_ceiling_raw", "median_r_over_ceiling_ci_low",
               "median_r_over_ceiling_ci_high")


def measured_targets(store: FeatureStore, name: str, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The measured targets of ``n_rows`` prediction rows of timeline ``name``: (targets (n_rows, V) float32,
    mask (n_rows,)), aligned as training aligns them (the timeline's ``start_s``, ``offset_s``, ``fmri_hz``,
    ``fmri_start_s``); masked rows have no recorded sample."""
    meta = store.meta(name)
    fmri = store.fmri(name)
    if fmri is None:
        raise ValueError(f"timeline {name!r}: the store {store.path} holds no fMRI for it (nothing to compare with)")
    return timebase.align_targets(np.asarray(fmri, np.float32), n_rows, start_s=float(meta.get("start_s", 0.0)),
                                  offset_s=meta["offset_s"], fmri_hz=meta["fmri_hz"],
                                  fmri_start_s=float(meta.get("fmri_start_s", 0.0)))


# ------------------------------------------------------------------------------------------- ceilings

def _zscore_runs(runs: np.ndarray) -> np.ndarray:
    """(R, n, V) -> z-scored per run and vertex over time (ddof=0); a constant run -> NaN."""
    runs = np.asarray(runs, np.float64)
    centred = runs - runs.mean(axis=1, keepdims=True)
    sd = centred.std(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return centred / np.where(sd > 0, sd, np.nan)


def repeat_ceiling(repeated: Sequence[np.ndarray], inverse_repeats: float | None = None) -> np.ndarray:
    """NSD's noise ceiling on Pearson r (see the module docstring), (V,).

    repeated: per stimulus (one subject's runs of it), an (R, n, V) array of its R >= 2 runs on common rows.
    inverse_repeats: the mean over the evaluated samples of 1/R of their target (default: that of
    ``repeated`` itself, every sample the mean of its R runs).
    """
    noise_sum, n_samples, inverse_sum = 0.0, 0, 0.0
    for runs in repeated:
        runs = np.asarray(runs)
        if runs.ndim != 3 or runs.shape[0] < 2:
            raise ValueError(f"repeated: expected (R >= 2, n, V) arrays of repeated runs, got shape {runs.shape}")
        noise_sum = noise_sum + _zscore_runs(runs).var(axis=0, ddof=1).sum(axis=0)
        n_samples += runs.shape[1]
        inverse_sum += runs.shape[1] / runs.shape[0]
    if n_samples == 0:
        raise ValueError("repeated: no repeated runs to estimate the noise from")
    inverse = inverse_sum / n_samples if inverse_repeats is None else float(inverse_repeats)
    noise = noise_sum / n_samples
    signal = np.clip(1.0 - noise, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr2 = signal / noise  # ncsnr^2; inf where the runs are identical
        nc = np.where(np.isinf(snr2), 1.0, snr2 / (snr2 + inverse))
    return np.sqrt(nc)


def _solve_single_reliability(r: np.ndarray, m: int) -> np.ndarray:
    """c^2 from r = c^2 / sqrt(c^2 + (1 - c^2)/M): the positive root of c^4 - r^2 (1 - 1/M) c^2 - r^2/M = 0
    (0 where r <= 0: no shared signal)."""
    r2 = np.where(np.asarray(r) > 0, np.asarray(r, np.float64) ** 2, 0.0)
    b = r2 * (1.0 - 1.0 / m)
    return np.clip((b + np.sqrt(b * b + 4.0 * r2 / m)) / 2.0, 0.0, 1.0)


def subject_ceiling(by_stimulus: Sequence[np.ndarray]) -> np.ndarray:
    """Leave-one-subject-out ceiling on Pearson r (see the module docstring), (V,).

    by_stimulus: per stimulus, an (S, n, V) array of S >= 2 subjects' targets on common rows.
    """
    sums: dict[int, np.ndarray] = {}
    for targets in by_stimulus:
        targets = np.asarray(targets, np.float64)
        if targets.ndim != 3 or targets.shape[0] < 2:
            raise ValueError(f"by_stimulus: expected (S >= 2, n, V) arrays of subjects' targets, got {targets.shape}")
        m = targets.shape[0] - 1
        total = targets.sum(axis=0)
        for y in targets:
            sums[m] = sums.get(m, 0.0) + _moment_sums(y, (total - y) / m)
    if not sums:
        raise ValueError("by_stimulus: no stimulus with targets of two subjects")
    weighted, n_all = 0.0, 0.0
    for m, s in sums.items():
        weighted = weighted + s[0] * _solve_single_reliability(_r_from_sums(s), m)
        n_all += s[0]
    return np.sqrt(weighted / n_all)


# ------------------------------------------------------------------------------ correlation from sums

def _moment_sums(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(6, V): n, sum x, sum y, sum xy, sum x^2, sum y^2 over rows."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = np.full(x.shape[1], float(x.shape[0]))
    return np.stack([n, x.sum(0), y.sum(0), (x * y).sum(0), (x * x).sum(0), (y * y).sum(0)])


def _r_from_sums(s) -> np.ndarray:
    """Pearson r from moment sums (..., 6, V) (n, sx, sy, sxy, sxx, syy); NaN where a column is constant."""
    n, sx, sy, sxy, sxx, syy = (s[..., i, :] for i in range(6))
    cov = sxy - sx * sy / n
    var_x = sxx - sx * sx / n
    var_y = syy - sy * sy / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_x * var_y)
    return np.where((var_x > 1e-12 * np.maximum(sxx, 1e-300)) & (var_y > 1e-12 * np.maximum(syy, 1e-300)), r, np.nan)


# ------------------------------------------------------------------------------------------ inputs

@dataclasses.dataclass
class _Target:
    """One evaluation target: a timeline, or one subject's repeats of one stimulus (the mean of its runs)."""

    names: list[str]
    subject: str
    study: str
    stimulus: str | None
    rows: np.ndarray  # prediction rows that have a sample in every run
    prediction: np.ndarray  # (n, V) float32
    runs: np.ndarray  # (R, n, V) float32

    @property
    def mean(self) -> np.ndarray:
        return self.runs[0] if len(self.runs) == 1 else self.runs.mean(axis=0)


def _prediction_dir(directory: Path, store: FeatureStore,
                    wanted: Sequence[str] | None) -> tuple[dict[str, np.ndarray], OutputSpace | None, dict]:
    """The finished predictions of an ``nforge predict`` directory, after checking they were made from this
    store's features (the inputs each timeline's record lists) by the one model its marker records; the space
    and the provenance (`inference.provenance.made_by`) its marker records."""
    if not directory.is_dir():
        raise ValueError(f"predictions {directory}: not a directory; expected an `nforge predict` output "
                         "directory or a mapping {timeline name: (rows, vertices) array}")
    marker = read_marker(directory)
    if marker is None:
        raise ValueError(f"predictions {directory}: no {MARKER}; expected an `nforge predict` output directory")
    if "provenance" not in marker:
        raise ValueError(f"predictions {directory}: written by an older nforge predict that recorded no provenance "
                         "(subject, feature rate, recipe), so they cannot be checked against the store; re-run "
                         f"`nforge predict ... --out {directory} --overwrite`")
    done = finished_timelines(directory, strict=True)
    if not done:
        raise ValueError(f"predictions {directory}: no finished timeline (run nforge predict to the end first)")
    out = {}
    for name in (sorted(done) if wanted is None else wanted):
        if name not in done:
            continue  # reported as missing by _check_timelines
        rec = done[name]
        provenance.check_same_maker(marker, rec, expected_what=f"its marker {MARKER}",
                                    got_what=f"predictions {directory}: timeline {name!r}",
                                    remedy="a directory mixes predictions of two runs; predict into a new --out")
        if name not in store:
            raise ValueError(f"predictions {directory}: timeline {name!r} is not in the store {store.path}; "
                             "evaluate against the store the predictions were made from")
        inputs = rec.get("inputs") if isinstance(rec.get("inputs"), dict) else {}
        made_from = types.SimpleNamespace(modalities=tuple(inputs.get("features_sha256") or ()))
        now = timeline_inputs(store, name, made_from)
        changed = [k for k in now if json.dumps(now[k], sort_keys=True) != json.dumps(inputs.get(k), sort_keys=True)]
        if changed:
            raise ValueError(f"predictions {directory}: timeline {name!r} was predicted from other inputs than the "
                             f"store {store.path} holds ({', '.join(changed)} differ); evaluate against the store "
                             "the predictions were made from, or predict again")
        out[name] = read_predictions(directory, name, rec)
    space = marker.get("space")
    made_by = {k: marker.get(k) for k in ("model_sha256", "subject", "subject_index", "subject_keys", "feature_hz",
                                          "extract_recipe", "space", "allowed")}
    return (out, None if space is None else OutputSpace.from_dict(space, f"predictions {directory / MARKER} (space)"),
            made_by)


def _store_space(store: FeatureStore, names: Sequence[str]) -> OutputSpace:
    """The one output space of the evaluated timelines (meta ``space``, else inferred from the fMRI columns)."""
    first = None
    for name in names:
        space = space_of_meta(store.meta(name), store.fmri(name).shape[1], f"timeline {name!r}")
        if first is None:
            first = (name, space)
        else:
            check_same_space(first[1], space, expected_what=f"timeline {first[0]!r}", got_what=f"timeline {name!r}")
    return first[1]


def _check_timelines(predictions: Mapping[str, np.ndarray], store: FeatureStore,
                     timelines: Sequence[str] | None, where: str) -> list[str]:
    names = sorted(predictions) if timelines is None else list(timelines)
    if isinstance(timelines, str) or not names:
        raise ValueError(f"timelines: expected a non-empty list of timeline names, got {timelines!r}")
    provenance.check_unique(names, "timelines")
    for name in names:
        if name not in predictions:
            raise ValueError(f"timelines: {name!r} has no predictions in {where}")
        if name not in store:
            raise ValueError(f"timeline {name!r}: not in the store {store.path}")
        fmri = store.fmri(name)
        if fmri is None:
            raise ValueError(f"timeline {name!r}: the store {store.path} holds no fMRI for it")
        pred = predictions[name]
        shape = getattr(pred, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(f"predictions[{name!r}]: expected a (rows, {fmri.shape[1]}) array (the store's "
                             f"outputs), got shape {shape}")
        if shape[1] != fmri.shape[1]:
            raise SpaceMismatch(f"predictions[{name!r}]: expected a (rows, {fmri.shape[1]}) array, the store's "
                                f"{space_of_meta(store.meta(name), fmri.shape[1]).describe()}; got {shape[1]:,} "
                                "columns (predictions of another output space)")
        finite = np.isfinite(np.asarray(pred)).all(axis=1)
        if not finite.all():
            raise ValueError(f"predictions[{name!r}]: row {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
    return names


def _group_repeats(store: FeatureStore, names: Sequence[str]) -> list[list[str]]:
    """Timelines grouped by (subject, meta stimulus): a group of several is one subject's repeats."""
    groups: dict[tuple, list[str]] = {}
    for name in names:
        meta = store.meta(name)
        stimulus = meta.get("stimulus")
        key = (subject_key(meta), str(stimulus)) if stimulus is not None else ("", name)
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def _make_target(store: FeatureStore, names: list[str], predictions: Mapping[str, np.ndarray]) -> _Target:
    meta = store.meta(names[0])
    first = np.asarray(predictions[names[0]], np.float32)
    for other in names[1:]:
        pred = np.asarray(predictions[other], np.float32)
        scale = float(np.abs(first).max()) or 1.0
        if pred.shape != first.shape or not np.allclose(pred, first, rtol=0, atol=1e-4 * scale):
            raise ValueError(f"timelines {names[0]!r} and {other!r} are repeats (subject {subject_key(meta)}, "
                             f"stimulus {meta.get('stimulus')!r}) but their predictions differ; a stimulus "
                             "has one prediction (same features, same model and subject)")
    aligned = [measured_targets(store, name, len(first)) for name in names]
    mask = np.logical_and.reduce([m for _, m in aligned])
    if not mask.any():
        raise ValueError(f"timeline {names[0]!r}: none of its {len(first)} prediction rows has a measured sample "
                         f"({store.fmri(names[0]).shape[0]} samples, offset_s {meta['offset_s']}, start_s "
                         f"{meta.get('start_s', 0.0)}); are these its predictions?")
    return _Target(names=list(names), subject=subject_key(meta), study=str(meta["study"]),
                   stimulus=meta.get("stimulus"),
                   rows=np.flatnonzero(mask), prediction=first[mask], runs=np.stack([t[mask] for t, _ in aligned]))


# ------------------------------------------------------------------------------------------ ceiling choice

def _range_text(values) -> str:
    values = sorted(set(int(v) for v in values))
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def _subject_groups(targets: Sequence[_Target]) -> list[np.ndarray]:
    """Per stimulus with targets of >= 2 subjects: (S, n, V) on the rows all of them have. A stimulus is named
    within its study: two studies' ``run-1`` are different stimuli."""
    by_stimulus: dict[tuple[str, str], list[_Target]] = {}
    for t in targets:
        if t.stimulus is not None:
            by_stimulus.setdefault((t.study, str(t.stimulus)), []).append(t)
    out = []
    for group in by_stimulus.values():
        if len({t.subject for t in group}) < 2:
            continue
        rows = group[0].rows
        for t in group[1:]:
            rows = np.intersect1d(rows, t.rows)
        if len(rows):
            out.append(np.stack([t.mean[np.searchsorted(t.rows, rows)] for t in group]))
    return out


def _ceiling(method, targets: Sequence[_Target], n_vertices: int) -> tuple[np.ndarray, str, str]:
    """(ceiling (V,), method text, note)."""
    if method is None or (isinstance(method, str) and method == "none"):
        return np.full(n_vertices, np.nan), "none", ""
    if not isinstance(method, str):
        given = np.asarray(method, np.float64)
        if given.shape != (n_vertices,):
            raise ValueError(f"ceiling: expected one of {CEILING_METHODS}, None or a ({n_vertices},) array, got an "
                             f"array of shape {given.shape}")
        if np.any(given[np.isfinite(given)] < 0):
            raise ValueError("ceiling: a given ceiling must be >= 0 (NaN where unknown)")
        return given, "given", ""
    if method not in CEILING_METHODS:
        raise ValueError(f"ceiling: expected one of {CEILING_METHODS}, None or a ({n_vertices},) array, "
                         f"got {method!r}")
    repeated = [t for t in targets if len(t.runs) > 1]
    if method == "repeats" or (method == "auto" and repeated):
        if not repeated:
            raise ValueError("ceiling='repeats': no evaluated timelines repeat a stimulus for one subject (store "
                             "meta 'stimulus'); use ceiling='subjects' or 'none'")
        n = sum(len(t.rows) for t in targets)
        inverse = sum(len(t.rows) / len(t.runs) for t in targets) / n
        ceiling = repeat_ceiling([t.runs for t in repeated], inverse_repeats=inverse)
        return ceiling, f"repeats (NSD ncsnr, R={_range_text(len(t.runs) for t in targets)})", ""
    groups = _subject_groups(targets)
    if not groups:
        if method == "auto":
            return np.full(n_vertices, np.nan), "none", "no repeats and no stimulus with targets of two subjects"
        raise ValueError("ceiling='subjects': no evaluated stimulus (store meta 'stimulus') has targets of two "
                         "subjects; evaluate several subjects' timelines of one stimulus, or use ceiling='none'")
    note = ("measures the response shared between subjects only; lower than a subject's own ceiling where "
            "subjects differ")
    return subject_ceiling(groups), f"leave-one-subject-out (S={_range_text(len(g) for g in groups)})", note


# ------------------------------------------------------------------------------------------ bootstrap

def _sub_blocks(lengths: Sequence[int], block_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-blocks of the concatenated samples (never across two targets) and the moving blocks over them:
    (sub-block first rows (n_sub,), block first sub-block (n_blocks,), block length in sub-blocks (n_blocks,))."""
    total = int(sum(lengths))
    rows = block_s * timebase.FMRI_HZ
    sub = max(1, int(round(rows / _SUB_BLOCKS_PER_BLOCK)), math.ceil(total / _MAX_SUB_BLOCKS))
    k = max(1, int(round(rows / sub)))
    firsts, starts, lens, offset = [], [], [], 0
    for n in lengths:
        first = len(firsts)
        firsts.extend(range(offset, offset + n, sub))
        m = len(firsts) - first
        starts.extend(range(first, first + max(1, m - k + 1)))
        lens.extend([min(k, m)] * max(1, m - k + 1))
        offset += n
    return np.asarray(firsts), np.asarray(starts), np.asarray(lens)


def _moment_table(x: np.ndarray, y: np.ndarray, firsts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sub-block sums of x, y, xy, x^2, y^2 of the mean-centred data, (n_sub, 5, V) float64, and the
    rows per sub-block. Centring first keeps the sums free of cancellation."""
    x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    y = y - y.mean(axis=0, dtype=np.float64).astype(np.float32)
    table = np.stack([np.add.reduceat(v, firsts, axis=0, dtype=np.float64) for v in (x, y, x * y, x * x, y * y)],
                     axis=1)
    return table, np.diff(np.append(firsts, len(x))).astype(np.float64)


def _with_counts(sums: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(B, 5, V) sums and (B,) sample counts -> (B, 6, V) moment sums for :func:`_r_from_sums`."""
    n = np.broadcast_to(np.asarray(n, np.float64)[:, None, None], (len(sums), 1, sums.shape[-1]))
    return np.concatenate([n, sums], axis=1)


def _bootstrap_r(table: np.ndarray, rows: np.ndarray, starts: np.ndarray, lens: np.ndarray, n_boot: int,
                 rng: np.random.Generator):
    """Yields (B, V) Pearson r of bootstrap draws: each draw's sub-block counts times the table."""
    n_sub = len(table)
    flat = table.reshape(n_sub, -1).astype(np.float32)
    per_draw = max(1, int(round(n_sub / lens.mean())))
    for lo in range(0, n_boot, _BOOT_CHUNK):
        b = min(_BOOT_CHUNK, n_boot - lo)
        pick = rng.integers(len(starts), size=(b, per_draw))
        counts = np.zeros((b, n_sub), np.float32)
        draw = np.broadcast_to(np.arange(b)[:, None], pick.shape)
        for off in range(int(lens.max())):
            sel = lens[pick] > off
            np.add.at(counts, (draw[sel], starts[pick][sel] + off), 1.0)
        sums = (counts @ flat).reshape(b, 5, -1).astype(np.float64)
        yield _r_from_sums(_with_counts(sums, counts.astype(np.float64) @ rows))


# ------------------------------------------------------------------------------------------ ROIs

def _roi_medians(values: np.ndarray, roi_sets) -> np.ndarray:
    """(B, V) -> (B, n_roi) medians over each ROI's finite values (NaN for none)."""
    return region_medians(values, roi_sets)


def _ratio(r: np.ndarray, ceiling: np.ndarray, min_ceiling: float) -> np.ndarray:
    ok = np.isfinite(ceiling) & (ceiling > min_ceiling)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, r / np.where(ok, ceiling, 1.0), np.nan)


def _interval(draws: np.ndarray, n_roi: int) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile interval per column of (n_boot, n_roi) draws; NaN without draws or finite values."""
    import warnings

    if not len(draws):
        return np.full(n_roi, np.nan), np.full(n_roi, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)


def _roi_rows(r, ceiling, ratio, boot_r, boot_ratio, roi_sets) -> list[dict]:
    point = _roi_medians(np.stack([r, ceiling, ratio]), roi_sets)
    (lo_r, hi_r), (lo_q, hi_q) = _interval(boot_r, len(roi_sets)), _interval(boot_ratio, len(roi_sets))
    rows = []
    for j, (name, kind, idx) in enumerate(roi_sets):
        values = [point[0, j], lo_r[j], hi_r[j], point[1, j], np.clip(point[2, j], 0, 1), point[2, j],
                  np.clip(lo_q[j], 0, 1), np.clip(hi_q[j], 0, 1)]
        rows.append({"roi": name, "kind": kind, "n_vertices": int(len(idx)),
                     **{k: (round(float(v), 6) if np.isfinite(v) else None) for k, v in zip(_ROI_FIELDS[3:], values)}})
    return rows


# ------------------------------------------------------------------------------------------ result

def _fmt(v, width: int = 5) -> str:
    return f"{v:.{width - 3}f}" if v is not None else "-".rjust(width)


@dataclasses.dataclass
class Evaluation:
    """Result of :func:`evaluate`. r, ceiling, r_over_ceiling: (V,) per vertex (r_over_ceiling raw: unclipped,
    NaN where the ceiling is <= min_ceiling or unknown); ceiling_method: how the ceiling was made; rois: one
    dict per ROI (fields of rois.csv); timelines: the evaluated timelines; targets: their evaluation targets
    (one per timeline, or per subject's repeats of a stimulus); n_samples: evaluated 1 Hz samples; info:
    settings and notes; provenance: what made the predictions (`inference.provenance.made_by`, None for arrays given
    directly), each evaluated timeline's identity and the notes of deliberate pairings."""

    r: np.ndarray
    ceiling: np.ndarray
    r_over_ceiling: np.ndarray
    ceiling_method: str
    rois: list
    timelines: list
    n_targets: int
    n_samples: int
    info: dict
    space: dict | None = None
    provenance: dict | None = None

    @property
    def output_space(self) -> OutputSpace | None:
        return None if self.space is None else OutputSpace.from_dict(self.space, "evaluation space")

    @property
    def is_subcortical(self) -> bool:
        return self.space is not None and self.space.get("name") == SUBCORTICAL

    def roi(self, name: str) -> dict:
        """The row of ROI ``name`` ("all vertices", "cortex", a section or an area such as "L_V1")."""
        for row in self.rois:
            if row["roi"] == name:
                return row
        raise KeyError(f"roi {name!r}: not evaluated; evaluated: {[row['roi'] for row in self.rois][:8]}...")

    def to_json(self) -> dict:
        """evaluation.json's content: method, counts, medians over all vertices (and the cortex), per-ROI rows."""
        head = {row["kind"]: row for row in self.rois if row["kind"] in ("all", "cortex", "grey")}
        return {"format": "nforge_jax.Evaluation", "space": self.space, "ceiling_method": self.ceiling_method,
                "n_timelines": len(self.timelines), "n_targets": self.n_targets, "n_samples": self.n_samples,
                "medians": {k: {f: row[f] for f in _ROI_FIELDS[2:]} for k, row in head.items()},
                "timelines": list(self.timelines), "info": self.info, "provenance": self.provenance,
                "rois": self.rois}

    def summary_text(self) -> str:
        """One screen: method, medians over the cortex (subcortical grey matter, or every output) and the 22
        sections (the subcortical structures)."""
        head = next((row for row in self.rois if row["kind"] in ("cortex", "grey")), self.rois[0])
        lines = [f"{self.n_timelines_text()}, {self.n_samples} samples at 1 Hz",
                 f"predictions: {self.made_by_text()}",
                 f"noise ceiling: {self.ceiling_method}" + (f" ({self.info['note']})" if self.info.get("note") else ""),
                 f"{head['roi']} ({head['n_vertices']} {self.output_unit}), medians: r {_fmt(head['median_r'])} "
                 f"[{_fmt(head['median_r_ci_low'])}, {_fmt(head['median_r_ci_high'])}], ceiling "
                 f"{_fmt(head['median_ceiling'])}, r/ceiling {_fmt(head['median_r_over_ceiling'])} "
                 f"[{_fmt(head['median_r_over_ceiling_ci_low'])}, {_fmt(head['median_r_over_ceiling_ci_high'])}]"
                 + ("" if head["median_r_over_ceiling_raw"] is None else
                    f" (raw {head['median_r_over_ceiling_raw']:.3f})")]
        sections = [row for row in self.rois if row["kind"] in ("section", "structure")]
        if sections:
            what = "section (both hemispheres)" if sections[0]["kind"] == "section" else "structure (both sides)"
            lines.append(f"{what:<45} {'n':>5}  {'r':>5} {'95% CI':>13}  {'ceil':>5}  "
                         f"{'r/ceil':>6}")
            for row in sections:
                lines.append(f"{row['roi'][:45]:<45} {row['n_vertices']:>5}  {_fmt(row['median_r'])} "
                             f"[{_fmt(row['median_r_ci_low'])},{_fmt(row['median_r_ci_high'])}]  "
                             f"{_fmt(row['median_ceiling'])}  {_fmt(row['median_r_over_ceiling'], 6)}")
        return "\n".join(lines)

    @property
    def output_unit(self) -> str:
        return "vertices" if self.space is None else self.output_space.unit

    def made_by_text(self) -> str:
        made = (self.provenance or {}).get("predictions")
        text = "arrays given directly (no provenance recorded)" if made is None else provenance.describe_maker(made)
        notes = (self.provenance or {}).get("notes") or []
        return text + (f"; {len(notes)} deliberate pairing(s), e.g. {notes[0]}" if notes else "")

    def n_timelines_text(self) -> str:
        repeats = "" if self.n_targets == len(self.timelines) else f" (repeats averaged: {self.n_targets} targets)"
        return f"{len(self.timelines)} timelines{repeats}"

    def save(self, out_dir) -> dict[str, Path]:
        """Write evaluation.json, rois.csv and maps.npz (r, ceiling, r_over_ceiling) into ``out_dir``
        (atomically, file by file); figures: ``nforge_jax.viz.evaluation.save_evaluation_figures``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "evaluation.json", "csv": out / "rois.csv", "maps": out / "maps.npz"}
        with atomic_open(paths["json"]) as f:
            f.write(json.dumps(self.to_json(), indent=1).encode())
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(_ROI_FIELDS), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in self.rois)
        with atomic_open(paths["csv"]) as f:
            f.write(text.getvalue().encode())
        with atomic_open(paths["maps"]) as f:
            np.savez(f, r=self.r.astype(np.float32), ceiling=self.ceiling.astype(np.float32),
                     r_over_ceiling=self.r_over_ceiling.astype(np.float32))
        return paths


# ------------------------------------------------------------------------------------------ entry point

def _check_settings(n_boot, block_s, min_ceiling) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot: expected an int >= 0 (bootstrap draws; 0 for no intervals), got {n_boot!r}")
    if isinstance(block_s, bool) or not isinstance(block_s, (int, float)) or not 1 <= block_s < float("inf"):
        raise ValueError(f"block_s: expected a block length in seconds >= 1, got {block_s!r}")
    if isinstance(min_ceiling, bool) or not isinstance(min_ceiling, (int, float)) or not 0 <= min_ceiling < 1:
        raise ValueError(f"min_ceiling: expected a number in [0, 1), got {min_ceiling!r}")


def evaluate(predictions, store, *, timelines: Sequence[str] | None = None, ceiling="auto", rois="auto",
             n_boot: int = 1000, block_s: float = 25.0, seed: int = 0, min_ceiling: float = 0.05,
             mesh: str = "fsaverage5", grid=None, allow_other_subject: bool = False) -> Evaluation:
    """Score predictions against the store's measured fMRI, with a noise ceiling (see the module docstring).

    predictions: an ``nforge predict`` output directory (its timelines' recorded inputs must match ``store``) or
    a mapping {timeline name: (rows, V) array} (row j: stimulus time start_s + j, as predict writes them).
    store: a FeatureStore or its path. timelines: the timelines to evaluate (default: every predicted one).
    ceiling: "auto" | "repeats" | "subjects" | "none" | None | a (V,) array. rois: "auto" (the space's own: "hcp" on
    fsaverage5, "structures" on the subcortical grid), "hcp" (HCP-MMP1 areas per hemisphere, the 22 sections, the
    labelled cortex), "structures" (per side and both sides, the grey matter), None, or a list of area / section /
    structure names; every output ("all vertices" / "all voxels") is always reported. Predictions of another output
    space than the store's raise SpaceMismatch. n_boot: bootstrap draws (0: no intervals); block_s: bootstrap block
    length (s). grid: the subcortical grid of a subcortical store (default: found as `data.regions.grid_of_space`
    finds it). allow_other_subject: score an ``nforge predict`` directory made with one subject's head against
    another subject's runs (refused otherwise; the average subject's head may be scored against anyone); the
    pairing is named in the summary and the JSON's ``provenance.notes``.
    """
    _check_settings(n_boot, block_s, min_ceiling)
    store = store if isinstance(store, FeatureStore) else FeatureStore.open(store)
    marked, made_by, notes = None, None, []
    if isinstance(predictions, Mapping):
        where = "the predictions given"
    else:
        where = str(predictions)
        predictions, marked, made_by = _prediction_dir(Path(predictions), store, timelines)
    names = _check_timelines(predictions, store, timelines, where)
    for name in names:
        if made_by is not None:
            provenance.check_feature_rate(store, name, made_by["feature_hz"], what=f"predictions {where}")
            note = provenance.check_subject(made_by, store, name, allow_other_subject=allow_other_subject,
                                            where=f"nforge evaluate {where}")
            notes += [note] if note else []
        provenance.check_durations(store, name)
    space = _store_space(store, names)
    if marked is not None:
        check_same_space(space, marked, expected_what=f"the store {store.path}", got_what=f"predictions {where}")
    roi_sets = region_sets(space, rois, mesh=mesh, grid=grid)
    targets = [_make_target(store, group, predictions) for group in _group_repeats(store, names)]
    n_samples = sum(len(t.rows) for t in targets)
    if n_samples < MIN_SAMPLES:
        raise ValueError(f"timelines: only {n_samples} measured samples line up with the predictions; at least "
                         f"{MIN_SAMPLES} are needed for a correlation")
    n_vertices = targets[0].prediction.shape[1]
    ceil, method, note = _ceiling(ceiling, targets, n_vertices)
    x = np.concatenate([t.prediction for t in targets])
    y = np.concatenate([t.mean for t in targets]).astype(np.float32)
    firsts, starts, lens = _sub_blocks([len(t.rows) for t in targets], float(block_s))
    block_rows = int(lens.max() * np.diff(np.append(firsts, n_samples)).max())
    if n_boot and n_samples / block_rows < MIN_BLOCKS:
        note = (note + "; " if note else "") + (
            f"no bootstrap intervals: {n_samples} samples hold {n_samples / block_rows:.1f} blocks of {block_rows} "
            f"(at least {MIN_BLOCKS} are needed; pass a shorter --block-s or evaluate more data)")
        n_boot = 0
    table, rows = _moment_table(x, y, firsts)
    del x, y
    r = _r_from_sums(_with_counts(table.sum(axis=0, keepdims=True), rows.sum(keepdims=True)))[0]
    ratio = _ratio(r, ceil, min_ceiling)
    boot_r, boot_ratio = [], []
    for draws in _bootstrap_r(table, rows, starts, lens, int(n_boot), np.random.default_rng(seed)):
        boot_r.append(_roi_medians(draws, roi_sets))
        boot_ratio.append(_roi_medians(_ratio(draws, ceil[None], min_ceiling), roi_sets))
    boot_r = np.concatenate(boot_r) if boot_r else np.zeros((0, len(roi_sets)))
    boot_ratio = np.concatenate(boot_ratio) if boot_ratio else np.zeros((0, len(roi_sets)))
    info = {"note": note, "n_boot": int(n_boot), "block_s": float(block_s),
            "block_rows": block_rows, "seed": int(seed),
            "min_ceiling": float(min_ceiling), "store": str(store.path), "predictions": where}
    return Evaluation(r=r, ceiling=ceil, r_over_ceiling=ratio, ceiling_method=method,
                      rois=_roi_rows(r, ceil, ratio, boot_r, boot_ratio, roi_sets), timelines=names,
                      n_targets=len(targets), n_samples=n_samples, info=info, space=space.to_dict(),
                      provenance={"predictions": made_by, "notes": notes,
                                  "timelines": [provenance.timeline_identity(store, n) for n in names]})
