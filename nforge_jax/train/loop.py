"""`train(config, workdir)`: the one training loop.

Data (FeatureStore -> grain windows) -> sharded jitted step -> validation each epoch -> Orbax checkpoint
(state + data iterator + metadata) -> best model exported as an nforge_jax checkpoint. A run started again
in the same workdir resumes from its last checkpoint and continues the exact same batch stream.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from nforge_jax.data import splits, windows
from nforge_jax.data.provenance import store_recipe
from nforge_jax.data.spaces import FSAVERAGE5, OutputSpace, SpaceMismatch, check_same_space
from nforge_jax.data.store import FeatureStore
from nforge_jax.model.checkpoint import save_encoder
from nforge_jax.model.config import EncoderConfig
from nforge_jax.model.sharding import batch_sharding, make_mesh, tree_shardings
from nforge_jax.train import metrics
from nforge_jax.train.checkpoint import CheckpointDamagedError, TrainCheckpoints
from nforge_jax.train.config import check_config
from nforge_jax.train.step import (global_batch, hyperparam, init_state, make_eval_step, make_optimizer,
                                   make_train_step)

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


def training_space(store: FeatureStore, timelines) -> OutputSpace:
    """The one output space of the training and validation timelines (TrainError naming two that differ)."""
    try:
        space = store.output_space(timelines)
    except SpaceMismatch as e:
        raise TrainError(f"store {store.path} mixes output spaces: {e}") from None
    if space is None:  # store_layout has already refused a store without fMRI
        raise TrainError(f"store {store.path}: no timeline has fMRI targets to train on")
    return space


def _check_resumed_space(saved: dict, run) -> None:
    """TrainError when the workdir's run was trained on another output space than this store's."""
    if saved.get("output_space") is None:  # runs from before spaces were recorded
        return
    try:
        check_same_space(OutputSpace.from_dict(saved["output_space"]), run.space,
                         expected_what=f"the run in {run.workdir}", got_what=f"store {run.store.path}")
    except ValueError as e:
        raise TrainError(f"{e}: use a new --workdir, or the store that run was trained on") from None


def split_for(cfg, store) -> tuple[list[str], list[str]]:
    """(train, val) timelines: TRIBE's hashed split, or `data.val_values` (split-attribute values) when given.
    Timelines whose value is in `data.test_values` are in neither: they stay unseen until a final test."""
    attributes = dict(cfg.data.split_attributes) if cfg.data.split_attributes else None
    test = set(cfg.data.test_values)
    kept = [n for n in store.timelines if splits.split_value(store, n, attributes) not in test]
    if test and len(kept) == len(store.timelines):
        raise TrainError(f"data.test_values {sorted(test)} match no timeline of {store.path}")
    if not kept:
        raise TrainError(f"data.test_values {sorted(test)} hold out every timeline of {store.path}: nothing to train on")
    if not cfg.data.val_values:
        return splits.split_timelines(store, kept, val_ratio=cfg.data.val_ratio, attributes=attributes,
                                      seed=cfg.data.split_seed)
    wanted = set(cfg.data.val_values)
    if wanted & test:
        raise TrainError(f"data.val_values and data.test_values share {sorted(wanted & test)}: a test stimulus must not "
                         f"choose the checkpoint")
    train_tl, val_tl = [], []
    for name in kept:
        (val_tl if splits.split_value(store, name, attributes) in wanted else train_tl).append(name)
    if not val_tl:
        raise TrainError(f"data.val_values {sorted(wanted)} match no timeline of {store.path}")
    return train_tl, val_tl


def held_out_test_timelines(cfg, store) -> list[str]:
    """The timelines `data.test_values` hold out of training and validation (in store order)."""
    attributes = dict(cfg.data.split_attributes) if cfg.data.split_attributes else None
    test = set(cfg.data.test_values)
    return [n for n in store.timelines if splits.split_value(store, n, attributes) in test]


# Config fields whose 0 means "off": an ml_collections field keeps one type, EncoderConfig says None.
ZERO_MEANS_NONE = ("low_rank_head", "subject_dropout")


def model_config_for(cfg, feature_dims, n_vertices, n_subjects) -> EncoderConfig:
    """`EncoderConfig(**cfg.model)` with the sizes the store decides."""
    fields = {k: (v or None) if k in ZERO_MEANS_NONE else v for k, v in cfg.model.items()}
    return EncoderConfig(**fields, feature_dims=feature_dims, n_outputs=n_vertices,
                         n_output_timesteps=int(round(cfg.data.window_s)), n_subjects=n_subjects)


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


@dataclasses.dataclass
class Run:
    """What set-up decides once: the data, the model on its mesh and the compiled steps."""

    cfg: Any
    workdir: Path
    store: FeatureStore
    train_tl: list[str]
    val_tl: list[str]
    subjects_index: dict
    recipe: dict | None  # the store's extraction recipe, which travels with the exported model
    space: OutputSpace  # what the fMRI columns are; recorded in the exported model
    model_config: EncoderConfig
    dataset_args: dict  # make_dataset arguments shared by the training and validation streams
    train_ds: Any
    steps_per_epoch: int
    total_steps: int
    mesh: Any = None
    graphdef: Any = None
    buffers: Any = None
    batch_sh: dict = dataclasses.field(default_factory=dict)
    stats_sh: Any = None
    train_step: Callable | None = None
    eval_step: Callable | None = None
    key: Any = None

    @property
    def is_main(self) -> bool:
        return jax.process_index() == 0

    @property
    def local_batch(self) -> int:
        return self.cfg.data.batch_size // jax.process_count()

    @property
    def batch_keys(self) -> list[str]:
        return list(self.model_config.modalities) + ["fmri", "mask", "subject_id"]


@dataclasses.dataclass
class Progress:
    """What changes while the loop runs."""

    state: dict
    step: int
    meta: dict
    last_val: dict | None = None
    exported_best: bool = False
    t_log: float = dataclasses.field(default_factory=time.time)
    steps_since_log: int = 0


def set_up_data(cfg, workdir: Path) -> Run:
    """The store, the split, the model configuration it implies and the training stream."""
    store = FeatureStore.open(cfg.data.store)
    train_tl, val_tl = split_for(cfg, store)
    if not train_tl:
        raise TrainError(f"store {store.path}: no training timelines after the split (val_ratio {cfg.data.val_ratio})")
    subjects_index = splits.make_subjects_index(store)
    feature_dims, n_vertices = store_layout(store, train_tl + val_tl)
    space = training_space(store, train_tl + val_tl)
    n_proc, global_bs = jax.process_count(), cfg.data.batch_size
    if global_bs % n_proc:
        raise TrainError(f"data.batch_size ({global_bs}) must be divisible by the number of processes ({n_proc})")
    weights = (splits.subject_weights(store, train_tl, weigh_by=cfg.data.weigh_by)
               if cfg.data.weigh_by != "none" else None)
    common = dict(subjects_index=subjects_index, window_s=cfg.data.window_s, batch_size=global_bs // n_proc,
                  process_index=jax.process_index(), process_count=n_proc, worker_count=cfg.data.worker_count,
                  feature_dtype=cfg.data.feature_dtype)
    train_ds = windows.make_dataset(store, timelines=train_tl, seed=cfg.seed, shuffle=True, num_epochs=None,
                                     weights=weights, **common)
    n_train_windows = len(windows.list_windows(store, train_tl, windows.WindowSpec(window_s=cfg.data.window_s)))
    steps_per_epoch = max(n_train_windows // global_bs, 1)
    return Run(cfg=cfg, workdir=workdir, store=store, train_tl=train_tl, val_tl=val_tl,
               subjects_index=subjects_index, recipe=store_recipe(store, list(train_tl) + list(val_tl)),
               space=space,
               model_config=model_config_for(cfg, feature_dims, n_vertices, len(subjects_index)),
               dataset_args=common, train_ds=train_ds, steps_per_epoch=steps_per_epoch,
               total_steps=cfg.train.max_steps or cfg.train.epochs * steps_per_epoch)


def set_up_model(run: Run) -> dict:
    """The mesh, the train state born sharded on it and the compiled steps (stored on `run`); returns the state."""
    cfg, o = run.cfg, run.cfg.optim
    n_mesh = (cfg.train.mesh_data or jax.device_count() // cfg.train.mesh_model) * cfg.train.mesh_model
    if n_mesh > jax.device_count():
        raise TrainError(f"train.mesh_data x train.mesh_model = {n_mesh} devices, only {jax.device_count()} present")
    mesh = make_mesh(data=n_mesh // cfg.train.mesh_model, model=cfg.train.mesh_model, devices=jax.devices()[:n_mesh])
    if cfg.data.batch_size % mesh.shape["data"]:
        raise TrainError(f"data.batch_size ({cfg.data.batch_size}) must be divisible by the mesh's data axis "
                         f"({mesh.shape['data']})")
    tx = make_optimizer(run.total_steps, lr=o.lr, pct_start=o.pct_start, weight_decay=o.weight_decay,
                        grad_clip=o.grad_clip or None, accumulate=o.accumulate_steps)
    graphdef, state, buffers, state_sh = init_state(run.model_config, tx, mesh, cfg.seed)
    buffer_sh = tree_shardings(buffers, mesh)
    first = next(run.train_ds.__iter__())  # a probe for the batch's array ranks; the stream itself starts later
    batch_sh = {k: batch_sharding(mesh, np.ndim(first[k])) for k in run.batch_keys if k in first}
    n_vertices = run.model_config.n_outputs
    stats_sh = NamedSharding(mesh, P(None, None, "model" if n_vertices % mesh.shape["model"] == 0 else None))
    run.mesh, run.graphdef, run.buffers, run.batch_sh, run.stats_sh = mesh, graphdef, buffers, batch_sh, stats_sh
    run.train_step = make_train_step(graphdef, run.model_config, tx, o.loss, state_sh, buffer_sh, batch_sh, mesh)
    run.eval_step = make_eval_step(graphdef, run.model_config, o.loss, state_sh, buffer_sh, batch_sh, stats_sh, mesh)
    run.key = jax.random.key(cfg.seed)
    return state


def resume(run: Run, ckpts: TrainCheckpoints, state, train_iter, log) -> Progress:
    """The latest checkpoint's state, metadata and data position; a fresh start when there is none."""
    meta = {"epoch": 0, "best_val_pearson": -math.inf, "best_step": None, "skipped_batches": 0,
            "model_config": run.model_config.to_dict(), "history": []}
    shapes = state_shapes(state)
    latest = ckpts.latest_step()
    if latest is not None:
        try:
            saved = ckpts.saved_meta(latest)
        except CheckpointDamagedError as e:
            raise TrainError(str(e)) from None
        _check_resumed_space(saved, run)
        difference = _config_difference(saved, run.model_config, shapes)
        if difference:
            raise TrainError(f"{run.workdir}: this workdir holds a run with another configuration ({difference}): "
                             "use a new --workdir")
        state, meta = ckpts.restore(latest, state, train_iter)
        log(f"nforge train: resumed from step {latest} in {ckpts.directory}")
    meta["state_shapes"] = shapes
    meta["output_space"] = run.space.to_dict()
    return Progress(state=state, step=int(jax.device_get(state["step"])), meta=meta)


