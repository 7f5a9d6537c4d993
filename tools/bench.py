"""Benchmarks, each measured next to its baseline in the same run and reported as a ratio.

    python tools/bench.py forward --size released --batch 1      # JAX forward vs the PyTorch reference
    python tools/bench.py forward --size small --json out.json

Prints a table and (with --json) writes machine-readable results including the hardware and versions.
Needs the dev extra (torch + x-transformers) for the PyTorch baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the PyTorch reference lives with the tests

SIZES = {
    "released": dict(dims={"text": (2, 3072), "audio": (2, 1024), "video": (2, 1408)}, n_outputs=20484,
                     n_output_timesteps=100, hidden=1152, depth=8, heads=8, low_rank_head=2048, n_subjects=0),
    "small": dict(dims={"text": (2, 64), "audio": (2, 32), "video": (2, 48)}, n_outputs=20484,
                  n_output_timesteps=100, hidden=96, depth=2, heads=3, low_rank_head=32, n_subjects=0),
}


def hardware() -> dict:
    import jax
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "jax_devices": [str(d) for d in jax.devices()], "jax": jax.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def timed(fn, repeats: int) -> dict:
    """Median / min wall time of `fn()` after one warm-up call (which also compiles)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": statistics.median(times), "min_s": min(times)}


def bench_forward(size: str, batch: int, repeats: int) -> dict:
    """One window (200 steps) per sample, average subject, float32: jitted JAX vs PyTorch eager."""
    import tempfile

    import jax
    import torch

    from helpers import make_release, random_features, rel_err, to_torch_layout
    from nforge_jax.convert.tribev2 import convert_tribev2
    from nforge_jax.model.checkpoint import load_encoder
    from flax import nnx

    spec = dict(SIZES[size])
    dims = spec.pop("dims")
    with tempfile.TemporaryDirectory() as tmp:
        ref = make_release(Path(tmp) / "rel", feature_dims=dims, **spec)
        convert_tribev2(Path(tmp) / "rel", Path(tmp) / "ckpt")
        model, _ = load_encoder(Path(tmp) / "ckpt")
    feats = random_features(dims, batch, 2 * spec["n_output_timesteps"], seed=0)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = {m: jax.device_put(v) for m, v in feats.items()}
    out = {}
    out["jax"] = timed(lambda: forward(state, x).block_until_ready(), repeats)
    tx = to_torch_layout(feats)
    with torch.inference_mode():
        out["torch_eager"] = timed(lambda: ref(tx), repeats)
        r = ref(tx).numpy().transpose(0, 2, 1)
    out["rel_err"] = rel_err(np.asarray(forward(state, x)), r)
    out["speedup_vs_torch_eager"] = out["torch_eager"]["median_s"] / out["jax"]["median_s"]
    out["config"] = {"size": size, "batch": batch, "steps": 2 * spec["n_output_timesteps"], "dtype": "float32",
                     "torch_threads": torch.get_num_threads()}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["forward"])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    result = {"hardware": hardware(), "forward": bench_forward(args.size, args.batch, args.repeats)}
    f = result["forward"]
    print(f"{'benchmark':<28}{'ours (s)':>12}{'baseline (s)':>14}{'ratio':>8}")
    print(f"{'forward ' + args.size + ' B=' + str(args.batch):<28}{f['jax']['median_s']:>12.4f}"
          f"{f['torch_eager']['median_s']:>14.4f}{f['speedup_vs_torch_eager']:>7.2f}x   "
          f"(first call incl. compile {f['jax']['first_s']:.2f} s; rel err {f['rel_err']:.1e})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
