"""Default training configuration; the files in configs/ start from it and override what differs."""

from __future__ import annotations

import dataclasses

import ml_collections

from nforge_jax.model.config import EncoderConfig

# The architecture's defaults are EncoderConfig's (written once, there); the loop builds it as
# EncoderConfig(**config.model, <sizes read from the store>).
MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(EncoderConfig)}


def default_config() -> ml_collections.ConfigDict:
    """TRIBE v2's training recipe; every field is documented here."""
    c = ml_collections.ConfigDict()
    c.seed = 33  # model init, data order and dropout randomness

    c.data = ml_collections.ConfigDict()
    c.data.store = ""  # FeatureStore directory (required)
    c.data.window_s = 100.0  # window length in s (200 feature steps at 2 Hz, 100 targets at 1 Hz)
    c.data.batch_size = 8  # global batch (windows per step, all processes together)
    c.data.val_ratio = 0.1  # fraction of split-attribute values held out for validation
    c.data.split_seed = 42
    c.data.val_values = ()  # explicit split-attribute values to validate on (overrides val_ratio)
    c.data.test_values = ()  # split-attribute values kept out of training and validation (a final test set)
    c.data.split_attributes = ml_collections.FieldReference(None, field_type=dict)  # {study: attribute}; None = TRIBE's
    c.data.weigh_by = "recording_time"  # subject sampling: "recording_time", "uniform" or "none" (plain shuffle)
    c.data.worker_count = 0  # grain worker processes (0 = threads in this process)
    c.data.feature_dtype = "float32"  # "float16" hands stored features over unconverted

    c.model = ml_collections.ConfigDict()
    m = MODEL_DEFAULTS
    c.model.hidden = m["hidden"]  # transformer width
    c.model.depth = m["depth"]
    c.model.heads = m["heads"]
    c.model.ff_mult = m["ff_mult"]
    c.model.max_seq_len = m["max_seq_len"]
    c.model.combination = m["combination"]  # "concatenate" | "sum" | "stack"
    c.model.layer_aggregation = m["layer_aggregation"]  # "cat" | "mean"
    c.model.time_pos_embedding = m["time_pos_embedding"]
    c.model.low_rank_head = m["low_rank_head"]  # 0 = no low-rank bottleneck
    c.model.subject_dropout = m["subject_dropout"]  # also creates the shared average-subject row; 0 = neither
    c.model.modality_dropout = 0.3  # TRIBE v2's training recipe (the architecture's default is 0)
    c.model.dropout = m["dropout"]
    c.model.dtype = m["dtype"]  # compute dtype; "bfloat16" on accelerators

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4  # one-cycle peak
    c.optim.pct_start = 0.1
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 0.0  # 0 = off (TRIBE v2 does not clip)
    c.optim.loss = "mse"  # "mse" | "pearson" | "weighted_mse"
    c.optim.accumulate_steps = 1  # average the gradients of N steps per update (N x the batch, same memory)

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 15
    c.train.max_steps = 0  # 0 = epochs x steps per epoch
    c.train.log_every = 10
    c.train.keep_checkpoints = 2
    c.train.eval_every_epochs = 1  # validation (and best-model selection) every N epochs and at the end
    c.train.checkpoint_every_epochs = 1  # checkpoint every N epochs and at the end
    c.train.checkpoint_every_steps = 0  # additionally every N steps (0 = off)
    c.train.nan_policy = "skip"  # a batch with NaN/Inf: "skip" it (counted, logged) or "stop"
    c.train.mesh_model = 1  # devices along the `model` mesh axis (shards the subject head's vertices)
    c.train.mesh_data = 0  # devices along `data` (0 = all devices / mesh_model)
    c.train.compilation_cache = True
    c.train.tb_images = True
    return c


def check_config(c) -> None:
    """Rejects values the loop cannot honour, naming the field."""
    choices = {"data.weigh_by": ("recording_time", "uniform", "none"), "train.nan_policy": ("skip", "stop"),
               "optim.loss": ("mse", "pearson", "weighted_mse"), "data.feature_dtype": ("float32", "float16")}
    for path, allowed in choices.items():
        section, field = path.split(".")
        value = c[section][field]
        if value not in allowed:
            raise ValueError(f"config {path} = {value!r}: expected one of {allowed}")
    if not isinstance(c.optim.accumulate_steps, int) or c.optim.accumulate_steps < 1:
        raise ValueError(f"config optim.accumulate_steps = {c.optim.accumulate_steps!r}: expected an integer >= 1")
    if not isinstance(c.train.epochs, int) or c.train.epochs < 1:
        raise ValueError(f"config train.epochs = {c.train.epochs!r}: expected an integer >= 1")
    if not isinstance(c.train.max_steps, int) or c.train.max_steps < 0:
        raise ValueError(f"config train.max_steps = {c.train.max_steps!r}: expected an integer >= 0 (0 = epochs x steps per epoch)")
    if not c.data.store:
        raise ValueError("config data.store: a FeatureStore directory is required (--config.data.store=PATH)")
