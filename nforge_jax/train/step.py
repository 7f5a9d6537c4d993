"""The optimizer, the sharded train state and the pure, jitted train / eval steps.

State is a plain dict {"params", "opt", "step"}; the model's graph definition and its non-trainable
buffers stay outside, so the jitted step is a pure function of (state, batch, key) with the state donated.
Randomness for step k is `fold_in(key, k)`, so a resumed run draws exactly what an uninterrupted run draws.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from nforge_jax.model.config import EncoderConfig
from nforge_jax.model.encoder import FmriEncoder
from nforge_jax.train import losses, metrics
from nforge_jax.model.sharding import tree_shardings


# A non-finite gradient never reaches the weights (the optimizer state is kept too); there is no limit on how
# many in a row are skipped: the count is reported, and a NaN batch must not be applied after N tries.
NEVER_APPLY_NON_FINITE = 2**31 - 1


def skip_non_finite(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    return optax.apply_if_finite(tx, max_consecutive_errors=NEVER_APPLY_NON_FINITE)


def make_optimizer(total_steps: int, *, lr=1e-4, pct_start=0.1, div_factor=25.0, final_div_factor=1e4,
                   weight_decay=0.0, cycle_momentum=True, b1_range=(0.85, 0.95), grad_clip=None, accumulate=1):
    """Adam with TRIBE v2's one-cycle schedule (cosine, 4e-6 -> 1e-4 -> 4e-10; beta1 cycled 0.95 -> 0.85 -> 0.95),
    skipping non-finite gradients.

    `total_steps` counts train-step calls; with `accumulate` = k > 1 the gradients of k consecutive calls are
    averaged and applied once (a k-times larger batch in the memory of one), and the schedule runs over the
    total_steps / k updates."""
    kwargs = dict(lr=lr, pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor,
                  weight_decay=weight_decay, cycle_momentum=cycle_momentum, b1_range=b1_range, grad_clip=grad_clip)
    if accumulate > 1:
        inner = one_cycle_adam(max(int(total_steps) // accumulate, 2), **kwargs)
        return skip_non_finite(optax.MultiSteps(inner, every_k_schedule=accumulate))
    return skip_non_finite(one_cycle_adam(total_steps, **kwargs))


def one_cycle_adam(total_steps: int, *, lr, pct_start, div_factor, final_div_factor, weight_decay, cycle_momentum,
                   b1_range, grad_clip):
    total_steps = max(int(total_steps), 2)
    lr_schedule = optax.cosine_onecycle_schedule(total_steps, lr, pct_start, div_factor, final_div_factor)
    if cycle_momentum:
        lo, hi = b1_range
        warm = max(int(pct_start * total_steps), 1)
        b1 = optax.join_schedules([optax.cosine_decay_schedule(hi, warm, alpha=lo / hi),
                                   optax.cosine_decay_schedule(lo, total_steps - warm, alpha=hi / lo)], [warm])
    else:
        b1 = b1_range[1]
    adam = optax.inject_hyperparams(optax.adamw if weight_decay else optax.adam)
    kwargs = dict(learning_rate=lr_schedule, b1=b1, b2=0.999, eps=1e-8)
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    tx = adam(**kwargs)
    if grad_clip:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip), tx)
    return tx


def hyperparam(opt_state, name: str):
    """The current value of an injected hyper-parameter (e.g. the learning rate); NaN if there is none."""
    is_array = lambda _, value: isinstance(value, jax.Array)  # noqa: E731 (not its schedule's state)
    return optax.tree_utils.tree_get(opt_state, name, jnp.nan, filtering=is_array)


def init_state(config: EncoderConfig, tx, mesh, seed: int):
    """Parameters and optimizer state born sharded on `mesh` (no full copy on one device first).

    Returns (graphdef, state, buffers, state_shardings)."""

    def create():
        model = FmriEncoder(config, rngs=nnx.Rngs(seed))
        graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
        return {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}, buffers

    abstract_state, abstract_buffers = jax.eval_shape(create)
    shardings = tree_shardings(abstract_state, mesh)
    buffer_shardings = tree_shardings(abstract_buffers, mesh)
    with jax.set_mesh(mesh):
        state, buffers = jax.jit(create, out_shardings=(shardings, buffer_shardings))()
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: FmriEncoder(config, rngs=nnx.Rngs(seed))))
    return graphdef, state, buffers, shardings


def model_features(batch, config: EncoderConfig):
    return {m: batch[m] for m in config.modalities if m in batch}


def make_train_step(graphdef, config: EncoderConfig, tx, loss_name: str, state_shardings, buffer_shardings,
                    batch_shardings, mesh) -> Callable:
    loss_fn_impl = losses.LOSSES[loss_name]

    def step_fn(state, buffers, batch, key):
        rng = jax.random.fold_in(key, state["step"])

        def loss_fn(params):
            model = nnx.merge(graphdef, params, buffers)
            pred = model(model_features(batch, config), batch["subject_id"], rng=rng)
            return loss_fn_impl(pred, batch["fmri"], batch["mask"], batch.get("vertex_weights"))

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        grad_norm = optax.tree.norm(grads)
        # A non-finite gradient is dropped by the optimizer (`skip_non_finite`); here it is only counted.
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, new_opt = tx.update(grads, state["opt"], state["params"])
        new_state = {"params": optax.apply_updates(state["params"], updates), "opt": new_opt,
                     "step": state["step"] + 1}
        return new_state, {"loss": loss, "grad_norm": grad_norm, "skipped": (~ok).astype(jnp.int32)}

    replicated = NamedSharding(mesh, P())
    return jax.jit(step_fn, in_shardings=(state_shardings, buffer_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def make_eval_step(graphdef, config: EncoderConfig, loss_name: str, state_shardings, buffer_shardings,
                   batch_shardings, stats_sharding, mesh) -> Callable:
    loss_fn_impl = losses.LOSSES[loss_name]

    def eval_fn(params, buffers, batch, stats):
        model = nnx.merge(graphdef, params, buffers)
        pred = model(model_features(batch, config), batch["subject_id"])
        loss = loss_fn_impl(pred, batch["fmri"], batch["mask"], batch.get("vertex_weights"))
        stats = metrics.update_pearson(stats, pred, batch["fmri"], batch["mask"], batch["subject_id"])
        return stats, {"loss": loss, "retrieval_top1": metrics.retrieval_top1(pred, batch["fmri"], batch["mask"]),
                       "n_rows": batch["mask"].sum()}

    replicated = NamedSharding(mesh, P())
    return jax.jit(eval_fn, in_shardings=(state_shardings["params"], buffer_shardings, batch_shardings,
                                          stats_sharding),
                   out_shardings=(stats_sharding, replicated), donate_argnums=(3,))


def global_batch(batch: dict, shardings: dict, mesh) -> dict:
    """Host-local numpy batch -> global jax arrays sharded over the mesh (works across processes)."""
    out = {}
    for key, sharding in shardings.items():
        value = np.asarray(batch[key])
        if jax.process_count() > 1:
            out[key] = jax.make_array_from_process_local_data(sharding, value)
        else:
            out[key] = jax.device_put(value, sharding)
    return out
