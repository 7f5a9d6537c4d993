"""`FmriEncoder`: features of several modalities -> cortical responses, the function of TRIBE v2's model.

Data flow for a batch of windows (B windows, T feature steps at 2 Hz):

    per modality (B, T, L, D) -> layer aggregation -> projector -> [modality dropout]
    -> combine (concatenate features | sum | stack along time) -> [combiner] -> + time embedding
    -> transformer -> adaptive average pool to n_output_timesteps -> low-rank head -> subject read-out
    -> (B, n_output_timesteps, n_outputs)

Two stages: `FmriEncoder.trunk` (features -> hidden, everything up to the transformer's output) and
`FmriEncoder.readout` (hidden -> responses: pool, low-rank head, `SubjectLayers`); `__call__` is
readout(trunk(...)). Streaming, attribution and attention run the trunk once and read out as they need.

The pool, the low-rank head and the read-out are affine maps and the pool averages with weights summing to 1,
so pooling first gives the same function with half the read-out FLOPs for 200 -> 100 steps.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nforge_jax.model.config import EncoderConfig
from nforge_jax.model.layers import DTYPES, Dense, Mlp, TransformerEncoder
from nforge_jax.model.subject import SubjectLayers


def adaptive_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging matrix with PyTorch AdaptiveAvgPool1d's bins: [floor(i*n/m), ceil((i+1)*n/m))."""
    mat = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        mat[i, start:end] = 1.0 / (end - start)
    return mat


def check_features(config: EncoderConfig, features, *, leads=(("batch", "time"),), where: str = "features"):
    """The one feature validator of every entry point: ``features`` maps some of the model's modalities to
    arrays (*lead, n_layers, dim) with the model's (n_layers, dim), ``lead`` one of ``leads`` (names of the
    leading axes, time last) and the same for every modality. Returns that leading shape; raises ValueError
    naming ``where`` and the modality otherwise."""
    expected = {m: (n, d) for m, n, d in config.feature_dims}

    def forms(n, d):
        return " or ".join(f"({', '.join(lead + (str(n), str(d)))})" for lead in leads)

    if not isinstance(features, Mapping) or not features:
        raise ValueError(f"{where}: expected a dict {{modality: {forms('n_layers', 'dim')}}} with some of "
                         f"{list(expected)}, got {type(features).__name__}")
    unknown = [m for m in features if m not in expected]
    if unknown:
        raise ValueError(f"{where}: unknown modality {unknown[0]!r}; this model takes {list(expected)}")
    first = None
    for m in features:  # in the caller's order: the first modality given sets the shape the others must match
        shape = tuple(np.shape(features[m]))
        if len(shape) - 2 not in {len(lead) for lead in leads} or shape[-2:] != expected[m]:
            raise ValueError(f"{where}[{m!r}]: expected shape {forms(*expected[m])}, got {shape}")
        lead = shape[:-2]
        if first is None:
            first = (m, lead)
        elif lead != first[1]:
            differs = (f"{lead[-1]} time steps, other modalities have {first[1][-1]}" if lead[:-1] == first[1][:-1]
                       else f"leading shape {lead} differs from {first[0]!r}'s {first[1]}")
            raise ValueError(f"{where}[{m!r}]: {differs}")
    if first[1][-1] == 0:
        raise ValueError(f"{where}: zero time steps")
    return first[1]


