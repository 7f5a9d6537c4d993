"""Benchmarks, each measured next to its baseline in the same run and reported as a ratio.

    python tools/bench.py forward --size released --batch 1      # JAX forward vs the PyTorch reference
    python tools/bench.py train --size released --batch 2        # train step (Adam, MSE) vs PyTorch eager
    python tools/bench.py loader                                 # grain loader windows/s at full feature dims
    python tools/bench.py inference --size released              # predict_store vs the reference window by window
    python tools/bench.py ridge --size released                  # adaptation ridge vs himalaya RidgeCV
    python tools/bench.py extract --threads 1                    # extractors vs neuralset 0.0.2 (TRIBE v2's)
    python tools/bench.py extract --e2e --e2e-seconds 600        # + a 10-minute film -> predictions, both sides
    python tools/bench.py extract --dtype bfloat16               # + our bf16 features / predictions vs fp32
    python tools/bench.py extract --device cuda --text-model meta-llama/Llama-3.2-3B \
        --audio-model facebook/w2v-bert-2.0 --video-model facebook/vjepa2-vitg-fpc64-256   # released size, GPU
    python tools/bench.py all --json bench.json                  # everything above
    python tools/bench.py all --size released --dtype bfloat16   # on a GPU: bf16 compute, MFU vs the device peak

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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "extract"))  # and neuralset's tiny models
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_extract beside this file

SIZES = {
    "released": dict(dims={"text": (2, 3072), "audio": (2, 1024), "video": (2, 1408)}, n_outputs=20484,
                     n_output_timesteps=100, hidden=1152, depth=8, heads=8, low_rank_head=2048, n_subjects=0),
    "small": dict(dims={"text": (2, 64), "audio": (2, 32), "video": (2, 48)}, n_outputs=20484,
                  n_output_timesteps=100, hidden=96, depth=2, heads=3, low_rank_head=32, n_subjects=0),
}


def hardware() -> dict:
    import jax
    import torch

    cpu = platform.processor() or platform.machine()
    try:  # Linux: the marketing name, e.g. "AMD EPYC 9654"
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "jax_devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "jax": jax.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def torch_device() -> str:
    """The PyTorch baseline runs on the same kind of hardware as JAX: CUDA when torch sees a GPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def torch_autocast(dtype: str):
    """bfloat16 autocast for the baseline when we compute in bfloat16 (float32 master weights on both sides)."""
    import contextlib

    import torch

    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch_device(), dtype=torch.bfloat16)


def with_dtype(model, dtype: str):
    """The same weights with compute in `dtype` (parameters stay float32)."""
    import dataclasses

    from nforge_jax.model.checkpoint import encoder_arrays, encoder_from_arrays

    if model.config.dtype == dtype:
        return model
    return encoder_from_arrays(dataclasses.replace(model.config, dtype=dtype), encoder_arrays(model))


def xla_memory(jitted, *args) -> dict:
    """What XLA's buffer assignment reserves for one call (arguments + outputs + temporaries - donated aliases),
    and the device's peak so far where the backend reports it (GPU); bytes."""
    import jax

    out = {}
    try:
        m = jitted.lower(*args).compile().memory_analysis()
        out = {"xla_temp_bytes": int(m.temp_size_in_bytes),
               "xla_total_bytes": int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                                      - m.alias_size_in_bytes)}
    except Exception as e:  # a backend without memory analysis
        out["xla_error"] = f"{type(e).__name__}: {str(e)[:120]}"
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
    return out


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


def bench_forward(size: str, batch: int, repeats: int, dtype: str = "float32") -> dict:
    """One window (200 steps) per sample, average subject: jitted JAX vs PyTorch eager (same device, same dtype)."""
    import tempfile

    import jax
    import torch

    from helpers import random_features, rel_err, to_torch_layout
    from flax import nnx

    with tempfile.TemporaryDirectory() as tmp:
        ref, model, dims, spec = _released_pair(size, 0, tmp)
    model = with_dtype(model, dtype)
    feats = random_features(dims, batch, 2 * spec["n_output_timesteps"], seed=0)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = {m: jax.device_put(v) for m, v in feats.items()}
    out = {}
    out["jax"] = timed(lambda: forward(state, x).block_until_ready(), repeats)
    out["jax_memory"] = xla_memory(forward, state, x)  # after timing: first_s is the real compile
    dev = torch_device()
    ref = ref.to(dev)
    tx = {m: v.to(dev) for m, v in to_torch_layout(feats).items()}

    def torch_forward():
        with torch.inference_mode(), torch_autocast(dtype):
            y = ref(tx)
        torch_sync()
        return y

    out["torch_eager"] = timed(torch_forward, repeats)
    r = torch_forward().float().cpu().numpy().transpose(0, 2, 1)
    out["rel_err"] = rel_err(np.asarray(forward(state, x), np.float32), r)
    out["speedup_vs_torch_eager"] = out["torch_eager"]["median_s"] / out["jax"]["median_s"]
    out["config"] = {"size": size, "batch": batch, "steps": 2 * spec["n_output_timesteps"], "dtype": dtype,
                     "torch_device": dev, "torch_threads": torch.get_num_threads()}
    return out