def open_checkpoints(run: Run, log) -> TrainCheckpoints:
    try:
        ckpts = TrainCheckpoints(run.workdir, keep=run.cfg.train.keep_checkpoints)
    except CheckpointDamagedError as e:
        raise TrainError(str(e)) from None
    for bad, why, moved_to in ckpts.damaged:
        log(f"nforge train: warning: checkpoint step {bad} is damaged ({why}); moved it to {moved_to}")
    return ckpts


def open_writer(run: Run):
    """TensorBoard writer and config.json on the main process (None elsewhere)."""
    if not run.is_main:
        return None
    from tensorboardX import SummaryWriter

    (run.workdir / "config.json").write_text(json.dumps(run.cfg.to_dict(), indent=2, default=str) + "\n")
    return SummaryWriter(str(run.workdir / "tb"))


def take_step(run: Run, p: Progress, batch, ckpts: TrainCheckpoints, log):
    """One step on `batch`; a batch with non-finite values is skipped or stops the run (train.nan_policy)."""
    problem = _check_finite(batch, [k for k in run.batch_keys if k in batch], p.step)
    if problem:
        if run.cfg.train.nan_policy == "stop":
            raise TrainError(f"{problem}; stopping (train.nan_policy='stop'). Last checkpoint: "
                             f"{ckpts.latest_step()} in {ckpts.directory}")
        p.meta["skipped_batches"] += 1
        log(f"nforge train: skipping batch: {problem} (train.nan_policy='skip')")
        p.state["step"] = p.state["step"] + 1  # keep step numbering (and per-step randomness) aligned
        step_metrics = None
    else:
        p.state, step_metrics = run.train_step(p.state, run.buffers, global_batch(batch, run.batch_sh, run.mesh),
                                               run.key)
    p.step += 1
    p.steps_since_log += 1
    return step_metrics


