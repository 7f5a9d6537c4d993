"""The on-disk format of a trained encoder: `config.json` + Orbax `params/` (+ optional extra files).

This is the one place that defines it: conversion, training exports and `NForgeModel.from_pretrained` all
read and write through `save_encoder` / `load_encoder`. Writes go to a temporary sibling directory that is
renamed into place, so a failed or killed write never leaves a half checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from nforge_jax.model.config import ConfigError, EncoderConfig
from nforge_jax.model.encoder import FmriEncoder

FORMAT = "nforge_jax.encoder/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and what is wrong."""


def is_encoder_checkpoint(path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and (path / "params").is_dir()


def encoder_arrays(model: FmriEncoder) -> dict[str, np.ndarray]:
    """{"encoder/sublayers/0/block/to_q/kernel": array, ...} for every parameter and buffer."""
    return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))}


def abstract_encoder(config: EncoderConfig) -> FmriEncoder:
    return nnx.eval_shape(lambda: FmriEncoder(config, rngs=nnx.Rngs(0)))


def encoder_from_arrays(config: EncoderConfig, arrays: dict[str, Any], source: str = "arrays") -> FmriEncoder:
    """Builds an encoder holding exactly `arrays` (keys as in `encoder_arrays`); checks names and shapes."""
    graphdef, state = nnx.split(abstract_encoder(config))
    flat = nnx.to_flat_state(state)
    expected = {"/".join(map(str, p)): v for p, v in flat}
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: parameters do not match the config: missing {missing[:8]}"
                              f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}")
    for key, var in expected.items():
        shape, want = tuple(arrays[key].shape), tuple(var.get_raw_value().shape)
        if shape != want:
            raise CheckpointError(f"{source}: parameter {key!r} has shape {shape}, the config needs {want}")
    new_flat = [(p, v.replace(jax.numpy.asarray(arrays["/".join(map(str, p))], dtype=v.get_raw_value().dtype)))
                for p, v in flat]
    return nnx.merge(graphdef, nnx.from_flat_state(new_flat))


def _nest(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _flatten(tree, prefix="") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _local_checkpointer():
    """An Orbax checkpointer that involves only this process (a model file is written by one process)."""
    import orbax.checkpoint as ocp

    me = jax.process_index()
    return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
        primary_host=me, active_processes={me}))


def save_encoder(model: FmriEncoder, path, *, metadata: dict | None = None,
                 extra_files: dict[str, bytes] | None = None, overwrite: bool = False) -> Path:
    """Writes the checkpoint directory atomically; returns its path."""
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        doc = {"format": FORMAT, "model": model.config.to_dict(), "metadata": metadata or {}}
        (tmp / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        with _local_checkpointer() as ckptr:
            ckptr.save(tmp / "params", _nest(encoder_arrays(model)))
            ckptr.wait_until_finished()
        _fsync_dir(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_encoder_config(path) -> tuple[EncoderConfig, dict]:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file}: missing; an nforge_jax checkpoint holds config.json and params/")
    try:
        doc = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_file}: field 'format' is {doc.get('format')!r}, expected {FORMAT!r}")
    try:
        return EncoderConfig.from_dict(doc["model"], source=f"{cfg_file} field 'model'"), doc.get("metadata", {})
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(str(e)) from None


def load_encoder(path) -> tuple[FmriEncoder, dict]:
    """Reads a checkpoint written by `save_encoder`; returns (model, metadata)."""
    path = Path(path).absolute()
    config, metadata = read_encoder_config(path)
    params = path / "params"
    if not params.is_dir():
        raise CheckpointError(f"{params}: missing parameter directory")
    try:
        with _local_checkpointer() as ckptr:
            tree = ckptr.restore(params)
    except Exception as e:  # orbax raises many types for a damaged directory
        raise CheckpointError(f"{params}: cannot be read ({type(e).__name__}: {e})") from None
    return encoder_from_arrays(config, _flatten(tree), source=str(params)), metadata


def _fsync_dir(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
