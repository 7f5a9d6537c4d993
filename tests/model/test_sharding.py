"""Sharded forward on 8 fake CPU devices (batch over `data`, vertices over `model`) equals one device."""

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec as P

from nforge_jax.model import EncoderConfig, FmriEncoder
from nforge_jax.model.sharding import batch_sharding, logical_to_spec, make_mesh, shard_state, state_shardings


def test_eight_fake_devices_are_present():
    assert jax.device_count() == 8


def test_rules_shard_only_batch_and_vertices():
    mesh = make_mesh(data=2, model=4)
    assert logical_to_spec(("subjects", "lowrank", "vertices"), (3, 16, 40), mesh) == P(None, None, "model")
    assert logical_to_spec(("embed", "heads"), (96, 96), mesh) == P(None, None)
    # 30 vertices do not split over 4 devices: replicated rather than an error.
    assert logical_to_spec(("subjects", "vertices"), (3, 30), mesh) == P(None, None)


def test_sharded_forward_equals_single_device():
    config = EncoderConfig(feature_dims=(("text", 2, 16), ("audio", 1, 8), ("video", 2, 12)), n_outputs=40,
                           n_output_timesteps=10, hidden=96, depth=2, heads=3, low_rank_head=16, n_subjects=3)
    model = FmriEncoder(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    feats = {m: rng.standard_normal((4, 20, n, d)).astype(np.float32) for m, n, d in config.feature_dims}
    ids = np.array([0, 1, 2, 3], np.int32)
    single = np.asarray(model(feats, ids))

    mesh = make_mesh(data=2, model=4)
    graphdef, state = nnx.split(model)
    sharded = shard_state(state, mesh)
    head = sharded["predictor"]["weights"]
    assert head.sharding.spec == P(None, None, "model")
    assert head.addressable_shards[0].data.shape == (4, 16, 10)  # 40 vertices / 4
    x = {m: jax.device_put(v, batch_sharding(mesh, v.ndim)) for m, v in feats.items()}

    @jax.jit
    def forward(state, x, ids):
        return nnx.merge(graphdef, state)(x, ids)

    with jax.set_mesh(mesh):
        out = forward(sharded, x, jax.device_put(ids, batch_sharding(mesh, 1)))
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out), single, rtol=1e-5, atol=1e-5)
    # Every parameter got a sharding from the table.
    shardings = state_shardings(state, mesh)
    assert len(jax.tree.leaves(shardings)) == len(jax.tree.leaves(state))
