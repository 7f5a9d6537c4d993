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

    def __call__(self, z, subject_ids=None, rng=None):
        """z: (B, T, in). subject_ids: (B,) ints, or None for the shared average-subject row."""
        w = self.weights[...]
        if subject_ids is None:
            if self.average_row is None:
                raise ValueError(
                    "this model has no shared average-subject row (it was built without subject_dropout); "
                    "pass a training-subject index"
                )
            out = z.astype(self.dtype) @ w[self.average_row].astype(self.dtype)
            if self.bias is not None:
                out = out + self.bias[self.average_row].astype(self.dtype)
            return out
        subject_ids = jnp.asarray(subject_ids, jnp.int32)
        if rng is not None and self.subject_dropout:
            drop = jax.random.uniform(rng, subject_ids.shape) < self.subject_dropout
            subject_ids = jnp.where(drop, self.n_subjects, subject_ids)
        out = jnp.einsum("btc,bcv->btv", z.astype(self.dtype), w[subject_ids].astype(self.dtype))
        if self.bias is not None:
            out = out + self.bias[subject_ids][:, None, :].astype(self.dtype)
        return out
