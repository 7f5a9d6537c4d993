"""Resuming a run: damaged checkpoints, a workdir of another configuration, a missing best_model, epochs < 1."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nforge_jax.train.checkpoint import CHECKPOINT_DIR, DAMAGED_DIR
from nforge_jax.train.config import check_config
from nforge_jax.train.loop import BEST_MODEL, TrainError, train
from train_helpers import make_tiny_store, tiny_config

CONFIG = """
from train_helpers import tiny_config

def get_config(arg=None):
    return tiny_config({store!r}, epochs={epochs}, mesh_data=1, keep_checkpoints=3)
"""


def cli_train(tmp_path, epochs):
    """`nforge train` as a user runs it, on the tiny store."""
    config = tmp_path / "tiny.py"
    config.write_text(CONFIG.format(store=str(tmp_path / "store"), epochs=epochs))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), *sys.path]))
    return subprocess.run([sys.executable, "-m", "nforge_jax.cli", "train", "--config", str(config),
                           "--workdir", str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def largest_file(directory):
    return max((p for p in Path(directory).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_damaged_latest_checkpoints_resume_from_the_latest_intact_step(tmp_path):
    make_tiny_store(tmp_path / "store")
    cfg = tiny_config(tmp_path / "store", epochs=3, mesh_data=1, keep_checkpoints=3)
    train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    ckpts = tmp_path / "run" / CHECKPOINT_DIR
    assert sorted(int(p.name) for p in ckpts.iterdir()) == [4, 8, 12]
    largest_file(ckpts / "12" / "state").unlink()  # a lost file
    with open(largest_file(ckpts / "8" / "state"), "r+b") as f:  # a copy cut short
        f.truncate(1000)

    proc = cli_train(tmp_path, epochs=4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Event loop is closed" not in proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if "is damaged" in line]
    assert len(warnings) == 2, proc.stdout
    assert "checkpoint step 12 is damaged" in warnings[0] and "is missing" in warnings[0]
    assert "checkpoint step 8 is damaged" in warnings[1] and "1000 bytes" in warnings[1]
    assert "resumed from step 4" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "run" / DAMAGED_DIR).iterdir()) == ["12", "8"]
    assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())[-1] == 16


def test_every_checkpoint_damaged_is_refused(tmp_path):
    make_tiny_store(tmp_path / "store")
    cfg = tiny_config(tmp_path / "store", epochs=1, mesh_data=1)
    train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    largest_file(tmp_path / "run" / CHECKPOINT_DIR / "4").unlink()
    with pytest.raises(TrainError, match=r"every checkpoint is damaged \(step 4: .* is missing\); use a new --workdir"):
        train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)


def test_workdir_of_another_configuration_is_refused_before_any_restore(tmp_path):
    make_tiny_store(tmp_path / "store")
    cfg = tiny_config(tmp_path / "store", epochs=1, mesh_data=1)
    train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    wider = tiny_config(tmp_path / "store", epochs=1, mesh_data=1)
    wider.model.hidden = 128
    with pytest.raises(TrainError, match=r"this workdir holds a run with another configuration \(model hidden: "
                                         r"64 there, 128 here\): use a new --workdir"):
        train(wider, tmp_path / "run", progress=False, log=lambda *a: None)
    accumulate = tiny_config(tmp_path / "store", epochs=1, mesh_data=1)
    accumulate.optim.accumulate_steps = 2  # same model, another optimizer state
    with pytest.raises(TrainError, match=r"another configuration \(train state .* differs"):
        train(accumulate, tmp_path / "run", progress=False, log=lambda *a: None)

    # The run itself is untouched: a completed run started again re-exports a deleted best_model.
    shutil.rmtree(tmp_path / "run" / BEST_MODEL)
    summary = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert (tmp_path / "run" / BEST_MODEL / "config.json").is_file()
    assert summary["best_step"] == 4 and summary["steps"] == 4


def test_epochs_below_one_are_refused(tmp_path):
    cfg = tiny_config(tmp_path / "store", epochs=0)
    with pytest.raises(ValueError, match=r"config train.epochs = 0: expected an integer >= 1"):
        check_config(cfg)
