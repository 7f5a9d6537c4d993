"""`train(config, workdir)`: the one training loop.

Data (FeatureStore -> grain windows) -> sharded jitted step -> validation each epoch -> Orbax checkpoint
(state + data iterator + metadata) -> best model exported as an nforge_jax checkpoint. A run started again
in the same workdir resumes from its last checkpoint and continues the exact same batch stream.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from nforge_jax.data import pipeline
from nforge_jax.data.provenance import store_recipe
from nforge_jax.data.store import FeatureStore
from nforge_jax.model.checkpoint import save_encoder
from nforge_jax.model.config import EncoderConfig
from nforge_jax.train import metrics
from nforge_jax.train.checkpoint import CheckpointDamagedError, TrainCheckpoints
from nforge_jax.train.config import check_config
from nforge_jax.model.sharding import batch_sharding, make_mesh
from nforge_jax.train.step import (global_batch, init_state, make_eval_step, make_optimizer, make_train_step,
                                   peak_flops_per_device, train_flops_per_window, tree_shardings)

BEST_MODEL = "best_model"
FINAL_MODEL = "final_model"
SUMMARY = "train_summary.json"


class TrainError(RuntimeError):
    """A training run cannot go on; the message says why and what was kept."""


def enable_compilation_cache(path=None):
    """Persistent XLA cache so a second run skips compilation (on by default)."""
    path = path or os.environ.get("NFORGE_COMPILATION_CACHE", str(Path.home() / ".cache" / "nforge_jax" / "xla"))
    if path and path.lower() != "off":
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def store_layout(store: FeatureStore, timelines) -> tuple[tuple[tuple[str, int, int], ...], int]:
    """(feature_dims in text/audio/video order, n_vertices), checked identical across timelines."""
    order = {"text": 0, "audio": 1, "video": 2}
    dims, n_vertices, first = {}, None, None
    for name in timelines:
        manifest = store.manifest(name)
        arrays = manifest["arrays"]
        for key, entry in arrays.items():
            if key == "fmri":
                v = entry["shape"][1]
                if n_vertices not in (None, v):
                    raise TrainError(f"store {store.path}: timeline {name!r} has {v} vertices, {first!r} has {n_vertices}")
                n_vertices, first = v, first or name
                continue
            modality = key.removeprefix("features/") if key.startswith("features/") else key
            shape = tuple(entry["shape"][1:])
            if modality in dims and dims[modality] != shape:
                raise TrainError(f"store {store.path}: timeline {name!r} has {modality} features of shape {shape}, "
                                 f"others have {dims[modality]}")
            dims[modality] = shape
    if n_vertices is None:
        raise TrainError(f"store {store.path}: no timeline has fMRI targets to train on")
    ordered = sorted(dims, key=lambda m: (order.get(m, 9), m))
    return tuple((m, int(dims[m][0]), int(dims[m][1])) for m in ordered), int(n_vertices)


def split_for(cfg, store) -> tuple[list[str], list[str]]:
    """(train, val) timelines: TRIBE's hashed split, or `data.val_values` (split-attribute values) when given."""
    attributes = dict(cfg.data.split_attributes) if cfg.data.split_attributes else None
    if not cfg.data.val_values:
        return pipeline.split_timelines(store, val_ratio=cfg.data.val_ratio, attributes=attributes,
                                        seed=cfg.data.split_seed)
    wanted = set(cfg.data.val_values)
    attributes = attributes or pipeline.SPLIT_ATTRIBUTES
    train_tl, val_tl = [], []
    for name in store.timelines:
        meta = store.meta(name)
        attr = attributes.get(meta["study"], "timeline")
        value = name if attr == "timeline" else str(meta.get(attr, pipeline.parse_timeline_name(name).get(attr)))
        (val_tl if value in wanted else train_tl).append(name)
    if not val_tl:
        raise TrainError(f"data.val_values {sorted(wanted)} match no timeline of {store.path}")
    return train_tl, val_tl


