"""The FLOP count behind the logged MFU agrees with what XLA counts in the compiled train step."""

import jax
import numpy as np
import optax

from nforge_jax.model import EncoderConfig
from nforge_jax.model.sharding import batch_sharding, make_mesh, tree_shardings
from nforge_jax.train.metrics import mfu, train_flops_per_window
from nforge_jax.train.step import init_state, make_train_step


def test_train_flops_match_the_compiled_steps_cost_analysis():
    config = EncoderConfig(feature_dims=(("text", 2, 32), ("audio", 1, 16)), n_outputs=200, n_output_timesteps=10,
                           hidden=128, depth=2, heads=4, low_rank_head=16, n_subjects=2, subject_dropout=None)
    mesh = make_mesh(data=1, model=1, devices=jax.devices()[:1])
    tx = optax.adam(1e-3)
    graphdef, state, buffers, shardings = init_state(config, tx, mesh, seed=0)
    b, t = 2, config.window_steps
    batch = {"text": np.zeros((b, t, 2, 32), np.float32), "audio": np.zeros((b, t, 1, 16), np.float32),
             "fmri": np.zeros((b, 10, 200), np.float32), "mask": np.ones((b, 10), bool),
             "subject_id": np.zeros(b, np.int32)}
    batch_sh = {k: batch_sharding(mesh, v.ndim) for k, v in batch.items()}
    step = make_train_step(graphdef, config, tx, "mse", shardings, tree_shardings(buffers, mesh), batch_sh, mesh)
    cost = step.lower(state, buffers, batch, jax.random.key(0)).compile().cost_analysis()
    xla_flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
    ours = train_flops_per_window(config) * b
    # Ours counts the matmuls (3 x forward); XLA also counts element-wise work and the Adam update.
    assert 1.0 <= xla_flops / ours < 1.3, (xla_flops, ours)


def test_mfu_is_none_without_a_known_peak_and_a_ratio_with_one(monkeypatch):
    monkeypatch.delenv("NFORGE_PEAK_FLOPS", raising=False)
    if jax.devices()[0].device_kind.startswith("cpu"):
        assert mfu(1e9, 1.0) is None
    monkeypatch.setenv("NFORGE_PEAK_FLOPS", "4e9")
    assert mfu(1e9, 0.5, n_devices=2) == 0.25
