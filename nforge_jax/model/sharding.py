"""The device mesh and the one table that maps logical parameter/activation axes to mesh axes.

Every parameter of the encoder carries `logical_axes` metadata (see `layers.py`, which names the axes). The
subject head (subjects x low-rank x vertices, ~1.1 B parameters with 26 subjects) is the big tensor: its
vertex axis is sharded over `model`; the batch is sharded over `data`; everything else is replicated.
Training and inference both place arrays with these functions.

Why not `nnx.get_named_sharding`: it reads the `out_sharding` metadata, and a Variable carrying that is
sharded eagerly when built (flax 0.12 raises outside a mesh context, so every model built for CPU inference
or a test would need one), and it cannot leave a mesh axis that does not divide a dimension replicated. The
rules are written as flax's (logical name, mesh axis) pairs, so `nnx.logical_axis_rules(LOGICAL_AXIS_RULES)`
accepts the same table.
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

# (logical axis name, mesh axis name); names absent here are replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str], ...] = (
    ("batch", "data"),
    ("vertices", "model"),
)
MESH_AXES = ("data", "model")


def make_mesh(data: int | None = None, model: int = 1, devices=None) -> jax.sharding.Mesh:
    """A (data, model) mesh over `devices` (default: all); `data` defaults to n_devices // model.

    Auto axes: the step's shardings are given to `jax.jit`, and host code may index sharded arrays."""
    devices = list(jax.devices() if devices is None else devices)
    if data is None:
        data = len(devices) // model
    if data * model != len(devices):
        raise ValueError(f"mesh data={data} x model={model} needs {data * model} devices, {len(devices)} available")
    return jax.make_mesh((data, model), MESH_AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def logical_to_spec(logical_axes, shape, mesh) -> P:
    """PartitionSpec for an array; a mesh axis that does not divide its dimension is left replicated."""
    rules = dict(LOGICAL_AXIS_RULES)
    spec = []
    for name, dim in zip(logical_axes or (), shape):
        axis = rules.get(name) if name else None
        if axis is not None and (axis not in mesh.shape or dim % mesh.shape[axis]):
            axis = None
        spec.append(axis)
    return P(*spec)


def tree_shardings(tree, mesh):
    """NamedShardings for a pytree: Variables by their logical axes, plain arrays replicated."""

    def one(x):
        if isinstance(x, nnx.Variable):
            value = x.get_raw_value()
            return NamedSharding(mesh, logical_to_spec(x.get_metadata().get("logical_axes"), value.shape, mesh))
        return NamedSharding(mesh, P())

    return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def state_shardings(state: nnx.State, mesh) -> nnx.State:
    """A State of NamedShardings matching `state` (leaves: Variables with `logical_axes` metadata)."""
    return tree_shardings(state, mesh)


def shard_state(state: nnx.State, mesh) -> nnx.State:
    """Places every variable of `state` on the mesh as the rules say."""
    return jax.device_put(state, state_shardings(state, mesh))


def batch_sharding(mesh, ndim: int) -> NamedSharding:
    """Leading (batch) axis over `data`, the rest replicated."""
    return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))