def _released_pair(size, n_subjects, tmp):
    from helpers import make_release
    from nforge_jax.convert.tribev2 import convert_tribev2
    from nforge_jax.model.checkpoint import load_encoder

    spec = dict(SIZES[size])
    dims = spec.pop("dims")
    spec["n_subjects"] = n_subjects
    ref = make_release(Path(tmp) / "rel", feature_dims=dims, **spec)
    convert_tribev2(Path(tmp) / "rel", Path(tmp) / "ckpt")
    model, _ = load_encoder(Path(tmp) / "ckpt")
    return ref, model, dims, spec


def _torch_train_times(ref, feats, fmri, subjects, repeats, compile_torch, dtype) -> dict:
    """The PyTorch reference's step: same model, Adam, MSE over kept rows; eager (and torch.compile if asked)."""
    import torch

    from helpers import to_torch_layout

    dev = torch_device()
    ref = ref.to(dev).train()
    tx_t = torch.optim.Adam(ref.parameters(), lr=1e-4)
    tfeats = {m: v.to(dev) for m, v in to_torch_layout(feats).items()}
    tfmri = torch.from_numpy(fmri.transpose(0, 2, 1).copy()).to(dev)
    tsubj = torch.from_numpy(subjects.astype(np.int64)).to(dev)

    def torch_step(forward=ref):
        tx_t.zero_grad(set_to_none=True)
        with torch_autocast(dtype):
            loss = torch.nn.functional.mse_loss(forward(tfeats, tsubj).float(), tfmri)
        loss.backward()
        tx_t.step()
        torch_sync()

    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {"torch_eager": timed(torch_step, repeats), "torch_device": dev}
    if dev == "cuda":
        out["torch_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    if compile_torch:
        try:
            compiled = torch.compile(ref)
            out["torch_compile"] = timed(lambda: torch_step(compiled), repeats)
        except Exception as e:  # no compiler toolchain, unsupported op...
            out["torch_compile"] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
    return out


def bench_train(size: str, batch: int, repeats: int, compile_torch: bool = False, dtype: str = "float32") -> dict:
    """One optimizer step (Adam, MSE, per-subject heads, modality/subject dropout off): jitted+donated JAX vs
    PyTorch eager (and torch.compile when asked), same weights, batch, device and compute dtype (float32 master
    weights on both sides; bfloat16 = our compute dtype vs torch autocast)."""
    import tempfile

    import jax
    import optax
    import torch

    from flax import nnx
    from helpers import random_features

    from nforge_jax.model.sharding import batch_sharding, make_mesh, tree_shardings
    from nforge_jax.train.metrics import mfu, peak_flops_per_device, train_flops_per_window
    from nforge_jax.train.step import make_train_step, skip_non_finite

    n_subjects = 4
    with tempfile.TemporaryDirectory() as tmp:
        ref, model, dims, spec = _released_pair(size, n_subjects, tmp)
    model = with_dtype(model, dtype)
    config = model.config
    steps = 2 * spec["n_output_timesteps"]
    feats = random_features(dims, batch, steps, seed=0)
    rng = np.random.default_rng(1)
    fmri = rng.standard_normal((batch, spec["n_output_timesteps"], spec["n_outputs"])).astype(np.float32)
    subjects = (np.arange(batch) % n_subjects).astype(np.int32)
    mask = np.ones((batch, spec["n_output_timesteps"]), bool)

    # JAX: the production step (jit, donation, shardings on a 1-device mesh).
    mesh = make_mesh(data=1, model=1, devices=jax.devices()[:1])
    tx = skip_non_finite(optax.adam(1e-4))  # as in training: non-finite gradients are dropped
    graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
    state = {"params": params, "opt": tx.init(params), "step": jax.numpy.zeros((), jax.numpy.int32)}
    state_sh = tree_shardings(state, mesh)
    state = jax.device_put(state, state_sh)
    batch_np = {**feats, "fmri": fmri, "mask": mask, "subject_id": subjects}
    batch_sh = {k: batch_sharding(mesh, np.ndim(v)) for k, v in batch_np.items()}
    step = make_train_step(graphdef, config, tx, "mse", state_sh, tree_shardings(buffers, mesh), batch_sh, mesh)
    xb = {k: jax.device_put(v, batch_sh[k]) for k, v in batch_np.items()}
    key = jax.random.key(0)
    holder = {"state": state}

    def jax_step():
        holder["state"], m = step(holder["state"], buffers, xb, key)
        m["loss"].block_until_ready()

    out = {"jax": timed(jax_step, repeats)}
    out["jax_memory"] = xla_memory(step, holder["state"], buffers, xb, key)  # after timing: first_s is the real compile

    out.update(_torch_train_times(ref, feats, fmri, subjects, repeats, compile_torch, dtype))
    out["speedup_vs_torch_eager"] = out["torch_eager"]["median_s"] / out["jax"]["median_s"]
    if "median_s" in out.get("torch_compile", {}):
        out["speedup_vs_torch_compile"] = out["torch_compile"]["median_s"] / out["jax"]["median_s"]
    flops = train_flops_per_window(config) * batch
    out["windows_per_s"] = batch / out["jax"]["median_s"]
    out["tflops_per_s"] = flops / out["jax"]["median_s"] / 1e12
    peak = peak_flops_per_device()
    out["mfu"] = mfu(flops, out["jax"]["median_s"])  # None: no known peak (CPU)
    out["config"] = {"size": size, "batch": batch, "steps": steps, "n_subjects": n_subjects, "dtype": dtype,
                     "flops_per_step": flops, "peak_flops_per_device": peak, "torch_device": out.pop("torch_device"),
                     "torch_threads": torch.get_num_threads()}
    return out


def bench_loader(batch: int, n_batches: int) -> dict:
    """grain pipeline at full feature dims (text 6x3072, audio 2x1024, video 2x1408), batch of 100 s windows."""
    import tempfile

    from nforge_jax.data import splits, windows
    from nforge_jax.data.store import FeatureStore

    dims = {"text": (6, 3072), "audio": (2, 1024), "video": (2, 1408)}
    rng = np.random.default_rng(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore.create(Path(tmp) / "store")
        for i in range(4):  # 4 timelines x 600 s
            feats = {m: rng.standard_normal((1200, l, d)).astype(np.float16) for m, (l, d) in dims.items()}
            store.write_timeline(f"Bench:run={i}", features=feats,
                                 fmri=rng.standard_normal((600, 20484)).astype(np.float32),
                                 meta={"study": "Bench", "subject": "s1", "tr_s": 1.0, "feature_hz": 2.0,
                                       "fmri_hz": 1.0, "offset_s": 5.0})
        idx = splits.make_subjects_index(store)
        for dtype in ("float32", "float16"):
            ds = windows.make_dataset(store, subjects_index=idx, batch_size=batch, seed=0, feature_dtype=dtype)
            it = iter(ds)
            first = next(it)
            nbytes = sum(v.nbytes for v in first.values() if isinstance(v, np.ndarray))
            t0 = time.perf_counter()
            for _ in range(n_batches):
                next(it)
            dt = time.perf_counter() - t0
            out[dtype] = {"windows_per_s": n_batches * batch / dt, "MB_per_s": n_batches * nbytes / dt / 1e6,
                          "batch_MB": nbytes / 1e6}
    out["config"] = {"batch": batch, "n_batches": n_batches, "dims": dims}
    return out


def bench_inference(size: str, batch: int, n_timelines: int = 8, windows_per_timeline: int = 4,
                    dtype: str = "float32") -> dict:
    """Hours of stimulus per minute: `predict_store` (batched, prefetching, written to disk) vs the PyTorch
    reference run one window at a time (what looping over TRIBE's windows does)."""
    import tempfile

    import torch

    from helpers import to_torch_layout
    from nforge_jax.data.store import FeatureStore
    from nforge_jax.inference.batch import predict_store
    from nforge_jax.inference.model import NForgeModel

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        ref, encoder, dims, spec = _released_pair(size, 0, tmp)
        model = NForgeModel(with_dtype(encoder, dtype), batch_size=batch)
        steps = 2 * spec["n_output_timesteps"] * windows_per_timeline
        store = FeatureStore.create(Path(tmp) / "store")
        feats = {}
        for i in range(n_timelines):
            feats[i] = {m: rng.standard_normal((steps, l, d)).astype(np.float16) for m, (l, d) in dims.items()}
            store.write_timeline(f"Bench:run={i}", features=feats[i],
                                 meta={"study": "Bench", "subject": "s", "tr_s": 1.0, "feature_hz": 2.0,
                                       "fmri_hz": 1.0, "offset_s": 5.0})
        predict_store(model, store, Path(tmp) / "warm", progress=False, timelines=["Bench:run=0"])  # compile
        t0 = time.perf_counter()
        predict_store(model, store, Path(tmp) / "out", progress=False)
        ours = time.perf_counter() - t0
    window = 2 * spec["n_output_timesteps"]
    dev = torch_device()
    ref = ref.to(dev)
    t0 = time.perf_counter()
    with torch.inference_mode(), torch_autocast(dtype):
        for i in range(n_timelines):
            for w in range(windows_per_timeline):
                x = {m: v[None, w * window : (w + 1) * window].astype(np.float32) for m, v in feats[i].items()}
                ref({m: t.to(dev) for m, t in to_torch_layout(x).items()}).float().cpu()
    base = time.perf_counter() - t0
    hours = n_timelines * windows_per_timeline * spec["n_output_timesteps"] / 3600.0
    return {"ours_s": ours, "torch_loop_s": base, "ours_hours_per_min": hours / ours * 60,
            "torch_hours_per_min": hours / base * 60, "speedup": base / ours,
            "config": {"size": size, "batch": batch, "timelines": n_timelines, "windows": windows_per_timeline,
                       "dtype": dtype, "torch_device": dev}}


def bench_streaming(size: str, n_frames: int = 60) -> dict:
    """Latency of `push_frame` (one TR) vs one full-window forward of the same model."""
    import tempfile

    import jax
    from flax import nnx

    from nforge_jax.inference.model import NForgeModel
    from nforge_jax.inference.streaming import StreamingPredictor

    with tempfile.TemporaryDirectory() as tmp:
        _, encoder, dims, spec = _released_pair(size, 0, tmp)
    model = NForgeModel(encoder)
    window_trs = spec["n_output_timesteps"]
    stream = StreamingPredictor.from_nforge_model(model, window_trs=window_trs)
    rng = np.random.default_rng(0)
    latencies = []
    for k in range(window_trs + n_frames):
        frame = {m: rng.standard_normal((2, l, d)).astype(np.float32) for m, (l, d) in dims.items()}
        t0 = time.perf_counter()
        out = stream.push_frame(frame)
        if out is not None:
            np.asarray(out)
            latencies.append(time.perf_counter() - t0)
    graphdef, state = nnx.split(encoder)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = {m: rng.standard_normal((1, 2 * window_trs, l, d)).astype(np.float32) for m, (l, d) in dims.items()}
    full = timed(lambda: forward(state, x).block_until_ready(), 5)
    lat = np.asarray(latencies[1:])  # the first emission includes compilation
    return {"p50_s": float(np.percentile(lat, 50)), "p99_s": float(np.percentile(lat, 99)),
            "full_window_forward_s": full["median_s"], "p50_over_forward": float(np.percentile(lat, 50)) / full["median_s"],
            "config": {"size": size, "window_trs": window_trs, "frames": len(lat)}}


def bench_attribution(size: str, n_naive_vertices: int = 8, n_steps: int = 5) -> dict:
    """Integrated gradients for every vertex (one jitted call) vs one backward pass per vertex per path
    point, timed on a few vertices and extrapolated to all of them."""
    import tempfile

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from nforge_jax.inference.attribution import ModalityAttributor
    from nforge_jax.inference.model import NForgeModel

    with tempfile.TemporaryDirectory() as tmp:
        _, encoder, dims, spec = _released_pair(size, 0, tmp)
    model = NForgeModel(encoder)
    rng = np.random.default_rng(0)
    feats = {m: rng.standard_normal((2 * spec["n_output_timesteps"], l, d)).astype(np.float32) for m, (l, d) in dims.items()}
    att = ModalityAttributor(model, method="gradient", n_steps=n_steps)
    ours = timed(lambda: att.attribute(feats), 3)
    graphdef, state = nnx.split(encoder)
    modalities = list(dims)

    def vertex_output(scales, state, x, v):  # weights and inputs as arguments, not baked-in constants
        m = nnx.merge(graphdef, state)
        return m({k: x[k][None] * scales[i] for i, k in enumerate(modalities)})[0, :, v].mean()

    grad = jax.jit(jax.grad(vertex_output))
    scales = jnp.ones(len(modalities)) * 0.5
    x = {k: jnp.asarray(v) for k, v in feats.items()}
    grad(scales, state, x, 0).block_until_ready()
    t0 = time.perf_counter()
    for v in range(n_naive_vertices):
        grad(scales, state, x, v).block_until_ready()
    per_backward = (time.perf_counter() - t0) / n_naive_vertices
    naive_all = per_backward * n_steps * spec["n_outputs"]
    return {"ours_s": ours["median_s"], "naive_per_backward_s": per_backward, "naive_all_vertices_s": naive_all,
            "speedup": naive_all / ours["median_s"],
            "config": {"size": size, "n_steps": n_steps, "n_vertices": spec["n_outputs"]}}


def bench_ridge(size: str, n_samples: int = 2000, n_alphas: int = 15, folds: int = 5, n_vertices: int | None = None) -> dict:
    """Subject adaptation's ridge (per-vertex alpha by k-fold CV on the frozen latent) vs himalaya's RidgeCV
    (numpy backend) on the same data and folds."""
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV

    from nforge_jax.inference.adapt import LatentRidge

    spec = SIZES[size]
    k, v = spec["low_rank_head"], n_vertices or spec["n_outputs"]
    rng = np.random.default_rng(0)
    z = (rng.standard_normal((n_samples, k)) * np.linspace(0.3, 2.0, k)).astype(np.float32)
    w = rng.standard_normal((k, v)).astype(np.float32) * rng.uniform(0.0, 0.3, v).astype(np.float32)
    y = z @ w + rng.standard_normal((n_samples, v)).astype(np.float32)
    alphas = np.logspace(-3, 5, n_alphas)
    fits = {}  # the timed fits are the ones compared: no extra fit per side
    ours = timed(lambda: fits.__setitem__("ours", LatentRidge(alphas, cv=folds).fit(z, y)), 1)
    set_backend("numpy")
    theirs = timed(lambda: fits.__setitem__("ref", RidgeCV(alphas=alphas, cv=folds, fit_intercept=True).fit(z, y)), 1)
    fit, ref = fits["ours"], fits["ref"]
    return {"ours_s": ours["median_s"], "himalaya_s": theirs["median_s"], "speedup": theirs["median_s"] / ours["median_s"],
            "max_cv_score_diff": float(np.abs(fit.cv_scores_ - np.asarray(ref.cv_scores_)).max()),
            "same_alpha_fraction": float(np.mean(np.isclose(fit.best_alphas_, np.asarray(ref.best_alphas_)))),
            "config": {"samples": n_samples, "latent": k, "vertices": v, "alphas": n_alphas, "folds": folds}}


# Extraction (ours vs TRIBE v2's extractors, neuralset 0.0.2) ------------------------------------------------
def text_timeline(n_words: int = 3000, seed: int = 0, context_words: int = 1024):
    """One timeline of ``n_words`` words, one per 0.5 s bin (so grid rows are word vectors), in sentences with
    punctuation, numbers and contractions, contexts as TRIBE builds them (up to 1,024 preceding words)."""
    from extract_helpers import WORDS

    from nforge_jax.data.events import make_events
    from nforge_jax.inference.stimulus import add_context

    rng = np.random.default_rng(seed)
    vocabulary = list(WORDS) + ["42", "3.5", "didn't", "it's", "1,000"]
    rows = []
    while len(rows) < n_words:
        words = [vocabulary[k] for k in rng.integers(0, len(vocabulary), int(rng.integers(4, 14)))]
        words = words[: n_words - len(rows)]
        sentence = " ".join(w + ("," if rng.random() < 0.1 else "") for w in words) + str(rng.choice([".", "!", "?"]))
        for w in words:
            rows.append({"type": "Word", "start": 0.5 * len(rows), "duration": 0.4, "text": w,
                         "sentence": sentence, "timeline": "bench"})
    return add_context(make_events(rows), max_context_len=context_words)


def _tiny_release_llama(directory):
    """The release-shaped tiny Llama of the parity tests (28 layers -> 29 states, width 16, pad = eos)."""
    import importlib.util

    import torch
    from transformers import LlamaConfig, LlamaModel

    spec = importlib.util.spec_from_file_location(
        "extract_conftest", Path(__file__).resolve().parents[1] / "tests" / "extract" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(1)
    fast = module._bpe_tokenizer(directory, pad=False)
    LlamaModel(LlamaConfig(vocab_size=len(fast), hidden_size=16, intermediate_size=32, num_hidden_layers=28,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                           bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)).save_pretrained(directory)
    return directory


def _layer_deviation(ours: np.ndarray, ref: np.ndarray) -> dict:
    """Per layer group: max |ours - ref| / max |ref| and the Pearson r over all values."""
    out = {}
    for g in range(ref.shape[1]):
        a, b = ours[:, g].ravel().astype(np.float64), ref[:, g].ravel().astype(np.float64)
        out[f"group{g}"] = {"max_rel": float(np.abs(a - b).max() / np.abs(b).max()),
                            "pearson_r": float(np.corrcoef(a, b)[0, 1])}
    return out


def bench_extract_text(n_words: int = 3000, neuralset: bool = True, model_dir=None, device: str = "cpu",
                       context_words: int = 1024) -> dict:
    """Text features of one ``n_words`` timeline, release recipe (layers [0.5, 0.75, 1.0] grouped, 20 states
    kept, batch 4): ours by the release rule (default) and by the shared pass vs neuralset 0.0.2's
    HuggingFaceText on the same tiny model and events, one after the other; times include model loading.
    Reports times, ratios, tokens through the model per word and how far the shared pass is from the rule."""
    import dataclasses
    import tempfile

    from nforge_jax.extract.text import TextConfig, TextExtractor

    events = text_timeline(n_words, context_words=context_words)
    n_steps = 2 * int(np.ceil(float((events["start"] + events["duration"]).max())))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(model_dir) if model_dir else _tiny_release_llama(Path(tmp) / "llama")
        release = TextConfig(model_id=str(model), layers=(0.5, 0.75, 1.0), aggregation="group_mean",
                             cache_n_layers=20, batch_size=4, context_words=context_words)
        out, grids = {"config": {"words": n_words, "model": "tiny Llama, 28 layers, width 16" if not model_dir
                                 else str(model_dir), "torch_threads": _torch_threads(), "device": device}}, {}
        for name, cfg in (("release_rule", release), ("shared", dataclasses.replace(release, context_pass="shared"))):
            ex = TextExtractor(cfg, device=device)
            t0 = time.perf_counter()
            grids[name] = ex.extract(events, n_steps)[:n_words]
            out[name] = {"s": time.perf_counter() - t0, "tokens_per_word": ex.n_model_tokens / n_words}
            if name == "release_rule":  # the leading words, whose context is all the text before them: one pass
                out[name]["words_from_one_pass"] = ex.n_leading_words
        out["shared"]["own_forwards"] = ex.n_own_forwards
        if neuralset:
            from reference_extractors import segments_features, text_extractor

            t0 = time.perf_counter()
            ref = segments_features(text_extractor(model, Path(tmp) / "ns-cache", device=device), events)[:n_words]
            out["neuralset"] = {"s": time.perf_counter() - t0, "rel_err_release_rule": float(
                np.abs(grids["release_rule"] - ref).max() / np.abs(ref).max())}
            for name in ("release_rule", "shared"):
                out[name]["speedup_vs_neuralset"] = out["neuralset"]["s"] / out[name]["s"]
    a, b, block = grids["shared"], grids["release_rule"], release.context_words
    out["shared"]["tokens_ratio"] = out["release_rule"]["tokens_per_word"] / out["shared"]["tokens_per_word"]
    out["shared"]["first_words_max_rel"] = float(np.abs(a[:block] - b[:block]).max() / np.abs(b[:block]).max())
    if n_words > block:
        out["shared"]["later_words"] = _layer_deviation(a[block:], b[block:])
    return out


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _print_extract_text(t: dict) -> None:
    base = t.get("neuralset", {}).get("s")
    for name in ("release_rule", "shared"):
        r = t[name]
        if base:
            _row(f"text {name} {t['config']['words']} words", r["s"], base, r["speedup_vs_neuralset"],
                 f"vs neuralset 0.0.2; {r['tokens_per_word']:.1f} tokens/word")
        else:
            print(f"text {name}: {r['s']:.2f} s, {r['tokens_per_word']:.1f} tokens/word")
    s = t["shared"]
    later = "; ".join(f"{g}: max rel {v['max_rel']:.2g}, r {v['pearson_r']:.3f}" for g, v in s.get("later_words", {}).items())
    print(f"  shared: {s['tokens_ratio']:.0f}x fewer tokens/word; first words vs the rule {s['first_words_max_rel']:.1e}; "
          f"later words {later}")


def _extract(args) -> dict:
    """`extract`: text, video, audio (and with --e2e the film -> predictions; with --dtype bfloat16 our bf16
    features and predictions against fp32), each beside neuralset 0.0.2 in this run (tools/bench_extract.py)."""
    import bench_extract as bx

    models, device = {"text": args.text_model, "audio": args.audio_model, "video": args.video_model}, args.device
    out = {"text": bench_extract_text(args.words, model_dir=models["text"], device=device)}
    _print_extract_text(out["text"])
    v = out["video"] = bx.bench_extract_video(args.video_seconds, args.video_batch_size, models["video"], device)
    _row(f"video {v['config']['seconds']:.0f} s B={v['config']['batch_size']}", v["ours_s"], v["neuralset_s"],
         v["speedup"], f"vs neuralset 0.0.2; frames decoded / preprocessed per clip {v['frames_decoded_per_clip']:.1f} / "
         f"{v['frames_preprocessed_per_clip']:.1f} (release: 64 read); max rel {v['max_rel']:.1e}")
    a = out["audio"] = bx.bench_extract_audio(args.audio_seconds, args.audio_batch_size, models["audio"], device)
    _row(f"audio {a['config']['seconds']:.0f} s B={a['config']['batch_size']}", a["ours_s"], a["neuralset_s"],
         a["speedup"], f"vs neuralset 0.0.2; 44.1 kHz stereo; max rel {a['max_rel']:.1e}")
    if args.e2e:
        e = out["e2e"] = bx.bench_extract_e2e(args.e2e_seconds, models, device)
        _row(f"media -> predictions {e['config']['seconds']:.0f} s", e["ours_s"], e["reference_s"], e["speedup"],
             f"vs neuralset + PyTorch reference; predictions max rel {e['predictions_max_rel']:.1e}")
    if args.dtype != "float32":
        d = out["dtype"] = bx.bench_extract_dtype(dtype=args.dtype, models=models, device=device)
        feats = ", ".join(f"{m} {r:.1e}" for m, r in d["features_max_rel"].items())
        print(f"extraction in {args.dtype} vs float32: features max rel {feats}; predictions {d['predictions_max_rel']:.1e}")
    return out


def _mib(n) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


def _row(name, ours, base, ratio, extra=""):
    print(f"{name:<34}{ours:>11.4f}{base:>14.4f}{ratio:>10.2f}x  {extra}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=["forward", "train", "loader", "inference", "streaming", "attribution",
                                          "ridge", "extract", "all"])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="compute dtype of forward/train/inference, ours and the baseline's autocast")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to build)")
    parser.add_argument("--words", type=int, default=3000, help="extract: words in the text timeline")
    parser.add_argument("--video-seconds", type=float, default=20.0, help="extract: length of the video")
    parser.add_argument("--audio-seconds", type=float, default=240.0, help="extract: length of the sound")
    parser.add_argument("--video-batch-size", type=int, default=None,
                        help="extract: our clips per forward (default: as many as fit the device)")
    parser.add_argument("--audio-batch-size", type=int, default=1, help="extract: our 60 s chunks per forward")
    parser.add_argument("--e2e", action="store_true", help="extract: also a film with speech -> predictions")
    for m, released in (("text", "meta-llama/Llama-3.2-3B"), ("audio", "facebook/w2v-bert-2.0"),
                        ("video", "facebook/vjepa2-vitg-fpc64-256")):
        parser.add_argument(f"--{m}-model", default=None, metavar="DIR_OR_ID",
                            help=f"extract: the {m} model (a directory or a cached hub id, e.g. {released}) "
                                 "instead of the tiny random one")
    parser.add_argument("--device", default="cpu", help="extract: where both sides run the extractors (cpu, cuda)")
    parser.add_argument("--e2e-seconds", type=float, default=120.0, help="extract --e2e: length of the film")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides), e.g. 1 on a busy CPU")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = {"hardware": hardware()}
    import jax

    if jax.default_backend() != "cpu" and torch_device() == "cpu":
        result["hardware"]["warning"] = "PyTorch sees no GPU: its baselines ran on the CPU, the ratios compare different hardware"
        print(f"WARNING: {result['hardware']['warning']} (install a CUDA build of torch)")
    hw = result["hardware"]
    print(f"{hw['device_kind']} ({len(hw['jax_devices'])} JAX devices); CPU {hw['cpu']}, {hw['cores']} cores; "
          f"jax {hw['jax']}, torch {hw['torch']}")
    print(f"{'benchmark':<34}{'ours (s)':>11}{'baseline (s)':>14}{'ratio':>9}")
    if args.bench in ("forward", "all"):
        f = result["forward"] = bench_forward(args.size, args.batch, args.repeats, args.dtype)
        _row(f"forward {args.size} B={args.batch}", f["jax"]["median_s"], f["torch_eager"]["median_s"],
             f["speedup_vs_torch_eager"], f"vs torch eager; first call incl. compile {f['jax']['first_s']:.1f} s; "
             f"rel err {f['rel_err']:.1e}")
    if args.bench in ("train", "all"):
        t = result["train"] = bench_train(args.size, max(args.batch, 2), args.repeats, args.torch_compile, args.dtype)
        mfu = "MFU n/a (no known peak)" if t["mfu"] is None else f"MFU {100 * t['mfu']:.1f}%"
        _row(f"train step {args.size} B={t['config']['batch']} {args.dtype}", t["jax"]["median_s"],
             t["torch_eager"]["median_s"], t["speedup_vs_torch_eager"],
             f"vs torch eager; {t['windows_per_s']:.2f} windows/s, {t['tflops_per_s']:.3f} TFLOP/s, {mfu}; "
             f"compile {t['jax']['first_s']:.1f} s; XLA buffers {_mib(t['jax_memory'].get('xla_total_bytes'))}")
        if "speedup_vs_torch_compile" in t:
            _row("train step vs torch.compile", t["jax"]["median_s"], t["torch_compile"]["median_s"],
                 t["speedup_vs_torch_compile"])
        elif "torch_compile" in t:
            print(f"  torch.compile: {t['torch_compile']['error']}")
    if args.bench in ("loader", "all"):
        lo = result["loader"] = bench_loader(8, 20)
        for dtype in ("float32", "float16"):
            print(f"loader B=8 full dims ({dtype}): {lo[dtype]['windows_per_s']:.1f} windows/s, "
                  f"{lo[dtype]['MB_per_s']:.0f} MB/s")
        if "train" in result and args.size == "released":  # the loader reads full feature dims
            rate = result["train"]["windows_per_s"]
            print(f"  loader / train-step rate: {lo['float16']['windows_per_s'] / rate:.1f}x")
    if args.bench in ("inference", "all"):
        i = result["inference"] = bench_inference(args.size, 8, dtype=args.dtype)
        _row(f"batched inference {args.size}", i["ours_s"], i["torch_loop_s"], i["speedup"],
             f"vs torch one window at a time; {i['ours_hours_per_min']:.2f} vs {i['torch_hours_per_min']:.2f} h/min")
    if args.bench in ("streaming", "all"):
        st = result["streaming"] = bench_streaming(args.size)
        print(f"streaming {args.size}: p50 {st['p50_s'] * 1e3:.1f} ms, p99 {st['p99_s'] * 1e3:.1f} ms per TR; "
              f"one full-window forward {st['full_window_forward_s'] * 1e3:.1f} ms")
    if args.bench in ("attribution", "all"):
        at = result["attribution"] = bench_attribution(args.size)
        _row(f"IG all vertices {args.size}", at["ours_s"], at["naive_all_vertices_s"], at["speedup"],
             f"vs one backward per vertex ({at['naive_per_backward_s'] * 1e3:.1f} ms each, extrapolated)")
    if args.bench in ("ridge", "all"):
        rd = result["ridge"] = bench_ridge(args.size)
        _row(f"ridge CV {rd['config']['samples']}x{rd['config']['latent']}->{rd['config']['vertices']}", rd["ours_s"],
             rd["himalaya_s"], rd["speedup"], f"vs himalaya RidgeCV; max CV-score diff {rd['max_cv_score_diff']:.1e}, "
             f"same alpha at {100 * rd['same_alpha_fraction']:.1f}% of vertices")
    if args.bench in ("extract", "all"):
        result["extract"] = _extract(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()