class FmriEncoder(nnx.Module):
    def __init__(self, config: EncoderConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        self.projectors = nnx.Dict(
            {
                m: Mlp(c.input_dim(m), c.projector_out, c.projector, axes=("features", "embed"),
                       dropout_rate=c.dropout, dtype=c.dtype, rngs=rngs)
                for m in c.modalities
            }
        )
        self.combiner = (
            Mlp(c.combined_dim, c.hidden, c.combiner, axes=("embed", "embed"), dtype=c.dtype, rngs=rngs)
            if c.combiner is not None
            else None
        )
        self.time_pos_embed = (
            nnx.Param(jax.random.normal(rngs.params(), (1, c.max_seq_len, c.hidden), jnp.float32),
                      logical_axes=(None, "time", "embed"))
            if c.time_pos_embedding
            else None
        )
        self.encoder = TransformerEncoder(c.hidden, c.depth, c.heads, c.ff_mult, c.rotary_dim,
                                          rotary_base=c.rotary_base, dropout_rate=c.dropout, dtype=c.dtype,
                                          rngs=rngs)
        self.low_rank_head = (
            Dense(c.hidden, c.low_rank_head, bias=False, axes=("embed", "lowrank"), dtype=c.dtype, rngs=rngs)
            if c.low_rank_head is not None
            else None
        )
        self.predictor = SubjectLayers(c.bottleneck, c.n_outputs, c.n_subjects, subject_dropout=c.subject_dropout,
                                       bias=c.subject_bias, dtype=c.dtype, rngs=rngs)

    # ------------------------------------------------------------------------------------------------
    def check_features(self, features: Mapping[str, jax.Array]) -> tuple[int, int]:
        """Validates modality names and shapes; returns (B, T). Raises ValueError naming the modality."""
        return check_features(self.config, features)

    def embed(self, features, rng=None, masks=None):
        """Projected, combined, position-embedded inputs (B, T_seq, hidden).

        masks: optional {modality: (B, T)} multiplying that modality's projected block per step: 1 = as
        given, 0 = absent at that step (exact zeros, like a missing modality); values in between scale it
        (the "missing modality" path of integrated gradients, streaming with a modality dropping out).
        """
        c = self.config
        b, t = self.check_features(features)
        dt = DTYPES[c.dtype]
        blocks = []
        for i, m in enumerate(c.modalities):
            if m not in features:
                # An absent modality contributes exact zeros (no projector bias).
                blocks.append(jnp.zeros((b, t, c.projector_out), dt))
                continue
            x = jnp.asarray(features[m]).astype(jnp.float32)
            if c.layer_aggregation == "cat":
                x = x.reshape(b, t, -1)  # layer-major: index = layer * dim + d
            else:
                x = x.mean(axis=2)
            y = self.projectors[m](x, None if rng is None else jax.random.fold_in(rng, 2 * i))
            if masks is not None and m in masks:
                y = y * jnp.asarray(masks[m], y.dtype)[..., None]
            if rng is not None and c.modality_dropout > 0:
                drop = jax.random.uniform(jax.random.fold_in(rng, 2 * i + 1), (b,)) < c.modality_dropout
                y = jnp.where(drop[:, None, None], jnp.zeros_like(y), y)
            blocks.append(y.astype(dt))
        if c.combination == "concatenate":
            x = jnp.concatenate(blocks, axis=-1)
        elif c.combination == "stack":
            x = jnp.concatenate(blocks, axis=1)
        else:
            x = sum(blocks[1:], blocks[0])
        if self.combiner is not None:
            x = self.combiner(x)
        if self.time_pos_embed is not None:
            x = x + self.time_pos_embed[0, : x.shape[1]].astype(x.dtype)
        return x

    def trunk(self, features, masks=None, *, embed_rng=None, encoder_rng=None, return_attention=False):
        """Stage 1, features -> hidden (B, T_seq, hidden): projectors, combine, time embedding, transformer.

        masks: as `embed`. The two rngs turn on training-time randomness of the input path and of the
        transformer (None = eval). With return_attention, also the per-layer attention maps.
        """
        x = self.embed(features, embed_rng, masks)
        hidden, attention_maps = self.encoder(x, encoder_rng, return_attention)
        return (hidden, attention_maps) if return_attention else hidden

    def head(self, hidden, *, pool=True):
        """hidden (B, T_seq, hidden) -> the low-rank latent (B, T', bottleneck).

        pool: True = the model's adaptive pooling to n_output_timesteps; False = none; an array (T', T_seq) =
        these pooling weights (e.g. one row of the model's matrix, or its mean over rows for a time average).
        """
        if isinstance(pool, (bool, np.bool_)):
            pool = adaptive_pool_matrix(hidden.shape[1], self.config.n_output_timesteps) if pool else None
        if pool is not None:
            hidden = jnp.einsum("ot,bth->boh", jnp.asarray(pool, hidden.dtype), hidden)
        return self.low_rank_head(hidden) if self.low_rank_head is not None else hidden

    def readout(self, hidden, subject_ids=None, *, pool=True, rng=None):
        """Stage 2, hidden -> responses (B, T', n_outputs): pooling (see `head`), low-rank head, subject read-out.

        subject_ids: (B,) read-out rows, or None for the shared average subject. rng: subject dropout.
        """
        return self.predictor(self.head(hidden, pool=pool), subject_ids, rng)

    def __call__(self, features: Mapping[str, jax.Array], subject_ids=None, *, rng=None, pool=True,
                 return_attention=False):
        """features: {modality: (B, T, n_layers, dim)}; absent modalities are zeros. Equals readout(trunk(...)).

        subject_ids: (B,) training-subject indices, or None for the shared average subject.
        rng: a PRNG key turns on training-time randomness (modality, subject and sublayer dropout); None = eval.
        Returns (B, n_output_timesteps, n_outputs), or (B, T_seq, n_outputs) with pool=False; with
        return_attention, also the list of per-layer attention maps (B, heads, T_seq, T_seq).
        """
        keys = [None] * 3 if rng is None else list(jax.random.split(rng, 3))
        staged = self.trunk(features, embed_rng=keys[0], encoder_rng=keys[1], return_attention=return_attention)
        hidden, attention_maps = staged if return_attention else (staged, None)
        out = self.readout(hidden, subject_ids, pool=pool, rng=keys[2])
        return (out, attention_maps) if return_attention else out

    def latent(self, features, *, pool=True):
        """The low-rank latent (B, T', bottleneck): everything before the (linear) subject read-out."""
        return self.head(self.trunk(features), pool=pool)
