"""A checkpoint write that fails (full disk) gives one clear error and keeps what was saved before."""

import errno

import pytest

from nforge_jax.train.checkpoint import CheckpointWriteError, TrainCheckpoints
from nforge_jax.train.loop import train
from train_helpers import make_tiny_store, tiny_config


def test_full_disk_while_checkpointing_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    make_tiny_store(tmp_path / "store")
    cfg = tiny_config(tmp_path / "store", epochs=3, mesh_data=1)
    import orbax.checkpoint as ocp

    real_save = ocp.CheckpointManager.save
    calls = {"n": 0}

    def save_then_disk_full(self, step, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first epoch's checkpoint lands, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_then_disk_full)
    with pytest.raises(CheckpointWriteError, match="No space left on device") as err:
        train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert "earlier checkpoints are kept" in str(err.value)
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    kept = TrainCheckpoints(tmp_path / "run")
    first = kept.latest_step()
    assert first == 4  # epoch 1: 18 training windows // batch 4
    assert kept.manager.all_steps() == [first]
    kept.close()
    # Resuming after space is freed continues from the kept checkpoint and finishes.
    messages = []
    summary = train(cfg, tmp_path / "run", progress=False, log=messages.append)
    assert any(f"resumed from step {first}" in m for m in messages)
    assert summary["steps"] == 3 * first


def test_oserror_from_orbax_becomes_checkpoint_write_error(tmp_path, monkeypatch):
    ckpts = TrainCheckpoints(tmp_path)

    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpts.manager, "save", no_space)
    with pytest.raises(CheckpointWriteError, match=r"could not save step 7 .*No space left"):
        ckpts.save(7, {"x": 1}, None, {})
    ckpts.close()
