"""Training checkpoints: Orbax CheckpointManager holding the train state, the data iterator and metadata.

Orbax writes each step into a temporary directory and renames it when complete, so a job killed while
saving leaves the previous checkpoints intact; `latest_step` only ever sees finished ones. A full disk or
any other write failure is reported with the directory and keeps what was saved before.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

CHECKPOINT_DIR = "checkpoints"


class CheckpointWriteError(RuntimeError):
    """Saving failed; earlier checkpoints are untouched."""


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


class TrainCheckpoints:
    def __init__(self, workdir, *, keep: int = 2):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        # The data-iterator item is written by grain's synchronous handler as soon as the save starts; with
        # directories created in the background, a second process could write its iterator file before
        # process 0 had made the step directory (a crash seen only under load). Create them first.
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True,
                async_options=ocp.options.AsyncOptions(create_directories_asynchronously=False)))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter, meta: dict):
        import grain

        ocp = self._ocp
        try:
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data_iter=grain.checkpoint.CheckpointSave(data_iter),
                meta=ocp.args.JsonSave(meta)))
            self.manager.wait_until_finished()
        except OSError as e:
            raise CheckpointWriteError(f"{self.directory}: could not save step {step} ({e}); "
                                       f"earlier checkpoints are kept: {self.manager.all_steps()}") from e

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
        self.manager.close()


def disk_free_bytes(path) -> int:
    st = os.statvfs(Path(path).absolute() if Path(path).exists() else Path(path).absolute().parent)
    return st.f_bavail * st.f_frsize