def log_step(run: Run, p: Progress, step_metrics, writer, bar):
    """Loss, learning rate and speed every train.log_every steps (reading them waits for the step)."""
    if step_metrics is None or not (p.step % run.cfg.train.log_every == 0 or p.step == run.total_steps):
        return
    loss = float(step_metrics["loss"])
    p.meta["skipped_batches"] += int(step_metrics["skipped"])
    dt = (time.time() - p.t_log) / p.steps_since_log
    p.t_log, p.steps_since_log = time.time(), 0
    lr = float(jax.device_get(hyperparam(p.state["opt"], "learning_rate")))
    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.1e}")
    if writer:
        writer.add_scalar("train/loss", loss, p.step)
        writer.add_scalar("train/grad_norm", float(step_metrics["grad_norm"]), p.step)
        writer.add_scalar("train/lr", lr, p.step)
        writer.add_scalar("perf/step_time_s", dt, p.step)
        writer.add_scalar("perf/windows_per_s", run.cfg.data.batch_size / dt, p.step)
        flops = metrics.train_flops_per_window(run.model_config) * run.cfg.data.batch_size
        utilisation = metrics.mfu(flops, dt, jax.device_count())
        if utilisation is not None:
            writer.add_scalar("perf/mfu", utilisation, p.step)


