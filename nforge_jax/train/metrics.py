"""Evaluation metrics accumulated over an epoch (per-vertex Pearson r, also per subject; top-1 retrieval), and
the FLOP / MFU accounting of a training step (what the trainer logs and tools/bench.py reports).

The Pearson statistics are running sums per (subject, vertex): n, Σp, Σy, Σp², Σy², Σpy. They are
updated inside a jitted function, so with the vertex axis sharded the sums stay sharded; the final r is
computed in float64 on the host.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from nforge_jax.model.config import EncoderConfig

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


# Dense bfloat16 tensor-core peak per device (vendor data sheets, SXM parts); MFU is quoted against these.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops_per_device() -> float | None:
    """The accelerator's peak FLOP/s for MFU: NFORGE_PEAK_FLOPS if set, else the table; None if unknown (CPUs)."""
    if os.environ.get("NFORGE_PEAK_FLOPS"):
        return float(os.environ["NFORGE_PEAK_FLOPS"])
    kind = jax.devices()[0].device_kind
    return next((flops for name, flops in PEAK_FLOPS.items() if name in kind), None)


def train_flops_per_window(config: EncoderConfig, steps: int | None = None) -> float:
    """Approximate FLOPs of one training window (forward + backward = 3 x forward matmul FLOPs)."""
    t = steps or config.window_steps
    h, f = config.hidden, config.hidden * config.ff_mult
    per_token = 2 * sum(config.input_dim(m) * config.projector_out for m in config.modalities)
    per_token += config.depth * 2 * (4 * h * h + 2 * h * f)
    attention = config.depth * 2 * 2 * t * t * h
    t_out = config.n_output_timesteps
    head = t_out * 2 * (h * config.bottleneck * (config.low_rank_head is not None) + config.bottleneck * config.n_outputs)
    return 3.0 * (per_token * t + attention + head)


def mfu(flops_per_step: float, step_seconds: float, n_devices: int = 1) -> float | None:
    """Model FLOP utilisation: achieved FLOP/s over the devices' peak; None where the peak is unknown."""
    peak = peak_flops_per_device()
    return flops_per_step / step_seconds / (peak * n_devices) if peak else None

