"""Training checkpoints: Orbax CheckpointManager holding the train state, the data iterator and metadata.

Orbax writes each step into a temporary directory and renames it when complete, so a job killed while
saving leaves the previous checkpoints intact; `latest_step` only ever sees finished ones. A full disk or
any other write failure is reported with the directory and keeps what was saved before.

Each finished step also gets a list of its files and their sizes (`FILE_LIST`). Opening a checkpoint
directory checks every step against its list before anything is restored: a step with a missing or
truncated file is moved to `checkpoints_damaged/` (with a warning) so that the run resumes from the latest
intact step. The run's metadata (model configuration, shapes of the train state) is read from its JSON
file before a restore, so a workdir holding another configuration is refused in one sentence.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import jax

CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "checkpoints_damaged"
FILE_LIST = "nforge_files.json"  # {relative path: size in bytes} of a finished step, written after it


class CheckpointDamagedError(RuntimeError):
    """No intact checkpoint is left to resume from."""


class CheckpointWriteError(RuntimeError):
    """Saving failed; earlier checkpoints are untouched."""


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def step_damage(step_dir: Path) -> str | None:
    """Why the finished step in `step_dir` cannot be restored, or None. A step without a file list (killed
    between orbax's commit and the list, or written by an older version) is trusted as orbax left it."""
    listing = step_dir / FILE_LIST
    if not listing.exists():
        return None
    try:
        files = json.loads(listing.read_text())
    except (OSError, ValueError) as e:
        return f"its file list {listing.name} is unreadable ({e})"
    for rel, size in files.items():
        path = step_dir / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != size:
            return f"{rel} has {path.stat().st_size} bytes, {size} were written"
    return None


def _step_dirs(directory: Path) -> dict[int, Path]:
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()}


class TrainCheckpoints:
    def __init__(self, workdir, *, keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        self._pending = None  # the step whose save is still being written
        self.damaged = self._set_aside_damaged()  # [(step, why, where it went)], before orbax lists the steps
        # The data-iterator item is written by grain's synchronous handler as soon as the save starts; with
        # directories created in the background, a second process could write its iterator file before
        # process 0 had made the step directory (a crash seen only under load). Create them first.
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True,
                async_options=ocp.options.AsyncOptions(create_directories_asynchronously=False)))

    def _set_aside_damaged(self) -> list[tuple[int, str, Path]]:
        """Moves damaged steps newer than the latest intact one out of the way (process 0; the others wait)."""
        steps = _step_dirs(self.directory)
        damaged = []
        for step in sorted(steps, reverse=True):
            why = step_damage(steps[step])
            if why is None:
                break
            damaged.append((step, why))
        else:
            if damaged:
                listed = "; ".join(f"step {s}: {why}" for s, why in damaged)
                raise CheckpointDamagedError(
                    f"{self.directory}: every checkpoint is damaged ({listed}); use a new --workdir, or delete "
                    f"{self.directory} to start this run over")
        moved = []
        for step, why in damaged:
            target = self.directory.parent / DAMAGED_DIR / str(step)
            n = 1
            while target.exists():
                target, n = self.directory.parent / DAMAGED_DIR / f"{step}.{n}", n + 1
            if jax.process_index() == 0:
                target.parent.mkdir(exist_ok=True)
                os.replace(steps[step], target)
            moved.append((step, why, target))
        if damaged and jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("nforge damaged checkpoints set aside")
        return moved

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def saved_meta(self, step: int) -> dict:
        """The metadata saved with `step`, read as plain JSON (no restore, nothing else loaded)."""
        path = self.directory / str(step) / "meta" / "metadata"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointDamagedError(f"{path}: cannot read the checkpoint's metadata ({e})") from None

    def _write_file_list(self, step: int):
        step_dir = self.directory / str(step)
        files = {str(p.relative_to(step_dir)): p.stat().st_size for p in sorted(step_dir.rglob("*"))
                 if p.is_file() and p.name != FILE_LIST}
        tmp = step_dir / f".{FILE_LIST}.tmp"
        tmp.write_text(json.dumps(files, indent=0) + "\n")
        os.replace(tmp, step_dir / FILE_LIST)

    def save(self, step: int, state, data_iter, meta: dict):
        """Starts saving `step` and returns once the arrays are copied off the devices: Orbax writes them while
        the next steps train. The previous save is finished (and its file list written) first."""
        import grain

        ocp = self._ocp
        self.wait()
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iter=grain.checkpoint.CheckpointSave(data_iter),
                # a copy: the loop goes on updating `meta` while this save is written
                meta=ocp.args.JsonSave(copy.deepcopy(meta))))
        except OSError as e:
            raise self._write_error(step, e) from e
        self._pending = step

    def wait(self):
        """Waits for the save in flight, if any, and lists its files (what marks the step intact)."""
        step, self._pending = self._pending, None
        if step is None:
            return
        try:
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                self._write_file_list(step)
        except OSError as e:
            raise self._write_error(step, e) from e

    def _write_error(self, step: int, e: OSError) -> CheckpointWriteError:
        return CheckpointWriteError(f"{self.directory}: could not save step {step} ({e}); "
                                    f"earlier checkpoints are kept: {self.manager.all_steps()}")

    def restore(self, step: int, state_like, data_iter):
        """Restores into arrays shaped and sharded like `state_like`, and moves `data_iter` to the saved position."""
        import grain

        ocp = self._ocp
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_abstract(state_like)),
            data_iter=grain.checkpoint.CheckpointRestore(data_iter),
            meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def close(self):
        try:
            self.wait()
        finally:
            self.manager.close()


def disk_free_bytes(path) -> int:
    st = os.statvfs(Path(path).absolute() if Path(path).exists() else Path(path).absolute().parent)
    return st.f_bavail * st.f_frsize
