"""The training loop end to end on a tiny learnable store: learning, export, NaN policy, sharding, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nforge_jax import NForgeModel
from nforge_jax.model.checkpoint import encoder_arrays, load_encoder
from nforge_jax.train.loop import TrainError, train
from train_helpers import make_tiny_store, tiny_config

HERE = Path(__file__).parent


def arrays_of(path):
    return encoder_arrays(load_encoder(path)[0])


def test_learns_exports_and_reloads(tmp_path):
    make_tiny_store(tmp_path / "store")
    cfg = tiny_config(tmp_path / "store", epochs=8, mesh_data=1)
    summary = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    history = summary["history"]
    assert history[-1]["val_pearson"] > 0.3 > history[0]["val_pearson"] - 0.5  # learned the planted map
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert summary["steps"] == summary["epochs"] * (3 * 2 * 3 // 4)  # 3 train stimuli x 2 subjects x 3 windows
    written = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert written["best_val_pearson"] == pytest.approx(summary["best_val_pearson"])
    assert any((tmp_path / "run" / "tb").iterdir())
    model = NForgeModel.from_pretrained(tmp_path / "run" / "best_model")
    preds = model.predict_features({"text": np.zeros((40, 1, 8), np.float32)}, subject=1)
    assert preds.shape == (20, 48) and np.isfinite(preds).all()


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nan_batches(tmp_path, policy):
    make_tiny_store(tmp_path / "store", nan_in=(0, 0))
    cfg = tiny_config(tmp_path / "store", epochs=2, nan_policy=policy, mesh_data=1)
    if policy == "stop":
        with pytest.raises(TrainError, match="non-finite values in batch\\['fmri'\\]"):
            train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
        return
    messages = []
    summary = train(cfg, tmp_path / "run", progress=False, log=messages.append)
    assert summary["skipped_batches"] >= 1
    assert any("skipping batch" in m for m in messages)
    assert all(np.isfinite(v).all() for v in arrays_of(tmp_path / "run" / "final_model").values())


def test_sharded_training_matches_one_device(tmp_path):
    make_tiny_store(tmp_path / "store")
    one = train(tiny_config(tmp_path / "store", epochs=1, mesh_data=1, mesh_model=1), tmp_path / "one",
                progress=False, log=lambda *a: None)
    sharded = train(tiny_config(tmp_path / "store", epochs=1, mesh_data=2, mesh_model=4), tmp_path / "sharded",
                    progress=False, log=lambda *a: None)
    head = load_encoder(tmp_path / "sharded" / "final_model")[0].predictor.weights[...]
    assert head.shape == (3, 8, 48)
    a, b = arrays_of(tmp_path / "one" / "final_model"), arrays_of(tmp_path / "sharded" / "final_model")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=2e-3, atol=2e-4, err_msg=key)
    assert one["history"][-1]["val_pearson"] == pytest.approx(sharded["history"][-1]["val_pearson"], abs=1e-3)


RUNNER = """
import sys
sys.path.insert(0, {here!r})
from train_helpers import tiny_config
from nforge_jax.train.loop import train
cfg = tiny_config({store!r}, epochs=6, checkpoint_every_steps=1, keep_checkpoints=3, mesh_data=1)
train(cfg, {workdir!r}, progress=False)
"""


def _run(store, workdir):
    code = RUNNER.format(here=str(HERE), store=str(store), workdir=str(workdir))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    make_tiny_store(tmp_path / "store")
    # The uninterrupted run and the one to kill go side by side: separate processes and workdirs, same result.
    straight = _run(tmp_path / "store", tmp_path / "straight")
    victim = _run(tmp_path / "store", tmp_path / "killed")
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline:  # kill once a few steps are saved, mid-run
        steps = [int(p.name) for p in ckpt_dir.glob("*") if p.name.isdigit()] if ckpt_dir.exists() else []
        if steps and max(steps) >= 5:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "final_model").exists()

    resumed = _run(tmp_path / "store", tmp_path / "killed")
    out, _ = straight.communicate(timeout=600)
    assert straight.returncode == 0, out.decode()[-3000:]
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out.decode()[-3000:]
    assert b"resumed from step" in out
    a, b = arrays_of(tmp_path / "straight" / "final_model"), arrays_of(tmp_path / "killed" / "final_model")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_gradient_accumulation_applies_the_mean_gradient_every_k_steps():
    import jax
    import optax
    from flax import nnx

    from nforge_jax.model import EncoderConfig
    from nforge_jax.train.losses import mse
    from nforge_jax.model.sharding import batch_sharding, make_mesh
    from nforge_jax.train.step import init_state, make_optimizer, make_train_step, tree_shardings

    config = EncoderConfig(feature_dims=(("text", 1, 8),), n_outputs=12, n_output_timesteps=5, hidden=64, depth=1,
                           heads=2, low_rank_head=4, n_subjects=2, subject_dropout=None)
    mesh = make_mesh(data=1, model=1, devices=jax.devices()[:1])
    tx = make_optimizer(8, lr=1e-2, accumulate=2)
    graphdef, state, buffers, shardings = init_state(config, tx, mesh, seed=3)
    init = jax.tree.map(np.asarray, state["params"])
    rng = np.random.default_rng(0)
    batches = [{"text": rng.standard_normal((2, 10, 1, 8)).astype(np.float32),
                "fmri": rng.standard_normal((2, 5, 12)).astype(np.float32), "mask": np.ones((2, 5), bool),
                "subject_id": np.array([0, 1], np.int32)} for _ in range(2)]
    bsh = {k: batch_sharding(mesh, v.ndim) for k, v in batches[0].items()}
    step = make_train_step(graphdef, config, tx, "mse", shardings, tree_shardings(buffers, mesh), bsh, mesh)
    state, _ = step(state, buffers, batches[0], jax.random.key(0))
    after_one = jax.tree.map(np.asarray, state["params"])
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(init), jax.tree.leaves(after_one)))
    state, _ = step(state, buffers, batches[1], jax.random.key(0))
    after_two = jax.tree.map(np.asarray, state["params"])

    # Independently: one plain update with the mean of the two batches' gradients.
    def loss(params, b):
        model = nnx.merge(graphdef, params, buffers)
        return mse(model({"text": b["text"]}, b["subject_id"]), b["fmri"], b["mask"])

    plain = make_optimizer(4, lr=1e-2)  # the inner schedule: 8 calls / 2

    @jax.jit  # one compilation instead of hundreds of eagerly run operations
    def expected_update(params):
        grads = [jax.grad(loss)(params, b) for b in batches]
        mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
        updates, _ = plain.update(mean, plain.init(params), params)
        return optax.apply_updates(params, updates)

    expected = expected_update(jax.tree.map(jax.numpy.asarray, init))
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(after_two)):
        np.testing.assert_allclose(np.asarray(x), y, rtol=1e-4, atol=1e-4)  # a full step is ~1e-2
