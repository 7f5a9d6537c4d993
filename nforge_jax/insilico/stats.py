"""Per-output tests of a contrast between stimulus conditions.

A contrast is a set of weights over conditions. Each condition holds one summarised response per stimulus,
an ``(n_stimuli, n_outputs)`` array. Two kinds of test follow from the weights:

- weights that sum to zero (``faces - places``, ``speech - (music + noise) / 2``): the generalised Welch
  t = sum_c w_c mean_c / sqrt(sum_c w_c^2 var_c / n_c), and its null distribution from relabelling the stimuli
  of the weighted conditions (group sizes kept);
- one condition against baseline (``faces``): the one-sample t, and its null from flipping the sign of each
  stimulus's response.

The permutations come from :func:`scipy.stats.permutation_test` (exact, over every relabelling, when there are
no more of them than ``n_permutations``); Benjamini-Hochberg from :func:`scipy.stats.false_discovery_control`.
What scipy does not offer is written here: the family-wise p-values from the distribution of the maximum
|t| over outputs under the same permutations, and the check that a design can reach significance at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

__all__ = ["ContrastResult", "DesignError", "check_power", "contrast_test", "n_relabellings", "roi_table_rows",
           "smallest_p"]

# Memory of one batch of permuted statistics: batch x stimuli x outputs float64 values stay near this many bytes.
_BATCH_BYTES = 32 * 2**20


class DesignError(ValueError):
    """An experiment that cannot give a valid test; raised before any prediction is made."""


@dataclass
class ContrastResult:
    """One contrast's per-output statistics, each an ``(n_outputs,)`` float64 array."""

    name: str
    effect: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    t: np.ndarray
    p: np.ndarray
    p_fdr: np.ndarray
    p_fwe: np.ndarray
    test: str
    n_permutations: int
    exact: bool
    n_stimuli: dict = field(default_factory=dict)

    def summary(self, alpha: float = 0.05) -> dict:
        """The figures a table or a log line shows (JSON-ready)."""
        return {"name": self.name, "test": self.test, "n_permutations": self.n_permutations, "exact": self.exact,
                "n_stimuli": dict(self.n_stimuli), "alpha": alpha, "n_outputs": int(self.t.size),
                "n_significant_fdr": int((self.p_fdr <= alpha).sum()),
                "n_significant_fwe": int((self.p_fwe <= alpha).sum()),
                "max_abs_t": float(np.nanmax(np.abs(self.t))) if self.t.size else float("nan")}


def _used(weights: Mapping[str, float]) -> dict[str, float]:
    return {str(c): float(w) for c, w in weights.items() if float(w) != 0.0}


def _kind(weights: Mapping[str, float], name: str) -> str:
    used = _used(weights)
    if not used:
        raise DesignError(f"contrast {name!r}: every weight is zero")
    if math.isclose(sum(used.values()), 0.0, abs_tol=1e-9):
        if len(used) < 2:
            raise DesignError(f"contrast {name!r}: a difference needs two conditions, got {sorted(used)}")
        return "label-permutation"
    if len(used) == 1:
        return "sign-flip"
    raise DesignError(f"contrast {name!r}: weights {used} sum to {sum(used.values()):g}; a contrast of several "
                      "conditions must sum to zero (a difference), or name one condition (against baseline)")


def n_relabellings(n_stimuli: Mapping[str, int], weights: Mapping[str, float], name: str = "contrast") -> int:
    """How many distinct null samples the contrast's permutation test has: 2^n sign flips for one condition,
    the multinomial coefficient N! / prod n_c! for relabelled conditions."""
    used = _used(weights)
    sizes = [int(n_stimuli[c]) for c in used]
    if _kind(weights, name) == "sign-flip":
        return 2 ** sizes[0]
    count = math.factorial(sum(sizes))
    for n in sizes:
        count //= math.factorial(n)
    return count


