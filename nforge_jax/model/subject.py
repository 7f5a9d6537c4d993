"""Per-subject linear read-out from the low-rank latent to the cortical vertices."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from nforge_jax.model.layers import DTYPES


class SubjectLayers(nnx.Module):
    """out[b, t, v] = sum_c z[b, t, c] W[s_b, c, v] + bias[s_b, v].

    `weights` is (rows, in, out) — the layout of TRIBE v2's checkpoint. With a subject dropout rate the head
    has one extra, shared row (index `n_subjects`) that training substitutes for a sample's own row with that
    probability; it is the "average subject" used for unseen subjects and when no subject is given.
    """

    def __init__(self, d_in, d_out, n_subjects, *, subject_dropout=None, bias=True, dtype="float32", rngs):
        rows = n_subjects + 1 if subject_dropout else n_subjects
        scale = 1.0 / math.sqrt(d_in)
        self.weights = nnx.Param(
            jax.random.normal(rngs.params(), (rows, d_in, d_out), jnp.float32) * scale,
            logical_axes=("subjects", "lowrank", "vertices"),
        )
        self.bias = (
            nnx.Param(jax.random.normal(rngs.params(), (rows, d_out), jnp.float32) * scale,
                      logical_axes=("subjects", "vertices"))
            if bias
            else None
        )
        self.n_subjects = n_subjects
        self.subject_dropout = subject_dropout
        self.dtype = DTYPES[dtype]

    @property
    def average_row(self) -> int | None:
        return self.n_subjects if self.subject_dropout else None

    def rows(self, subject_ids=None):
        """(weights (B, in, out), bias (B, out)) of the read-out rows of ``subject_ids`` ((B,) ints); None = the
        shared average-subject row, as one row (1, ...). A head built without biases gives zero biases."""
        if subject_ids is None:
            if self.average_row is None:
                raise ValueError(
                    "subject: this model has no shared average-subject row (it was built without "
                    "subject_dropout); pass a training-subject index"
                )
            ids = jnp.full((1,), self.average_row, jnp.int32)
        else:
            ids = jnp.asarray(subject_ids, jnp.int32).reshape(-1)
        w = self.weights[...][ids]
        bias = self.bias[...][ids] if self.bias is not None else jnp.zeros((ids.shape[0], w.shape[-1]), w.dtype)
        return w, bias

    def __call__(self, z, subject_ids=None, rng=None):
        """z: (B, T, in). subject_ids: (B,) ints, or None for the shared average-subject row."""
        if subject_ids is None:
            w, b = self.rows(None)  # one shared row: a plain matmul, no per-sample gather
            out = z.astype(self.dtype) @ w[0].astype(self.dtype)
        else:
            subject_ids = jnp.asarray(subject_ids, jnp.int32)
            if rng is not None and self.subject_dropout:
                drop = jax.random.uniform(rng, subject_ids.shape) < self.subject_dropout
                subject_ids = jnp.where(drop, self.n_subjects, subject_ids)
            w, b = self.rows(subject_ids)
            out = jnp.einsum("btc,bcv->btv", z.astype(self.dtype), w.astype(self.dtype))
            b = b[:, None, :]
        return out + b.astype(self.dtype) if self.bias is not None else out