def _model_config(cfg, feature_dims, n_vertices, n_subjects) -> EncoderConfig:
    m = cfg.model
    return EncoderConfig(
        feature_dims=feature_dims, n_outputs=n_vertices, n_output_timesteps=int(round(cfg.data.window_s)),
        hidden=m.hidden, depth=m.depth, heads=m.heads, ff_mult=m.ff_mult, max_seq_len=m.max_seq_len,
        combination=m.combination, layer_aggregation=m.layer_aggregation, time_pos_embedding=m.time_pos_embedding,
        low_rank_head=m.low_rank_head or None, n_subjects=n_subjects, subject_dropout=m.subject_dropout or None,
        modality_dropout=m.modality_dropout, dropout=m.dropout, dtype=m.dtype)


def _pad_batch(batch: dict, size: int) -> dict:
    """Pads a short final evaluation batch to `size` rows with masked-out examples (one compiled shape)."""
    n = len(batch["subject_id"])
    if n == size:
        return batch
    out = {}
    for key, value in batch.items():
        if isinstance(value, np.ndarray):
            pad = np.zeros((size - n,) + value.shape[1:], value.dtype)
            out[key] = np.concatenate([value, pad])
        else:
            out[key] = value
    return out


def _check_finite(batch, keys, step) -> str | None:
    for key in keys:
        value = batch[key]
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            where = batch.get("window")
            first = "" if where is None else f" (first window: timeline #{int(where[0][0])}, start {float(where[0][1]):.0f} s)"
            return f"non-finite values in batch[{key!r}] at step {step}{first}"
    return None


