"""Tiny models and feature stimuli shared by the in-silico experiment tests."""

from pathlib import Path

import numpy as np
from flax import nnx

FEATURES = {"text": (1, 8), "audio": (1, 8), "video": (1, 8)}
ROWS = 20  # 2 Hz feature rows per stimulus: 10 s, 10 output rows


def tiny_model(n_outputs=20484, metadata=None, seed=0):
    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.model import EncoderConfig, FmriEncoder

    config = EncoderConfig(feature_dims=tuple((m, *d) for m, d in FEATURES.items()), n_outputs=n_outputs,
                           n_output_timesteps=10, hidden=48, depth=1, heads=1, low_rank_head=8, n_subjects=2)
    meta = {"subjects": ["sub-a", "sub-b"], **(metadata or {})}
    return NForgeModel(FmriEncoder(config, rngs=nnx.Rngs(seed)), device="cpu", metadata=meta)


def write_stimuli(folder: Path, model, counts=(("faces", 6), ("places", 6)), seed=0, rows=ROWS) -> dict:
    """{condition: [paths]}: random features, the first condition's video shifted so that the conditions differ."""
    from nforge_jax.insilico.design import write_feature_stimulus

    rng = np.random.default_rng(seed)
    out = {}
    for k, (condition, n) in enumerate(counts):
        out[condition] = []
        for i in range(n):
            feats = {m: rng.standard_normal((rows, *d)).astype(np.float32) for m, d in FEATURES.items()}
            if k == 0:
                feats["video"] += 2.0
            out[condition].append(write_feature_stimulus(folder / condition / f"{condition}-{i}.npz", feats, model))
    return out


def write_yaml(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path
