"""The on-disk format of a trained encoder: `config.json` + Orbax `params/` (+ optional extra files).

This is the one place that defines it: conversion, training exports and `NForgeModel.from_pretrained` all
read and write through `save_encoder` / `load_encoder`. Writes go to a temporary sibling directory that is
renamed into place, so a failed or killed write never leaves a half checkpoint under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx, traverse_util

from nforge_jax.fsio import fsync_dir
from nforge_jax.model.config import ConfigError, EncoderConfig
from nforge_jax.model.encoder import FmriEncoder

FORMAT = "nforge_jax.encoder/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and what is wrong."""


class CheckpointWriteFailed(CheckpointError):
    """Writing a checkpoint failed (disk full, no permission); nothing was left at the destination."""


# Hidden siblings a writer works in: .NAME.tmp-HOST-PID-TOKEN (and .NAME.old-HOST-PID-TOKEN while replacing).
_STALE_AFTER_S = 24 * 3600.0


def _host() -> str:
    return (socket.gethostname().split(".")[0] or "host").replace("-", "_")


def make_sibling_dir(path: Path, kind: str = "tmp") -> Path:
    """A new hidden directory next to ``path`` for writing it atomically. Made with os.mkdir, so it follows the
    umask (tempfile.mkdtemp makes 0700 directories, which then become private final directories: unreadable
    for the rest of a group sharing a cluster folder). Its name records host and pid for
    ``remove_stale_siblings``."""
    while True:
        tmp = path.with_name(f".{path.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_siblings(path: Path) -> list[Path]:
    """Removes the hidden work directories of writers of ``path`` that were killed: those of this host whose
    process is gone, and any older than a day (another host's, or an older naming). Returns what was removed."""
    removed = []
    for kind in ("tmp", "old"):
        for p in path.parent.glob(f".{path.name}.{kind}-*"):
            parts = p.name[len(f".{path.name}.{kind}-"):].split("-")
            try:
                age = time.time() - p.lstat().st_mtime
            except FileNotFoundError:
                continue
            mine = len(parts) == 3 and parts[0] == _host() and parts[1].isdigit()
            if (mine and not _pid_alive(int(parts[1]))) or age > _STALE_AFTER_S:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _is_disk_full(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if "No space left on device" in text or "os_error_code='28'" in text or "Disk quota exceeded" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs every failure of its writer threads with a traceback (dozens of lines per thread) before
    re-raising it; the caller reports the failure in one line instead."""
    logger = logging.getLogger("absl")
    drop = logging.Filter("nothing")  # matches no record name: rejects every record
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def write_failed(dest: Path, exc: BaseException, what: str = "checkpoint") -> CheckpointWriteFailed:
    """A one-line error for a failed write of ``dest``."""
    if _is_disk_full(exc):
        try:
            free = f"; {shutil.disk_usage(dest.parent).free / 2**20:.1f} MiB free there"
        except OSError:
            free = ""
        if isinstance(exc, OSError) and exc.strerror and "needed" in exc.strerror:
            free = f"; {exc.strerror} there"
        return CheckpointWriteFailed(f"{dest}: no space left on device (ENOSPC) while writing the {what}{free}; "
                                     "nothing was written. Free some space or choose another destination")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
    return CheckpointWriteFailed(f"{dest}: cannot write the {what} ({reason}); nothing was written")


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
        values = np.asarray(arrays[key])
        if np.issubdtype(values.dtype, np.inexact) and not np.isfinite(values).all():
            bad = values.reshape(-1)[np.flatnonzero(~np.isfinite(values.reshape(-1)))[0]]
            raise CheckpointError(f"{source}: parameter {key!r} holds {bad} ({int((~np.isfinite(values)).sum())} "
                                  f"of {values.size} values are not finite); expected finite weights")
    new_flat = [(p, v.replace(jax.numpy.asarray(arrays["/".join(map(str, p))], dtype=v.get_raw_value().dtype)))
                for p, v in flat]
    return nnx.merge(graphdef, nnx.from_flat_state(new_flat))


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
    arrays = encoder_arrays(model)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(path)
        need = sum(a.nbytes for a in arrays.values()) + sum(len(d) for d in (extra_files or {}).values())
        free = shutil.disk_usage(path.parent).free
        if free < need:
            raise OSError(errno.ENOSPC, f"{need / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free")
        tmp = make_sibling_dir(path)
        doc = {"format": FORMAT, "model": model.config.to_dict(), "metadata": metadata or {}}
        (tmp / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        with _quiet_orbax(), _local_checkpointer() as ckptr:
            ckptr.save(tmp / "params", traverse_util.unflatten_dict(arrays, sep="/"))
            ckptr.wait_until_finished()
        fsync_dir(tmp)
        if path.exists():
            old = make_sibling_dir(path, "old")
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except Exception as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, ValueError)) and not isinstance(e, (FileExistsError, CheckpointError)):
            raise write_failed(path, e) from None
        raise
    except BaseException:
        if tmp is not None:
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
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_file}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CheckpointError(f"{cfg_file}: holds a {type(doc).__name__}, expected a JSON object with 'format', "
                              "'model' and 'metadata'")
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_file}: field 'format' is {doc.get('format')!r}, expected {FORMAT!r}")
    for field, kind in (("model", dict), ("metadata", dict)):
        if not isinstance(doc.get(field, {}), kind):
            raise CheckpointError(f"{cfg_file}: field {field!r} is a {type(doc[field]).__name__}, expected an object")
    if "model" not in doc:
        raise CheckpointError(f"{cfg_file}: field 'model' missing, expected the model configuration")
    try:
        return EncoderConfig.from_dict(doc["model"], source=f"{cfg_file} field 'model'"), doc.get("metadata", {})
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    except (KeyError, TypeError, ValueError) as e:  # e.g. an unknown key inside 'projector'
        raise CheckpointError(f"{cfg_file} field 'model': {type(e).__name__}: {e}") from None


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
    return encoder_from_arrays(config, traverse_util.flatten_dict(tree, sep="/"), source=str(params)), metadata