def smallest_p(n_stimuli: Mapping[str, int], weights: Mapping[str, float], n_permutations: int = 1000,
               name: str = "contrast") -> float:
    """The smallest two-sided p the test can report (scipy doubles the smaller one-sided p; a random test also
    counts the observed labelling once)."""
    total = n_relabellings(n_stimuli, weights, name)
    if total <= n_permutations:
        return min(1.0, 2.0 / total)
    return min(1.0, 2.0 / (n_permutations + 1))


def check_power(n_stimuli: Mapping[str, int], weights: Mapping[str, float], *, alpha: float = 0.05,
                n_permutations: int = 1000, name: str = "contrast") -> None:
    """Refuse a contrast whose permutation test cannot reach p <= alpha, or whose conditions have too few
    stimuli for a variance (Welch needs two per condition)."""
    used = _used(weights)
    missing = sorted(c for c in used if c not in n_stimuli)
    if missing:
        raise DesignError(f"contrast {name!r}: unknown condition(s) {missing}; conditions: {sorted(n_stimuli)}")
    few = {c: int(n_stimuli[c]) for c in used if int(n_stimuli[c]) < 2}
    if few:
        raise DesignError(f"contrast {name!r}: condition(s) {few} have fewer than 2 stimuli; a t statistic needs "
                          "at least 2 per condition")
    floor = smallest_p(n_stimuli, weights, n_permutations, name)
    if floor > alpha:
        counts = {c: int(n_stimuli[c]) for c in used}
        raise DesignError(
            f"contrast {name!r}: with {counts} stimuli the permutation test has "
            f"{n_relabellings(n_stimuli, weights, name)} relabellings, so its smallest p is {floor:.3g} > "
            f"alpha {alpha:g}; add stimuli")


