"""Building blocks of the encoder: linear layers (flax's, PyTorch-initialised), ScaleNorm, rotary attention, feed-forward, MLP.

The transformer reproduces the x-transformers 1.27.20 `Encoder` used by TRIBE v2 (pre-norm ScaleNorm,
rotary embeddings on the first `rotary_dim` dims of every head, a learned per-channel scale on the skip path,
a final ScaleNorm). Every parameter carries `logical_axes` metadata; `sharding.py` maps those names to mesh
axes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# The one place that says how compute dtypes are spelt.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class Buffer(nnx.Variable):
    """A non-trainable array that belongs to the checkpoint (e.g. rotary inverse frequencies)."""


def torch_linear_init(key, shape, fan_in):
    # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


class Dense(nnx.Linear):
    """`nnx.Linear` (kernel stored (in, out), parameters `kernel` and `bias`) with PyTorch's default init and
    logical-axis metadata; `dtype` is the compute dtype (parameters stay float32)."""

    def __init__(self, d_in, d_out, *, bias=True, axes=(None, None), dtype="float32", rngs: nnx.Rngs):
        super().__init__(d_in, d_out, use_bias=bias, dtype=DTYPES[dtype], param_dtype=jnp.float32,
                         kernel_init=lambda key, shape, _: torch_linear_init(key, shape, d_in),
                         bias_init=lambda key, shape, _: torch_linear_init(key, shape, d_in),
                         kernel_metadata={"logical_axes": tuple(axes)},
                         bias_metadata={"logical_axes": tuple(axes[1:])}, rngs=rngs)


def layer_norm(dim, *, axis_name=None, dtype="float32") -> nnx.LayerNorm:
    """PyTorch nn.LayerNorm (eps 1e-5, affine, two-pass variance), statistics in float32, output in `dtype`."""
    # Its initialisers are constants, but nnx.LayerNorm draws two keys for them: a throwaway stream keeps the
    # random init of every later layer what it was.
    return nnx.LayerNorm(dim, epsilon=1e-5, use_fast_variance=False, dtype=DTYPES[dtype], param_dtype=jnp.float32,
                         scale_metadata={"logical_axes": (axis_name,)}, bias_metadata={"logical_axes": (axis_name,)},
                         rngs=nnx.Rngs(0))


def activation(name):
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name == "relu":
        return jax.nn.relu
    return lambda x: x


class Mlp(nnx.Module):
    """A single Linear when `spec.hidden_sizes` is empty, else Linear/[LayerNorm]/activation stacks."""

    def __init__(self, d_in, d_out, spec, *, axes=(None, "embed"), dropout_rate=0.0, dtype="float32", rngs):
        sizes = list(spec.hidden_sizes) + [d_out]
        layers, norms = [], []
        prev = d_in
        for i, size in enumerate(sizes):
            last = i == len(sizes) - 1
            ax = (axes[0] if i == 0 else "mlp", axes[1] if last else "mlp")
            layers.append(Dense(prev, size, bias=spec.bias, axes=ax, dtype=dtype, rngs=rngs))
            if not last and spec.norm == "layer":
                norms.append(layer_norm(size, axis_name="mlp", dtype=dtype))
            prev = size
        self.layers = nnx.List(layers)
        self.norms = nnx.List(norms)
        self.activation = spec.activation
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(self, x, rng=None):
        act = activation(self.activation)
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < n - 1:
                if len(self.norms):
                    x = self.norms[i](x)
                x = act(x)
            x = self.dropout(x, deterministic=rng is None, rngs=None if rng is None else jax.random.fold_in(rng, i))
        return x


class ScaleNorm(nnx.Module):
    """x / max(||x||, 1e-12) * sqrt(dim) * g, with g a learned scalar."""

    def __init__(self, dim):
        self.g = nnx.Param(jnp.ones((1,), jnp.float32), logical_axes=(None,))
        self.scale = math.sqrt(dim)

    def __call__(self, x):
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(x32 * x32, axis=-1, keepdims=True))
        y = x32 / jnp.maximum(norm, 1e-12) * self.scale * self.g[...]
        return y.astype(x.dtype)


def rotary_inv_freq(rotary_dim: int, base: float = 10000.0) -> np.ndarray:
    # Same float32 arithmetic order as the reference: 1 / base ** (arange(0, d, 2) / d).
    exps = np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim)
    return (np.float32(1.0) / (np.float32(base) ** exps)).astype(np.float32)


def apply_rotary(x, inv_freq):
    """Rotate-half rotary embedding on the first 2*len(inv_freq) dims of the last axis; x: (B, H, T, Dh)."""
    rot = 2 * inv_freq.shape[0]
    t = jnp.arange(x.shape[-2], dtype=jnp.float32)
    freqs = t[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([freqs, freqs], axis=-1)  # (T, rot)
    x32 = x.astype(jnp.float32)
    u, rest = x32[..., :rot], x32[..., rot:]
    u1, u2 = u[..., : rot // 2], u[..., rot // 2 :]
    rotated = jnp.concatenate([-u2, u1], axis=-1)
    u = u * jnp.cos(angles) + rotated * jnp.sin(angles)
    return jnp.concatenate([u, rest], axis=-1).astype(x.dtype)


class Attention(nnx.Module):
    """Bidirectional multi-head self-attention with rotary embeddings and no biases."""

    def __init__(self, dim, heads, *, dropout_rate=0.0, dtype="float32", rngs):
        self.heads = heads
        self.to_q = Dense(dim, dim, bias=False, axes=("embed", "heads"), dtype=dtype, rngs=rngs)
        self.to_k = Dense(dim, dim, bias=False, axes=("embed", "heads"), dtype=dtype, rngs=rngs)
        self.to_v = Dense(dim, dim, bias=False, axes=("embed", "heads"), dtype=dtype, rngs=rngs)
        self.to_out = Dense(dim, dim, bias=False, axes=("heads", "embed"), dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(self, x, inv_freq, rng=None):
        """Returns (output (B, T, dim), attention probabilities (B, heads, T, T) in float32)."""
        b, t, dim = x.shape
        dh = dim // self.heads

        def split(y):  # (B, T, H*Dh) -> (B, H, T, Dh), head-major features
            return y.reshape(b, t, self.heads, dh).transpose(0, 2, 1, 3)

        q = apply_rotary(split(self.to_q(x)), inv_freq)
        k = apply_rotary(split(self.to_k(x)), inv_freq)
        v = split(self.to_v(x))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (dh**-0.5)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1)
        dropped = self.dropout(probs, deterministic=rng is None, rngs=rng)
        o = jnp.einsum("bhqk,bhkd->bhqd", dropped.astype(v.dtype), v)
        o = o.transpose(0, 2, 1, 3).reshape(b, t, dim)
        return self.to_out(o), probs


class FeedForward(nnx.Module):
    """W2 . dropout(GELU(W1 x + b1)) + b2 with exact (erf) GELU."""

    def __init__(self, dim, mult, *, dropout_rate=0.0, dtype="float32", rngs):
        self.w1 = Dense(dim, dim * mult, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.w2 = Dense(dim * mult, dim, axes=("mlp", "embed"), dtype=dtype, rngs=rngs)
        self.dropout = nnx.Dropout(dropout_rate)

    def __call__(self, x, rng=None):
        h = jax.nn.gelu(self.w1(x), approximate=False)
        return self.w2(self.dropout(h, deterministic=rng is None, rngs=rng))


class Sublayer(nnx.Module):
    """Pre-norm residual sublayer: x <- block(ScaleNorm(x)) + residual_scale * x."""

    def __init__(self, dim, block):
        self.norm = ScaleNorm(dim)
        self.block = block
        self.residual_scale = nnx.Param(jnp.ones((dim,), jnp.float32), logical_axes=("embed",))


class TransformerEncoder(nnx.Module):
    """depth x (attention, feed-forward) pre-norm sublayers, then a final ScaleNorm."""

    def __init__(self, dim, depth, heads, ff_mult, rotary_dim, *, rotary_base=10000.0, dropout_rate=0.0,
                 dtype="float32", rngs):
        sublayers = []
        for _ in range(depth):
            sublayers.append(Sublayer(dim, Attention(dim, heads, dropout_rate=dropout_rate, dtype=dtype, rngs=rngs)))
            sublayers.append(Sublayer(dim, FeedForward(dim, ff_mult, dropout_rate=dropout_rate, dtype=dtype, rngs=rngs)))
        self.sublayers = nnx.List(sublayers)
        self.inv_freq = Buffer(jnp.asarray(rotary_inv_freq(rotary_dim, rotary_base)), logical_axes=(None,))
        self.final_norm = ScaleNorm(dim)

    def __call__(self, x, rng=None, return_attention=False):
        attention_maps = []
        inv_freq = self.inv_freq[...]
        for i, sub in enumerate(self.sublayers):
            sub_rng = None if rng is None else jax.random.fold_in(rng, i)
            h = sub.norm(x)
            if isinstance(sub.block, Attention):
                y, probs = sub.block(h, inv_freq, sub_rng)
                if return_attention:
                    attention_maps.append(probs)
            else:
                y = sub.block(h, sub_rng)
            x = y + x * sub.residual_scale[...].astype(x.dtype)
        return self.final_norm(x), attention_maps
