"""`nforge demo`: an offline end-to-end run that shows the whole path works on this machine."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np


def _write_json_atomic(path: Path, doc: dict):
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def run_demo(out: Path, seed: int = 0) -> dict:
    """Builds a small encoder for the full fsaverage5 surface, saves it, reloads it with
    `NForgeModel.from_pretrained` and predicts five minutes of stimulus."""
    from flax import nnx

    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.model import EncoderConfig, FmriEncoder
    from nforge_jax.model.checkpoint import save_encoder

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = EncoderConfig(feature_dims=(("text", 2, 64), ("audio", 2, 32), ("video", 2, 48)), hidden=96, depth=2,
                           heads=3, low_rank_head=32, n_subjects=2)
    print(f"[1/3] building an encoder: {config.depth} layers, hidden {config.hidden}, {config.n_outputs} vertices")
    ckpt = save_encoder(FmriEncoder(config, rngs=nnx.Rngs(seed)), out / "checkpoint", overwrite=True)
    print(f"[2/3] saved and reloading {ckpt}")
    model = NForgeModel.from_pretrained(ckpt)
    rng = np.random.default_rng(seed)
    n_steps = 600  # five minutes at 2 Hz
    features = {m: rng.standard_normal((n_steps, n, d)).astype(np.float32) for m, n, d in config.feature_dims}
    preds = model.predict_features(features)
    print(f"[3/3] predicted {preds.shape[0]} TRs x {preds.shape[1]} vertices")
    pred_path = out / "predictions.npy"
    np.save(pred_path.with_suffix(".tmp.npy"), preds)
    os.replace(pred_path.with_suffix(".tmp.npy"), pred_path)
    summary = {"n_vertices": int(preds.shape[1]), "n_trs": int(preds.shape[0]), "seconds": time.time() - t0,
               "paths": {"checkpoint": str(ckpt), "predictions": str(pred_path), "summary": str(out / "summary.json")}}
    _write_json_atomic(out / "summary.json", summary)
    return summary