def _welch(samples: Sequence[np.ndarray], w: np.ndarray, axis: int):
    """Effect, standard error and Welch-Satterthwaite degrees of freedom of sum_c w_c mean_c."""
    n = np.array([s.shape[axis] for s in samples], np.float64)
    means = [s.mean(axis=axis) for s in samples]
    parts = [wc**2 * s.var(axis=axis, ddof=1) / nc for s, wc, nc in zip(samples, w, n)]
    effect = sum(wc * m for wc, m in zip(w, means))
    var = sum(parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = var**2 / sum(p**2 / (nc - 1) for p, nc in zip(parts, n))
    return effect, np.sqrt(var), df


def _t_of(effect, se):
    with np.errstate(invalid="ignore", divide="ignore"):
        t = effect / se
    # an output with no variance (and no effect) in any labelling carries no evidence: t = 0, p = 1
    return np.where(se > 0, t, 0.0)


def _batch(n_stimuli: int, n_outputs: int) -> int:
    return max(1, _BATCH_BYTES // max(1, 8 * n_stimuli * n_outputs))


def contrast_test(values: Mapping[str, np.ndarray], weights: Mapping[str, float], *, name: str = "contrast",
                  n_permutations: int = 1000, seed: int = 0, alpha: float = 0.05) -> ContrastResult:
    """Test ``sum_c weights[c] * mean_c`` at every output (see the module docstring).

    values: condition -> ``(n_stimuli, n_outputs)``; conditions with zero weight are not read.
    Returns effect, its 95% Welch CI, t, the two-sided permutation p, BH-adjusted and max-|t| adjusted p."""
    kind = _kind(weights, name)
    used = _used(weights)
    samples = []
    for c in used:
        if c not in values:
            raise DesignError(f"contrast {name!r}: unknown condition {c!r} (no stimuli); conditions: {sorted(values)}")
        samples.append(np.asarray(values[c], np.float64))
    shapes = {c: s.shape for c, s in zip(used, samples)}
    if any(s.ndim != 2 for s in samples) or len({s.shape[1] for s in samples}) != 1:
        raise DesignError(f"contrast {name!r}: expected (n_stimuli, n_outputs) arrays with one n_outputs, got {shapes}")
    if not all(np.isfinite(s).all() for s in samples):
        raise DesignError(f"contrast {name!r}: responses hold NaN or inf values")
    n_stim = {c: s.shape[0] for c, s in zip(used, samples)}
    check_power(n_stim, used, alpha=alpha, n_permutations=n_permutations, name=name)
    w = np.array(list(used.values()))
    if kind == "sign-flip":
        # flipping signs of w*x: one-sample t of the weighted responses
        samples = [samples[0] * w[0]]
        w = np.ones(1)

    def statistic(*data, axis):
        effect, se, _ = _welch(data, w, axis)
        return _t_of(effect, se)

    n_out = samples[0].shape[1]
    result = scipy.stats.permutation_test(
        tuple(samples), statistic, permutation_type="samples" if kind == "sign-flip" else "independent",
        vectorized=True, n_resamples=n_permutations, batch=_batch(sum(n_stim.values()), n_out),
        alternative="two-sided", axis=0, rng=np.random.default_rng(seed))
    total = n_relabellings(n_stim, used, name)
    exact = total <= n_permutations
    effect, se, df = _welch(samples, w, 0)
    t = result.statistic
    half = scipy.stats.t.ppf(0.975, np.where(np.isfinite(df), df, 1.0)) * se
    return ContrastResult(
        name=name, effect=effect, ci_low=effect - half, ci_high=effect + half, t=t,
        p=np.asarray(result.pvalue, np.float64), p_fdr=scipy.stats.false_discovery_control(result.pvalue),
        # a family-wise p is never below the uncorrected one (scipy's two-sided p doubles the smaller tail;
        # the max-|t| count does not), so that an output significant after FWE control is so before it
        p_fwe=np.maximum(_max_stat_p(t, result.null_distribution, exact), result.pvalue), test=kind,
        n_permutations=int(len(result.null_distribution)), exact=exact, n_stimuli=n_stim)


def _max_stat_p(t: np.ndarray, null: np.ndarray, exact: bool) -> np.ndarray:
    """Family-wise p of each output: the share of permutations whose largest |t| over all outputs reaches
    this output's |t| (the observed labelling counted once when the permutations were drawn at random)."""
    peak = np.sort(np.abs(null).max(axis=1))
    observed = np.abs(t)
    # the same relative tolerance scipy uses, so that ties with the observed labelling count as reached
    reached = len(peak) - np.searchsorted(peak, observed * (1 - 1e-14), side="left")
    if exact:
        return np.minimum(1.0, reached / len(peak))
    return np.minimum(1.0, (reached + 1) / (len(peak) + 1))


def roi_table_rows(values: Mapping[str, np.ndarray], weights: Mapping[str, float], result: ContrastResult,
                   regions: Sequence[tuple], *, alpha: float = 0.05) -> list[dict]:
    """One row per region of :func:`nforge_jax.data.regions.region_sets`: the mean effect over its outputs, a 95%
    Welch CI over stimuli (of each stimulus's response averaged over the region) and the fraction of its
    outputs significant after FDR and after FWE control."""
    used = _used(weights)
    w = np.array(list(used.values()))
    rows = []
    for region, kind, idx in regions:
        idx = np.asarray(idx)
        row = {"region": region, "kind": kind, "n_outputs": int(idx.size)}
        if idx.size == 0:
            rows.append(row | {"effect": np.nan, "ci_low": np.nan, "ci_high": np.nan, "frac_fdr": np.nan,
                               "frac_fwe": np.nan})
            continue
        means = [np.asarray(values[c], np.float64)[:, idx].mean(axis=1, keepdims=True) for c in used]
        effect, se, df = _welch(means, w, 0)
        half = scipy.stats.t.ppf(0.975, df) * se if np.all(np.isfinite(df)) else np.full(1, np.nan)
        rows.append(row | {"effect": float(effect[0]), "ci_low": float((effect - half)[0]),
                           "ci_high": float((effect + half)[0]),
                           "frac_fdr": float((result.p_fdr[idx] <= alpha).mean()),
                           "frac_fwe": float((result.p_fwe[idx] <= alpha).mean())})
    return rows
