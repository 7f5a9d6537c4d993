"""Evaluation metrics accumulated over an epoch: per-vertex Pearson r (also per subject), top-1 retrieval.

The Pearson statistics are running sums per (subject, vertex): n, Σp, Σy, Σp², Σy², Σpy. They are
updated inside a jitted function, so with the vertex axis sharded the sums stay sharded; the final r is
computed in float64 on the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

N_STATS = 6  # n, sum_p, sum_y, sum_pp, sum_yy, sum_py


def init_pearson(n_subjects: int, n_vertices: int):
    return jnp.zeros((n_subjects, N_STATS, n_vertices), jnp.float32)


def update_pearson(stats, pred, target, mask, subject_ids):
    """Adds a batch. pred/target (B, T, V), mask (B, T), subject_ids (B,)."""
    w = mask.astype(jnp.float32)[..., None]
    p, y = pred.astype(jnp.float32) * w, target.astype(jnp.float32) * w
    per_sample = jnp.stack([jnp.broadcast_to(w, p.shape).sum(1), p.sum(1), y.sum(1), (p * p).sum(1),
                            (y * y).sum(1), (p * y).sum(1)], axis=1)  # (B, 6, V)
    return stats + jax.ops.segment_sum(per_sample, subject_ids, num_segments=stats.shape[0])


def pearson_from_stats(stats) -> np.ndarray:
    """r per vertex from summed statistics (..., 6, V); NaN where undefined (constant or too few rows)."""
    s = np.asarray(stats, np.float64)
    n, sp, sy, spp, syy, spy = (s[..., i, :] for i in range(N_STATS))
    cov = n * spy - sp * sy
    var = (n * spp - sp**2) * (n * syy - sy**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var)
    r[(var <= 0) | (n < 2)] = np.nan
    return r


def summarize_pearson(stats) -> dict:
    """{"pearson": nan-mean over vertices of r pooled over subjects, "r_vertex": (V,), "subject_pearson": [...]}."""
    pooled = pearson_from_stats(np.asarray(stats).sum(0))
    per_subject = pearson_from_stats(stats)
    seen = np.asarray(stats)[:, 0, :].max(-1) > 1
    with np.errstate(invalid="ignore"):
        subj = [float(np.nanmean(r)) if ok else float("nan") for r, ok in zip(per_subject, seen)]
    return {"pearson": float(np.nanmean(pooled)) if np.isfinite(pooled).any() else float("nan"),
            "r_vertex": pooled, "subject_pearson": subj}


def retrieval_top1(pred, target, mask):
    """Fraction of samples whose time-averaged prediction is closest (cosine) to its own time-averaged target."""
    w = mask.astype(jnp.float32)[..., None]
    n = jnp.maximum(w.sum(1), 1.0)
    p = (pred.astype(jnp.float32) * w).sum(1) / n
    y = (target.astype(jnp.float32) * w).sum(1) / n
    p = p / jnp.maximum(jnp.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    y = y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    sim = p @ y.T
    return (jnp.argmax(sim, axis=1) == jnp.arange(sim.shape[0])).astype(jnp.float32).mean()