def train(cfg, workdir, *, progress: bool = True, log=print) -> dict:
    """Trains as `cfg` says (see configs/*.py), writing everything under `workdir`; returns the summary."""
    from tqdm import tqdm

    t_start = time.time()
    check_config(cfg)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if cfg.train.compilation_cache:
        enable_compilation_cache()
    is_main = jax.process_index() == 0

    # Data -------------------------------------------------------------------------------------------
    store = FeatureStore.open(cfg.data.store)
    train_tl, val_tl = split_for(cfg, store)
    if not train_tl:
        raise TrainError(f"store {store.path}: no training timelines after the split (val_ratio {cfg.data.val_ratio})")
    subjects_index = pipeline.make_subjects_index(store)
    recipe = store_recipe(store, list(train_tl) + list(val_tl))  # travels with the exported model
    feature_dims, n_vertices = store_layout(store, train_tl + val_tl)
    model_config = _model_config(cfg, feature_dims, n_vertices, len(subjects_index))
    n_proc = jax.process_count()
    global_bs = cfg.data.batch_size
    if global_bs % n_proc:
        raise TrainError(f"data.batch_size ({global_bs}) must be divisible by the number of processes ({n_proc})")
    weights = (pipeline.subject_weights(store, train_tl, weigh_by=cfg.data.weigh_by)
               if cfg.data.weigh_by != "none" else None)
    common = dict(subjects_index=subjects_index, window_s=cfg.data.window_s, batch_size=global_bs // n_proc,
                  process_index=jax.process_index(), process_count=n_proc, worker_count=cfg.data.worker_count,
                  feature_dtype=cfg.data.feature_dtype)
    train_ds = pipeline.make_dataset(store, timelines=train_tl, seed=cfg.seed, shuffle=True, num_epochs=None,
                                     weights=weights, **common)
    n_train_windows = len(pipeline.list_windows(store, train_tl, pipeline.WindowSpec(window_s=cfg.data.window_s)))
    steps_per_epoch = max(n_train_windows // global_bs, 1)
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch

    # Model, optimizer, mesh -----------------------------------------------------------------------------
    n_mesh = (cfg.train.mesh_data or jax.device_count() // cfg.train.mesh_model) * cfg.train.mesh_model
    if n_mesh > jax.device_count():
        raise TrainError(f"train.mesh_data x train.mesh_model = {n_mesh} devices, only {jax.device_count()} present")
    mesh = make_mesh(data=n_mesh // cfg.train.mesh_model, model=cfg.train.mesh_model, devices=jax.devices()[:n_mesh])
    if global_bs % mesh.shape["data"]:
        raise TrainError(f"data.batch_size ({global_bs}) must be divisible by the mesh's data axis ({mesh.shape['data']})")
    o = cfg.optim
    tx = make_optimizer(total_steps, lr=o.lr, pct_start=o.pct_start, weight_decay=o.weight_decay,
                        grad_clip=o.grad_clip or None, accumulate=o.accumulate_steps)
    graphdef, state, buffers, state_sh = init_state(model_config, tx, mesh, cfg.seed)
    buffer_sh = tree_shardings(buffers, mesh)
    keys = list(model_config.modalities) + ["fmri", "mask", "subject_id"]
    probe = train_ds.__iter__()
    first = next(probe)
    batch_sh = {k: batch_sharding(mesh, np.ndim(first[k])) for k in keys if k in first}
    del probe, first
    train_step = make_train_step(graphdef, model_config, tx, o.loss, state_sh, buffer_sh, batch_sh, mesh)
    stats_sh = NamedSharding(mesh, P(None, None, "model" if n_vertices % mesh.shape["model"] == 0 else None))
    eval_step = make_eval_step(graphdef, model_config, o.loss, state_sh, buffer_sh, batch_sh, stats_sh, mesh)
    key = jax.random.key(cfg.seed)

    # Resume -------------------------------------------------------------------------------------------
    try:
        ckpts = TrainCheckpoints(workdir, keep=cfg.train.keep_checkpoints)
    except CheckpointDamagedError as e:
        raise TrainError(str(e)) from None
    for bad, why, moved_to in ckpts.damaged:
        log(f"nforge train: warning: checkpoint step {bad} is damaged ({why}); moved it to {moved_to}")
    train_iter = iter(train_ds)
    meta = {"epoch": 0, "best_val_pearson": -math.inf, "best_step": None, "skipped_batches": 0,
            "model_config": model_config.to_dict(), "history": []}
    shapes = state_shapes(state)
    latest = ckpts.latest_step()
    if latest is not None:
        try:
            saved = ckpts.saved_meta(latest)
        except CheckpointDamagedError as e:
            raise TrainError(str(e)) from None
        difference = _config_difference(saved, model_config, shapes)
        if difference:
            raise TrainError(f"{workdir}: this workdir holds a run with another configuration ({difference}): "
                             "use a new --workdir")
        state, saved = ckpts.restore(latest, state, train_iter)
        meta = saved
        log(f"nforge train: resumed from step {latest} in {ckpts.directory}")
    meta["state_shapes"] = shapes
    best_missing = bool(val_tl) and not (workdir / BEST_MODEL).exists()  # decided before this run exports
    exported_best = False
    step = int(jax.device_get(state["step"]))

    writer = None
    if is_main:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(workdir / "tb"))
        (workdir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
    flops = train_flops_per_window(model_config) * global_bs
    peak = peak_flops_per_device()

    def evaluate() -> dict:
        val_ds = pipeline.make_dataset(store, timelines=val_tl, shuffle=False, num_epochs=1, drop_remainder=False,
                                       **common)
        stats = jax.device_put(metrics.init_pearson(len(subjects_index), n_vertices), stats_sh)
        losses, retrieval, weights_ = [], [], []
        for batch in val_ds:
            batch = _pad_batch(batch, global_bs // n_proc)
            stats, m = eval_step(state["params"], buffers, global_batch(batch, batch_sh, mesh), stats)
            losses.append(float(m["loss"]))
            retrieval.append(float(m["retrieval_top1"]))
            weights_.append(float(m["n_rows"]))
        summary = metrics.summarize_pearson(jax.device_get(stats))
        w = np.asarray(weights_) / max(sum(weights_), 1.0)
        summary.update(loss=float(np.dot(w, losses)) if losses else float("nan"),
                       retrieval_top1=float(np.mean(retrieval)) if retrieval else float("nan"))
        return summary

    def export_model(path, val):
        params = jax.tree.map(lambda x: np.asarray(_gather(x)), state["params"])
        model = nnx.merge(graphdef, params, jax.device_get(buffers))
        if is_main:
            save_encoder(model, path, overwrite=True,
                         metadata={"source": "nforge train", "step": step, "val_pearson": val["pearson"],
                                   "subjects": list(subjects_index),
                                   **({"extract_recipe": recipe} if recipe else {})})

    def export_best(val):
        nonlocal exported_best
        exported_best = True
        export_model(workdir / BEST_MODEL, val)
        if is_main:
            np.save(workdir / "best_val_r.npy", val["r_vertex"])

    # Loop ---------------------------------------------------------------------------------------------
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not (progress and is_main),
               dynamic_ncols=True)
    t_log, steps_since_log = time.time(), 0
    last_val = None
    try:
        while step < total_steps:
            batch = next(train_iter)
            problem = _check_finite(batch, [k for k in keys if k in batch], step)
            if problem:
                if cfg.train.nan_policy == "stop":
                    raise TrainError(f"{problem}; stopping (train.nan_policy='stop'). Last checkpoint: "
                                     f"{ckpts.latest_step()} in {ckpts.directory}")
                meta["skipped_batches"] += 1
                log(f"nforge train: skipping batch: {problem} (train.nan_policy='skip')")
                step_metrics = None
                state["step"] = state["step"] + 1  # keep step numbering (and per-step randomness) aligned
            else:
                state, step_metrics = train_step(state, buffers, global_batch(batch, batch_sh, mesh), key)
            step += 1
            steps_since_log += 1
            bar.update(1)
            if step_metrics is not None and (step % cfg.train.log_every == 0 or step == total_steps):
                loss = float(step_metrics["loss"])
                meta["skipped_batches"] += int(step_metrics["skipped"])
                dt = (time.time() - t_log) / steps_since_log
                t_log, steps_since_log = time.time(), 0
                lr = float(jax.device_get(_hyperparam(state["opt"], "learning_rate")))
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}")
                if writer:
                    writer.add_scalar("train/loss", loss, step)
                    writer.add_scalar("train/grad_norm", float(step_metrics["grad_norm"]), step)
                    writer.add_scalar("train/lr", lr, step)
                    writer.add_scalar("perf/step_time_s", dt, step)
                    writer.add_scalar("perf/windows_per_s", global_bs / dt, step)
                    if peak:
                        writer.add_scalar("perf/mfu", flops / dt / (peak * jax.device_count()), step)
            end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
            if end_of_epoch:
                meta["epoch"] = step // steps_per_epoch
                last = step == total_steps
                if val_tl and (last or meta["epoch"] % cfg.train.eval_every_epochs == 0):
                    last_val = evaluate()
                    record = {"step": step, "epoch": meta["epoch"], "val_pearson": last_val["pearson"],
                              "val_loss": last_val["loss"], "val_retrieval_top1": last_val["retrieval_top1"]}
                    meta["history"].append(record)
                    bar.write(f"epoch {meta['epoch']}: val pearson {last_val['pearson']:.4f}, "
                              f"loss {last_val['loss']:.4f}, top-1 retrieval {last_val['retrieval_top1']:.2f}")
                    if writer:
                        for k in ("pearson", "loss", "retrieval_top1"):
                            writer.add_scalar(f"val/{k}", last_val[k], step)
                        if cfg.train.tb_images:
                            _log_cortex_image(writer, last_val["r_vertex"], step)
                    if last_val["pearson"] > meta["best_val_pearson"]:
                        meta["best_val_pearson"], meta["best_step"] = last_val["pearson"], step
                        export_best(last_val)
                if last or meta["epoch"] % cfg.train.checkpoint_every_epochs == 0:
                    ckpts.save(step, state, train_iter, meta)
            elif cfg.train.checkpoint_every_steps and step % cfg.train.checkpoint_every_steps == 0:
                ckpts.save(step, state, train_iter, meta)
    finally:
        bar.close()
        ckpts.close()
        if writer:
            writer.close()
    export_model(workdir / FINAL_MODEL, {"pearson": float("nan")})  # every process: may gather shards
    if not val_tl:  # nothing to select on: the final weights are the best we have
        export_model(workdir / BEST_MODEL, {"pearson": float("nan")})
    elif best_missing and not exported_best:
        # best_model was deleted, or never written (a resumed run that had finished, a non-finite score):
        # the checkpoints hold only the latest weights, so those become best_model, and the summary says so.
        val = last_val or evaluate()
        if meta["best_step"] not in (None, step):
            log(f"nforge train: warning: {workdir / BEST_MODEL} was missing and the weights of step "
                f"{meta['best_step']} are no longer kept; it now holds the final weights (step {step})")
        meta["best_val_pearson"], meta["best_step"] = val["pearson"], step
        export_best(val)
    summary = {"steps": step, "epochs": meta["epoch"], "best_val_pearson": meta["best_val_pearson"],
               "best_step": meta["best_step"], "skipped_batches": meta["skipped_batches"],
               "seconds": time.time() - t_start, "workdir": str(workdir),
               "best_model": str(workdir / BEST_MODEL), "final_model": str(workdir / FINAL_MODEL),
               "n_train_timelines": len(train_tl),
               "n_val_timelines": len(val_tl), "n_subjects": len(subjects_index), "history": meta["history"]}
    if is_main:
        tmp = workdir / f".{SUMMARY}.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, workdir / SUMMARY)
        log(f"nforge train: {step} steps in {summary['seconds']:.0f} s; best val pearson "
            f"{meta['best_val_pearson']:.4f} at step {meta['best_step']}; model in {workdir / BEST_MODEL}")
    if jax.process_count() > 1:
        # Process 0 writes the exports and the summary; the others wait here rather than in jax's exit
        # barrier, whose timeout a slow disk can exceed.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("nforge train finished")
    return summary


def state_shapes(state) -> dict:
    """{leaf path: [shape, dtype]} of the train state: what a restore must find."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): [list(np.shape(x)), str(x.dtype)] for path, x in leaves}


def _config_difference(saved: dict, model_config: EncoderConfig, shapes: dict) -> str | None:
    """The first thing a checkpoint's metadata says differently from this run (None: it can be restored)."""
    old = saved.get("model_config")
    try:
        same = EncoderConfig.from_dict(old) == model_config
    except Exception:  # an unreadable or foreign config is "different"
        same = False
    if not same:
        if not isinstance(old, dict):
            return "its metadata names no model configuration"
        new = json.loads(json.dumps(model_config.to_dict(), default=str))
        old = json.loads(json.dumps(old, default=str))
        key = next((k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)), None)
        return f"model {key}: {old.get(key)} there, {new.get(key)} here" if key else "another model configuration"
    old_shapes = saved.get("state_shapes")
    if old_shapes is not None and old_shapes != shapes:  # e.g. another optimizer; absent in older runs
        changed = sorted(set(old_shapes) ^ set(shapes)) or [k for k in shapes if old_shapes[k] != shapes[k]]
        return f"train state {changed[0]} differs (optimizer or model settings)"
    return None


def _gather(x):
    """A global array as numpy on every process (parameters may be sharded across hosts)."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(x, tiled=True)
    return jax.device_get(x)


def _hyperparam(opt_state, name):
    for node in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams")):
        if hasattr(node, "hyperparams"):
            return node.hyperparams[name]
    return jnp.nan


def _log_cortex_image(writer, r_vertex, step):
    try:
        from nforge_jax.viz.surface import figure_to_array, plot_cortex

        image = figure_to_array(plot_cortex(r_vertex, title=f"val r, step {step}", cmap="hot", vmin=0.0,
                                            colorbar_label="Pearson r"))
        writer.add_image("val/r_cortex", image, step, dataformats="HWC")
    except Exception as e:  # a missing plotting backend must not stop training
        writer.add_text("val/r_cortex_error", str(e), step)
