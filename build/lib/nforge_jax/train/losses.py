"""Training losses over (B, T, V) predictions and targets; time steps with mask False are excluded.

TRIBE v2 drops target rows that are all zeros (missing fMRI, the padded tail of a window) and averages the
squared error over every remaining element; `mse` does the same.
"""

from __future__ import annotations

import jax.numpy as jnp


def _weights(mask, pred):
    return mask.astype(pred.dtype)[..., None]  # (B, T, 1)


def mse(pred, target, mask, vertex_weights=None):
    w = _weights(mask, pred)
    err = (pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2 * w
    n = jnp.maximum(w.sum() * pred.shape[-1], 1.0)
    return err.sum() / n


def weighted_mse(pred, target, mask, vertex_weights):
    """Squared error weighted per vertex (e.g. by reliability); weights are normalised to mean 1."""
    vw = vertex_weights / jnp.maximum(vertex_weights.mean(), 1e-12)
    w = _weights(mask, pred)
    err = (pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2 * w * vw
    n = jnp.maximum(w.sum() * pred.shape[-1], 1.0)
    return err.sum() / n


def pearson(pred, target, mask, vertex_weights=None):
    """1 - mean over vertices of the Pearson r computed over all kept (batch, time) rows."""
    w = _weights(mask, pred)
    n = jnp.maximum(w.sum(), 2.0)
    p, t = pred.astype(jnp.float32), target.astype(jnp.float32)
    pm = (p * w).sum((0, 1)) / n
    tm = (t * w).sum((0, 1)) / n
    pc, tc = (p - pm) * w, (t - tm) * w
    cov = (pc * tc).sum((0, 1))
    r = cov / jnp.sqrt(jnp.maximum((pc**2).sum((0, 1)) * (tc**2).sum((0, 1)), 1e-12))
    return 1.0 - r.mean()


LOSSES = {"mse": mse, "pearson": pearson, "weighted_mse": weighted_mse}