def evaluate(run: Run, state) -> dict:
    """Pearson r per vertex (pooled and per subject), loss and top-1 retrieval over the validation timelines."""
    val_ds = windows.make_dataset(run.store, timelines=run.val_tl, shuffle=False, num_epochs=1,
                                   drop_remainder=False, **run.dataset_args)
    stats = jax.device_put(metrics.init_pearson(len(run.subjects_index), run.model_config.n_outputs), run.stats_sh)
    losses, retrieval, weights = [], [], []
    for batch in val_ds:
        batch = _pad_batch(batch, run.local_batch)
        stats, m = run.eval_step(state["params"], run.buffers, global_batch(batch, run.batch_sh, run.mesh), stats)
        losses.append(float(m["loss"]))
        retrieval.append(float(m["retrieval_top1"]))
        weights.append(float(m["n_rows"]))
    summary = metrics.summarize_pearson(jax.device_get(stats))
    w = np.asarray(weights) / max(sum(weights), 1.0)
    summary.update(loss=float(np.dot(w, losses)) if losses else float("nan"),
                   retrieval_top1=float(np.mean(retrieval)) if retrieval else float("nan"))
    return summary


def export_model(run: Run, p: Progress, path: Path, val: dict):
    """The current weights as an nforge_jax checkpoint (every process gathers; the main one writes)."""
    params = jax.tree.map(lambda x: np.asarray(_gather(x)), p.state["params"])
    model = nnx.merge(run.graphdef, params, jax.device_get(run.buffers))
    if run.is_main:
        save_encoder(model, path, overwrite=True,
                     metadata={"source": "nforge train", "step": p.step, "val_pearson": val["pearson"],
                               "subjects": list(run.subjects_index), "output_space": run.space.to_dict(),
                               **({"extract_recipe": run.recipe} if run.recipe else {})})


def export_best(run: Run, p: Progress, val: dict):
    p.exported_best = True
    export_model(run, p, run.workdir / BEST_MODEL, val)
    if run.is_main:
        np.save(run.workdir / "best_val_r.npy", val["r_vertex"])


def validate(run: Run, p: Progress, ckpts: TrainCheckpoints, writer, bar):
    """Evaluates, records the scores and exports best_model when they beat the best so far."""
    p.last_val = val = evaluate(run, p.state)
    epoch = p.meta["epoch"]
    p.meta["history"].append({"step": p.step, "epoch": epoch, "val_pearson": val["pearson"],
                              "val_loss": val["loss"], "val_retrieval_top1": val["retrieval_top1"]})
    bar.write(f"epoch {epoch}: val pearson {val['pearson']:.4f}, loss {val['loss']:.4f}, "
              f"top-1 retrieval {val['retrieval_top1']:.2f}")
    if writer:
        for k in ("pearson", "loss", "retrieval_top1"):
            writer.add_scalar(f"val/{k}", val[k], p.step)
        if run.cfg.train.tb_images and run.space.name == FSAVERAGE5:  # the cortex picture needs the cortex
            _log_cortex_image(writer, val["r_vertex"], p.step)
    if val["pearson"] > p.meta["best_val_pearson"]:
        p.meta["best_val_pearson"], p.meta["best_step"] = val["pearson"], p.step
        # A save still in flight may hold collectives across processes; the export gathers shards too.
        ckpts.wait()
        export_best(run, p, val)


