"""The device mesh and the one table that maps logical parameter/activation axes to mesh axes.

Every parameter of the encoder carries `logical_axes` metadata (see `model/layers.py`). The subject head
(subjects x low-rank x vertices, ~1.1 B parameters with 26 subjects) is the big tensor: its vertex axis is
sharded over `model`; the batch is sharded over `data`; everything else is replicated.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

# logical axis name -> mesh axis name (absent names are replicated).
LOGICAL_AXIS_RULES: dict[str, str] = {
    "batch": "data",
    "vertices": "model",
}


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> jax.sharding.Mesh:
    """A (data, model) mesh over `devices` (default: all); `data` defaults to n_devices // model."""
    devices = list(jax.devices() if devices is None else devices)
    if data is None:
        data = len(devices) // model
    if data * model != len(devices):
        raise ValueError(f"mesh data={data} x model={model} needs {data * model} devices, {len(devices)} available")
    grid = np.asarray(devices).reshape(data, model)
    return jax.sharding.Mesh(grid, ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def logical_to_spec(logical_axes, shape, mesh) -> P:
    """PartitionSpec for an array; a mesh axis that does not divide its dimension is left replicated."""
    spec = []
    for name, dim in zip(logical_axes or (), shape):
        axis = LOGICAL_AXIS_RULES.get(name) if name else None
        if axis is not None and (axis not in mesh.shape or dim % mesh.shape[axis]):
            axis = None
        spec.append(axis)
    return P(*spec)


def state_shardings(state: nnx.State, mesh) -> nnx.State:
    """A State of NamedShardings matching `state` (leaves: Variables with `logical_axes` metadata)."""

    def one(var):
        value = var.get_raw_value()
        axes = var.get_metadata().get("logical_axes")
        return NamedSharding(mesh, logical_to_spec(axes, value.shape, mesh))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_state(state: nnx.State, mesh) -> nnx.State:
    """Places every variable of `state` on the mesh as the rules say."""
    shardings = state_shardings(state, mesh)
    return jax.device_put(state, shardings)


def batch_sharding(mesh, ndim: int) -> NamedSharding:
    """Leading (batch) axis over `data`, the rest replicated."""
    return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))
