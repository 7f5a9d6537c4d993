"""Shared test fixtures-as-functions: small reference models written as TRIBE v2 releases."""

import jax.numpy as jnp
import numpy as np
import torch

from reference.tribev2_reference import ReferenceFmriEncoder, brain_config, write_release

SMALL_DIMS = {"text": (2, 24), "audio": (2, 16), "video": (1, 20)}


def make_release(directory, *, feature_dims=SMALL_DIMS, n_outputs=40, n_output_timesteps=10, seed=0, data=None,
                 **brain_kw):
    """A random-init reference model saved in the release format; returns the torch model (eval mode)."""
    torch.manual_seed(seed)
    kw = dict(hidden=96, depth=2, heads=3, low_rank_head=32, n_subjects=3)
    kw.update(brain_kw)
    brain = brain_config(**kw)
    ref = ReferenceFmriEncoder(brain, feature_dims, n_outputs, n_output_timesteps).eval()
    write_release(directory, ref, brain, n_outputs, n_output_timesteps, data=data)
    return ref


def random_features(feature_dims, batch, steps, seed=0):
    """{modality: (B, T, L, D)} float32."""
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((batch, steps, l, d)).astype(np.float32) for m, (l, d) in feature_dims.items()}


def to_torch_layout(features):
    """(B, T, L, D) -> TRIBE's (B, L, D, T)."""
    return {m: torch.from_numpy(np.ascontiguousarray(v.transpose(0, 2, 3, 1))) for m, v in features.items()}


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def run_both(ref, model, feats, subjects=None, attention=False):
    """(reference output, ours) as (B, T, V) numpy (and the attention maps when asked) for the same inputs."""
    with torch.no_grad():
        sid = None if subjects is None else torch.as_tensor(subjects)
        r = ref(to_torch_layout(feats), sid, return_attention=attention)
    j = model({m: jnp.asarray(v) for m, v in feats.items()}, None if subjects is None else jnp.asarray(subjects),
              return_attention=attention)
    if attention:
        return (r[0].numpy().transpose(0, 2, 1), [a.numpy() for a in r[1]]), (np.asarray(j[0]), [np.asarray(a) for a in j[1]])
    return r.numpy().transpose(0, 2, 1), np.asarray(j)