def after_step(run: Run, p: Progress, ckpts: TrainCheckpoints, train_iter, writer, bar):
    """At an epoch's end: validation (every train.eval_every_epochs) and a checkpoint (every
    train.checkpoint_every_epochs), both at the last step; within an epoch, train.checkpoint_every_steps."""
    t = run.cfg.train
    last = p.step == run.total_steps
    if p.step % run.steps_per_epoch == 0 or last:
        p.meta["epoch"] = p.step // run.steps_per_epoch
        if run.val_tl and (last or p.meta["epoch"] % t.eval_every_epochs == 0):
            validate(run, p, ckpts, writer, bar)
        if last or p.meta["epoch"] % t.checkpoint_every_epochs == 0:
            ckpts.save(p.step, p.state, train_iter, p.meta)
    elif t.checkpoint_every_steps and p.step % t.checkpoint_every_steps == 0:
        ckpts.save(p.step, p.state, train_iter, p.meta)


def finish(run: Run, p: Progress, best_missing: bool, t_start: float, log) -> dict:
    """Exports final_model (and best_model where the run selected none) and writes the summary."""
    workdir, meta = run.workdir, p.meta
    export_model(run, p, workdir / FINAL_MODEL, {"pearson": float("nan")})  # every process: may gather shards
    if not run.val_tl:  # nothing to select on: the final weights are the best we have
        export_model(run, p, workdir / BEST_MODEL, {"pearson": float("nan")})
    elif best_missing and not p.exported_best:
        # best_model was deleted, or never written (a resumed run that had finished, a non-finite score):
        # the checkpoints hold only the latest weights, so those become best_model, and the summary says so.
        val = p.last_val or evaluate(run, p.state)
        if meta["best_step"] not in (None, p.step):
            log(f"nforge train: warning: {workdir / BEST_MODEL} was missing and the weights of step "
                f"{meta['best_step']} are no longer kept; it now holds the final weights (step {p.step})")
        meta["best_val_pearson"], meta["best_step"] = val["pearson"], p.step
        export_best(run, p, val)
    summary = {"steps": p.step, "epochs": meta["epoch"], "best_val_pearson": meta["best_val_pearson"],
               "best_step": meta["best_step"], "skipped_batches": meta["skipped_batches"],
               "seconds": time.time() - t_start, "workdir": str(workdir),
               "best_model": str(workdir / BEST_MODEL), "final_model": str(workdir / FINAL_MODEL),
               "n_train_timelines": len(run.train_tl), "n_val_timelines": len(run.val_tl),
               "n_subjects": len(run.subjects_index), "history": meta["history"]}
    if run.is_main:
        tmp = workdir / f".{SUMMARY}.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, workdir / SUMMARY)
        log(f"nforge train: {p.step} steps in {summary['seconds']:.0f} s; best val pearson "
            f"{meta['best_val_pearson']:.4f} at step {meta['best_step']}; model in {workdir / BEST_MODEL}")
    if jax.process_count() > 1:
        # Process 0 writes the exports and the summary; the others wait here rather than in jax's exit
        # barrier, whose timeout a slow disk can exceed.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("nforge train finished")
    return summary


def train(cfg, workdir, *, progress: bool = True, log=print) -> dict:
    """Trains as `cfg` says (see configs/*.py), writing everything under `workdir`; returns the summary."""
    from tqdm import tqdm

    t_start = time.time()
    check_config(cfg)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if cfg.train.compilation_cache:
        enable_compilation_cache()
    run = set_up_data(cfg, workdir)
    state = set_up_model(run)
    ckpts = open_checkpoints(run, log)
    train_iter = iter(run.train_ds)
    p = resume(run, ckpts, state, train_iter, log)
    best_missing = bool(run.val_tl) and not (workdir / BEST_MODEL).exists()  # decided before this run exports
    writer = open_writer(run)
    bar = tqdm(total=run.total_steps, initial=p.step, desc="train", unit="step",
               disable=not (progress and run.is_main), dynamic_ncols=True)
    try:
        while p.step < run.total_steps:
            step_metrics = take_step(run, p, next(train_iter), ckpts, log)
            bar.update(1)
            log_step(run, p, step_metrics, writer, bar)
            after_step(run, p, ckpts, train_iter, writer, bar)
    finally:
        bar.close()
        ckpts.close()  # waits for the last save
        if writer:
            writer.close()
    return finish(run, p, best_missing, t_start, log)

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


def _log_cortex_image(writer, r_vertex, step):
    try:
        from nforge_jax.viz.surface import figure_to_array, plot_cortex

        image = figure_to_array(plot_cortex(r_vertex, title=f"val r, step {step}", cmap="hot", vmin=0.0,
                                            colorbar_label="Pearson r"))
        writer.add_image("val/r_cortex", image, step, dataformats="HWC")
    except Exception as e:  # a missing plotting backend must not stop training
        writer.add_text("val/r_cortex_error", str(e), step)
